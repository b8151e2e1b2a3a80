"""The LlamaBoard journey, by clicking alone, in a real Chromium against the real ``launcher ui``.

A tiny Qwen2-VL saved as a Hugging Face folder is typed into the model field; a data folder the test makes
(its own dataset_info.json, a sharegpt train.json with a system prompt and an image per row, an eval file) is
typed into the folder field and its datasets picked; learning rate, gradient accumulation, compute type, save
interval, LoRA+ ratio 16, LoRA targets all and an output name are set in their fields (the free overrides box
stays empty); preview, start; while it runs the plot's own points hold at least 5 training losses; evaluate
(the ROUGE table); chat with a picture and a system prompt, then the base; export HF and GGUF; reload: the form
and the run are as they were. The form's arguments are saved to a YAML file that ``launcher train --args-file``
runs (its dry run resolves the config the UI submitted) and loaded back after a change. A half-made run is
removed from the Runs tab. Then the journey's views again in Chinese on the same run (every tab's name, labels,
states, counts, axes, a preview, a prediction and a chat turn in Chinese), and Compare with three runs (six
labelled lines).

One test: the session's server and browser, one tiny run. Screenshots of each view go to docs/ui/ with
LAUNCHER_UI_SCREENSHOTS=1.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.ui.conftest import REPO_ROOT, SHOTS, screenshot
from tests.ui.test_browser import choose, expect, fill, open_tab, textbox

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
STEPS = 8
RUN_S = 600
"""A tiny VL LoRA run of 12 steps, its final eval and save, on a shared 2-core machine."""
SYSTEM = "You describe pictures in one short sentence."


def make_data(folder: Path) -> Path:
    """A LLaMA-Factory data folder: sharegpt rows with a system prompt and one image each, and an eval file."""
    from tests.vl.helpers import write_images

    folder.mkdir(parents=True, exist_ok=True)
    names = write_images(folder, [(56, 56), (84, 56), (56, 84), (70, 70)])

    def rows(n, offset):
        return [{"system": SYSTEM,
                 "messages": [{"role": "user", "content": f"<image>What colour is picture {i}?"},
                              {"role": "assistant", "content": f"Picture {i} is mostly colour {i % 4}."}],
                 "images": [names[(i + offset) % len(names)]]} for i in range(n)]

    (folder / "train.json").write_text(json.dumps(rows(16, 0)))
    (folder / "eval.json").write_text(json.dumps(rows(4, 1)))
    columns = {"messages": "messages", "images": "images", "system": "system"}
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    (folder / "dataset_info.json").write_text(json.dumps({
        "mine": {"file_name": "train.json", "formatting": "sharegpt", "columns": columns, "tags": tags},
        "mine_eval": {"file_name": "eval.json", "formatting": "sharegpt", "columns": columns, "tags": tags}}))
    return folder


def type_value(page, elem_id: str, value: str) -> None:
    """Type into a dropdown that takes any value (model path, data folder) and leave it."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    box.press("Enter")
    page.locator("body").click(position={"x": 5, "y": 5})


def pick_many(page, elem_id: str, values: list) -> None:
    for value in values:
        page.locator(f"#{elem_id} input").click()
        page.locator(f"#{elem_id} [role=option][aria-label='{value}']").click()
    page.locator("body").click(position={"x": 5, "y": 5})


def shot(page, name: str) -> None:
    """A screenshot of the whole page at its own height: a full-page capture that resizes the window makes the
    charts redraw, and it would catch them blank."""
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(height, 1000), 2400)})
    page.wait_for_timeout(1500)
    screenshot(page, name)
    page.set_viewport_size({"width": 1400, "height": 1000})
    if os.environ.get("LAUNCHER_UI_SCREENSHOTS") == "1":  # the README's copy: 256 colours are plenty for a UI
        from PIL import Image

        path = SHOTS / f"{name}.png"
        Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)


def train_points(page, elem: str = "loss-plot") -> int:
    """Training-loss points the plot draws (its SVG point marks, each labelled with its series)."""
    return page.locator(f"#{elem} path[aria-roledescription='point'][aria-label*='series: train']").count()


def test_journey_by_clicking(ui_server, browser, tmp_path_factory):
    from tests.vl.helpers import save_tiny_vl_folder

    url, root = ui_server
    model = save_tiny_vl_folder(tmp_path_factory.mktemp("journey") / "tiny-qwen2-vl")
    data = make_data(root / "journey-data")  # under the output root: a folder this UI may open
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#group-method")

    # ---- compose by clicking: model, data folder and its datasets, the method's fields
    choose(page, "group-method", "lora")
    expect()(page.locator("#field-method-lora-plus_lr_ratio")).to_be_visible()
    type_value(page, "field-model-name_or_path", str(model))
    type_value(page, "field-data-dataset_dir", str(data))
    pick_many(page, "field-data-datasets", ["mine"])
    pick_many(page, "field-data-eval_datasets", ["mine_eval"])
    fill(page, "field-method-lr", "0.0001")
    fill(page, "field-train-max_steps", str(STEPS))
    fill(page, "field-train-micro_batch_size", "1")
    fill(page, "field-train-grad_accum", "2")
    choose(page, "field-model-dtype", "bfloat16")
    fill(page, "field-train-log_every", "1")
    fill(page, "field-train-save_every", "4")
    fill(page, "field-method-lora-plus_lr_ratio", "16")
    fill(page, "field-method-lora-target_modules", "all")
    fill(page, "run-name", "journey")
    assert textbox(page, "overrides").input_value() == ""

    page.locator("#data-preview-btn").click()
    expect()(page.locator("#data-stats")).to_contain_text("sample(s) shown", timeout=120_000)
    expect()(page.locator("#data-images img").first).to_be_visible()

    page.locator("#preview-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("^ok: preflight passed"), timeout=120_000)
    command = textbox(page, "command").input_value()
    for part in ("model=hf", "data=custom", "method=lora", f"model.name_or_path={model}", "train.grad_accum=2",
                 "model.dtype=bfloat16", "train.save_every=4", "method.lora.plus_lr_ratio=16.0", "'data.datasets=[mine]'",
                 "--name journey"):
        assert part in command, (part, command)
    expect()(page.locator("#precision-note")).to_contain_text("float32 weights and compute")  # a CPU: as the dry run says
    shot(page, "compose")

    # ---- saved arguments: the form to a YAML file (its default place: the run name's); the CLI runs it
    page.locator("#args-save-btn").click()
    saved_args = root / "saved-args" / "journey.yaml"
    expect()(textbox(page, "args-result")).to_have_value(f"saved: {saved_args} (launcher train --args-file {saved_args})")
    expect()(textbox(page, "args-path")).to_have_value(str(saved_args))
    cli_dry_run = subprocess.Popen([sys.executable, "-m", "launcher", "train", "--args-file", str(saved_args), "--dry-run"],
                                   cwd=str(REPO_ROOT), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    started = time.perf_counter()
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("started locally"), timeout=120_000)
    run_dir = next(root.glob("journey/*/*/config.yaml")).parent
    rel = str(run_dir.relative_to(root))

    # ---- watch: the live plot draws training points while the run goes on
    open_tab(page, "Runs")
    page.locator("#run-select input").click()
    page.locator(f"#run-select [role=option][aria-label='{rel}']").click()
    first_point_s = None
    deadline = time.time() + RUN_S
    seen_while_running = 0
    while time.time() < deadline:
        points = train_points(page)
        phase = page.locator("#run-progress-bar").get_attribute("data-phase") if page.locator(
            "#run-progress-bar").count() else ""
        if points and first_point_s is None:
            first_point_s = time.perf_counter() - started
        if phase != "finished":
            seen_while_running = max(seen_while_running, points)
        if phase in ("finished", "failed"):
            break
        time.sleep(0.5)
    assert phase == "finished", (phase, (run_dir / "run.log").read_text()[-3000:] if (run_dir / "run.log").exists() else "")
    assert seen_while_running >= 5, seen_while_running
    print(f"submit -> first training point on the plot: {first_point_s:.1f} s")
    expect()(page.locator("#run-progress")).to_contain_text(f"step {STEPS}/{STEPS}")
    expect()(page.locator("#loss-plot path[aria-roledescription='line mark'][aria-label*='series: eval']")).to_have_count(1)
    expect()(page.locator("#run-health")).to_contain_text(re.compile(r"rank 0: done, step \d+, last progress \d+ s ago"))
    shot(page, "runs")

    # the CLI's dry run of the saved file resolves the config this run was submitted with
    out, _ = cli_dry_run.communicate(timeout=RUN_S)
    assert cli_dry_run.returncode == 0, out
    cli_config = yaml.safe_load(out.split("# resolved config\n", 1)[1].split("\n# ", 1)[0])
    submitted = yaml.safe_load((run_dir / "config.yaml").read_text())
    cli_config["run"].pop("dir"), submitted["run"].pop("dir")
    assert cli_config == submitted

    # ---- evaluate: the ROUGE table and the predictions file
    open_tab(page, "Evaluate & export")
    page.locator("#eval-run input").click()
    page.locator(f"#eval-run [role=option][aria-label='{rel}']").click()
    fill(page, "predict-limit", "4")
    fill(page, "eval-max-new-tokens", "8")
    page.locator("#predict-btn").click()
    expect()(textbox(page, "after-result")).to_have_value(re.compile(r"mine_eval: 4 samples; rouge-1 "),
                                                          timeout=RUN_S * 1000)
    metrics = json.loads(next(run_dir.glob("predict/*/metrics.json")).read_text())
    expect()(page.locator("#eval-scores")).to_contain_text(f"{metrics['rouge-1']:.2f}".rstrip("0").rstrip("."))
    expect()(page.locator("#predictions-file a").first).to_have_attribute("href", re.compile(r"predictions\.jsonl$"))

    # ---- export: HF folder, then GGUF; a second HF export is refused as the CLI refuses it
    page.locator("#export-btn").click()
    expect()(textbox(page, "export-result")).to_have_value(re.compile("^exported: "), timeout=RUN_S * 1000)
    assert (run_dir / "export" / "config.json").is_file()
    page.locator("#export-btn").click()
    expect()(textbox(page, "export-result")).to_have_value(re.compile("^error: .*already exists; pass --force"))
    page.locator("#gguf-btn").click()
    expect()(textbox(page, "export-result")).to_have_value(re.compile("^exported GGUF"), timeout=RUN_S * 1000)
    assert list((run_dir / "export-gguf").glob("*.gguf"))
    shot(page, "evaluate")

    # ---- chat with a picture and a system prompt; the base answers beside it
    open_tab(page, "Chat")
    page.locator("#chat-run input").click()
    page.locator(f"#chat-run [role=option][aria-label='{rel}']").click()
    fill(page, "system-prompt", SYSTEM)
    fill(page, "chat-max-new-tokens", "8")
    page.locator("#chat-image input[type=file]").set_input_files(str(data / "img0.png"))
    fill(page, "chat-message", "What colour is this picture?")
    page.locator("#send-btn").click()
    deadline, turns = time.time() + RUN_S, {}
    while len(turns) < 2 and time.time() < deadline:
        time.sleep(0.5)
        logs = [json.loads(line) for p in (run_dir / "chat").glob("ui-*.jsonl") for line in p.read_text().splitlines()]
        turns = {t["model"]: t for t in logs if t.get("user") == "What colour is this picture?"}
    assert set(turns) == {"trained", "base"}, turns
    assert turns["trained"]["system"] == SYSTEM and turns["trained"]["images"]
    expect()(page.locator("#chat-base [data-testid='bot']").last).to_be_visible()
    shot(page, "chat")

    # ---- reload: the form and the run as they were
    page.reload()
    page.wait_for_selector("#group-method")
    expect()(page.locator("#group-method input")).to_have_value("lora")
    expect()(page.locator("#field-model-name_or_path input")).to_have_value(str(model))
    expect()(textbox(page, "field-method-lora-plus_lr_ratio")).to_have_value("16")
    expect()(textbox(page, "run-name")).to_have_value("journey")
    # a change, then Load (the run name's saved file): the saved arguments are back
    fill(page, "field-method-lr", "0.5")
    choose(page, "field-model-dtype", "float32")
    page.locator("#args-load-btn").click()
    expect()(textbox(page, "args-result")).to_have_value(f"loaded: {saved_args}")
    expect()(textbox(page, "field-method-lr")).to_have_value("0.0001")
    expect()(page.locator("#field-model-dtype input")).to_have_value("bfloat16")
    expect()(page.locator("#field-data-datasets")).to_contain_text("mine")
    assert textbox(page, "overrides").input_value() == ""
    open_tab(page, "Runs")
    expect()(page.locator("#runs-table")).to_contain_text(rel)

    # ---- remove: a half-made run (as a submission that died before starting leaves one) goes after a confirm;
    # the trained run is kept until its name is typed
    from launcher.config.compose import compose_config
    from launcher.launch.rundir import make_run_dir, write_run_config

    half = make_run_dir(root, "half-made")
    write_run_config(half, compose_config([f"run.output_root={root}"]))
    half_rel = str(half.relative_to(root))
    page.locator("#refresh-btn").click()
    page.locator("#run-select input").click()
    page.locator(f"#run-select [role=option][aria-label='{half_rel}']").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#remove-btn").click()
    expect()(page.locator("#cancel-result")).to_contain_text(f"removed {half_rel}")
    assert not (root / "half-made").exists()
    expect()(page.locator("#runs-table")).not_to_contain_text(half_rel)
    page.locator("#run-select input").click()
    page.locator(f"#run-select [role=option][aria-label='{rel}']").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#remove-btn").click()
    expect()(page.locator("#cancel-result")).to_contain_text("type its name")
    assert run_dir.is_dir()

    # ---- the same journey in Chinese, on the same run: the switch at the top (every tab's name at once, the
    # tabs not yet opened too), remembered across a reload; each view's labels, states, counts and axes
    tabs_zh = ["配置", "运行", "对比", "对话", "评估与导出"]
    page.locator("#lang-switch label", has_text="中文").click()
    expect()(page.get_by_role("heading", level=2)).to_contain_text("配置、检查、提交")
    expect()(page.locator("[role=tab]")).to_have_text(tabs_zh)
    page.reload()
    expect()(page.get_by_role("heading", level=2)).to_contain_text("配置、检查、提交")
    expect()(page.get_by_role("radio", name="中文")).to_be_checked()
    expect()(page.locator("[role=tab]")).to_have_text(tabs_zh)

    # compose: the restored form previewed and saved, in Chinese
    expect()(page.locator("#field-method-lora-plus_lr_ratio")).to_contain_text("LoRA+ 学习率比例")
    page.locator("#preview-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("^通过：预检已通过"), timeout=120_000)
    expect()(page.locator("#precision-note")).to_contain_text("实际计算精度")
    page.locator("#args-save-btn").click()
    expect()(textbox(page, "args-result")).to_have_value(re.compile("^已保存："))
    shot(page, "compose-zh")

    # runs: states, counts, phase, rank health, the plot's axis and series
    open_tab(page, "运行")
    expect()(page.locator("#runs-table")).to_contain_text("已完成", timeout=30_000)
    # the session's runs root holds other tests' runs too: the count is whatever it is, worded in Chinese
    expect()(page.locator("#runs-summary")).to_contain_text(re.compile(r"已完成 \d+ 个"))
    page.locator("#run-select input").click()
    page.locator(f"#run-select [role=option][aria-label='{rel}']").click()
    expect()(page.locator("#run-progress")).to_contain_text("已完成")
    expect()(page.locator("#run-health")).to_contain_text(re.compile(r"进程 0：完成，步数 \d+"))
    expect()(page.locator("#loss-plot")).to_contain_text("步数", timeout=30_000)  # the x axis
    expect()(page.locator("#loss-plot path[aria-roledescription='line mark'][aria-label*='series: 训练']")).to_have_count(1)
    shot(page, "runs-zh")

    # evaluate: a prediction, its result in Chinese
    open_tab(page, "评估与导出")
    page.locator("#eval-run input").click()
    page.locator(f"#eval-run [role=option][aria-label='{rel}']").click()
    fill(page, "predict-limit", "2")
    fill(page, "eval-max-new-tokens", "4")
    page.locator("#predict-btn").click()
    expect()(textbox(page, "after-result")).to_have_value(re.compile(r"mine_eval：2 个样本；rouge-1 "),
                                                          timeout=RUN_S * 1000)
    shot(page, "evaluate-zh")

    # chat: its labels
    open_tab(page, "对话")
    expect()(page.locator("#system-prompt")).to_contain_text("系统提示词")
    expect()(page.locator("#send-btn")).to_have_text("发送")

    # ---- Compare: three runs (this one and two made from it), six labelled lines
    import shutil

    others = []
    for k in (1, 2):
        other = run_dir.parent.parent / run_dir.parent.name / f"{run_dir.name}-copy{k}"
        shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("model", "export*", "checkpoints", "predict",
                                                                       "chat", "code", "logs"))
        others.append(str(other.relative_to(root)))
    page.locator("#lang-switch label", has_text="English").click()
    page.reload()
    open_tab(page, "Compare")
    for name in [rel] + others:
        page.locator("#compare-runs input").click()
        page.locator(f"#compare-runs [role=option][aria-label='{name}']").click()
    page.locator("body").click(position={"x": 5, "y": 5})
    lines = page.locator("#compare-plot path[aria-roledescription='line mark']")
    expect()(lines).to_have_count(6, timeout=30_000)
    labels = {re.search(r"series: ([^;]+)", lines.nth(i).get_attribute("aria-label")).group(1) for i in range(6)}
    assert labels == {f"{name} {series}" for name in [rel] + others for series in ("train", "eval")}
    shot(page, "compare")
    context.close()
