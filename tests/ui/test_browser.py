"""The web UI driven in a real headless Chromium against the real ``launcher ui`` and the local SLURM cluster.

Compose a tiny run, preview it (the sbatch script appears), submit it to SLURM, watch it reach COMPLETED with
a loss curve drawn, chat with it, reload the page and still see it; a bad override shows the schema's message
and queues nothing; a sweep goes out as one job array. Screenshots of each tab go to docs/ui/.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.ui.conftest import screenshot

TINY = "train.exact_match_samples=0 train.log_every=1 train.eval_every=0"
FINISH_S = 300
CHAT_S = 300
"""The first reply imports transformers and loads two models in the UI process: slow on a shared machine."""


def expect():
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=30_000)  # the machine is shared: a handler may wait for a core
    return _expect


def choose(page, elem_id: str, value: str) -> None:
    """Pick ``value`` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} [role=option][aria-label='{value}']").click()


def fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)
    box.dispatch_event("input")


def textbox(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def exactly(text: str):
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def cell(page, text: str):
    """The runs table's cell holding exactly ``text`` (the table is a virtual grid of role=gridcell divs)."""
    return page.locator("#runs-table [role=gridcell]", has_text=exactly(text)).first


def row(page, rel: str):
    return page.locator("#runs-table [role=row]", has=page.locator("[role=gridcell]", has_text=exactly(rel)))


def known_job_ids() -> set:
    squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    sacct = subprocess.run(["sacct", "-n", "-X", "-a", "-S", "2000-01-01", "-o", "JobID"], capture_output=True,
                           text=True, check=True).stdout
    return set(squeue.split()) | set(sacct.split())


def compose_tiny(page, max_steps: int = 3) -> None:
    page.wait_for_selector("#group-cluster")
    choose(page, "group-cluster", "slurm_local")
    # choosing a cluster recomposes the defaults: processes per node comes from conf/cluster/slurm_local.yaml
    expect()(textbox(page, "field-cluster-nproc_per_node")).to_have_value("2")
    fill(page, "field-train-max_steps", str(max_steps))
    fill(page, "overrides", TINY)


def wait_completed(page, url: str, root, run_dir) -> None:
    """Open the page and wait on the Runs tab until the run is COMPLETED (it then has a model to chat with)."""
    page.goto(url)
    open_tab(page, "Runs")
    rel = str(run_dir.relative_to(root))
    try:
        expect()(row(page, rel)).to_contain_text("COMPLETED", timeout=FINISH_S * 1000)
    except AssertionError:
        logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted((run_dir / "slurm").glob("*_log.*")))
        raise AssertionError(f"{rel} did not complete; its node logs end with:\n{logs}") from None


@pytest.fixture(scope="module")
def submitted(ui_server, browser, slurm_cluster):
    """Compose, preview and submit one tiny run through the page; yields (url, root, run_dir, job_id)."""
    url, root = ui_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    compose_tiny(page)
    page.locator("#preview-btn").click()
    expect()(page.locator("#plan")).to_contain_text("#SBATCH", timeout=60_000)
    expect()(textbox(page, "verdict")).to_have_value(re.compile("passed"))
    command = textbox(page, "command").input_value()
    assert command.startswith("launcher train cluster=slurm_local train.max_steps=3 train.exact_match_samples=0")
    assert "--nproc-per-node=2" in page.locator("#plan").inner_text()  # the per-node torchrun command
    expect()(page.locator("#resolved-config")).to_contain_text("name: tiny-qwen2")  # CodeMirror renders the visible lines only
    screenshot(page, "compose")

    before = known_job_ids()
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("submitted SLURM job"), timeout=60_000)
    status = textbox(page, "compose-status").input_value()
    job_id = re.search(r"submitted SLURM job (\d+)", status).group(1)
    assert known_job_ids() - before == {job_id}
    run_dir = next(root.glob("*/*/*/slurm_job.json")).parent
    assert json.loads((run_dir / "slurm_job.json").read_text())["job_id"] == job_id
    context.close()
    yield url, root, run_dir, job_id


def test_run_completes_with_loss_curve_and_survives_reload(submitted, page):
    url, root, run_dir, job_id = submitted
    page.goto(url)
    open_tab(page, "Runs")
    rel = str(run_dir.relative_to(root))
    table = page.locator("#runs-table")
    expect()(table).to_contain_text(rel)
    # The table refreshes itself (gr.Timer) from squeue/sacct and metrics.jsonl.
    expect()(row(page, rel)).to_contain_text("COMPLETED", timeout=FINISH_S * 1000)
    expect()(row(page, rel)).to_contain_text("3/3")
    cell(page, rel).click()
    expect()(page.locator("#run-info")).to_contain_text("state COMPLETED")
    # The curve is drawn from the run's three logged steps.
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == [1, 2, 3]
    train_line = page.locator("#loss-plot path[aria-roledescription='line mark'][aria-label*='series: train']")
    expect()(train_line).to_have_attribute("d", re.compile(r"^M[^L]*L[^L]*L[^L]*$"), timeout=30_000)  # 3 points
    expect()(textbox(page, "log-tail")).not_to_have_value("", timeout=30_000)
    screenshot(page, "runs")

    page.reload()
    open_tab(page, "Runs")
    expect()(row(page, rel)).to_contain_text("COMPLETED")


def test_chat_with_finished_run_and_its_base(submitted, page):
    url, root, run_dir, _ = submitted
    wait_completed(page, url, root, run_dir)
    open_tab(page, "Chat")
    expect()(page.locator("#chat-run input")).to_have_value(str(run_dir.relative_to(root)), timeout=30_000)
    fill(page, "system-prompt", "You answer briefly.")
    fill(page, "chat-message", "add 2 and 3")
    page.locator("#send-btn").click()
    for elem in ("chat-trained", "chat-base"):
        bot = page.locator(f"#{elem} [data-testid='bot']").last
        expect()(bot).to_be_visible(timeout=CHAT_S * 1000)
        expect()(bot).not_to_have_text(re.compile(r"^\s*…?\s*$"), timeout=CHAT_S * 1000)
    # Each model's answer is what the model generated: the UI logs every turn beside `launcher chat`'s logs.
    deadline, turns = time.time() + CHAT_S, {}
    while len(turns) < 2 and time.time() < deadline:  # the base model answers after the trained one
        time.sleep(0.5)
        logs = [json.loads(line) for p in (run_dir / "chat").glob("ui-*.jsonl") for line in p.read_text().splitlines()]
        turns = {t["model"]: t for t in logs if t.get("user") == "add 2 and 3"}
    assert set(turns) == {"trained", "base"} and turns["trained"]["system"] == "You answer briefly."
    assert "You answer briefly." in turns["trained"]["prompt"]
    for elem, model in (("chat-trained", "trained"), ("chat-base", "base")):
        answer = turns[model]["assistant"] or "(empty answer: the model ended its turn)"
        expect()(page.locator(f"#{elem} [data-testid='bot']").last).to_contain_text(answer[:20].strip())
    screenshot(page, "chat")


def test_export_and_predict_buttons(submitted, page):
    url, root, run_dir, _ = submitted
    wait_completed(page, url, root, run_dir)
    open_tab(page, "Evaluate & export")
    expect()(page.locator("#eval-run input")).to_have_value(str(run_dir.relative_to(root)), timeout=CHAT_S * 1000)
    page.locator("#export-btn").click()
    expect()(textbox(page, "export-result")).to_have_value(re.compile("^exported: "), timeout=CHAT_S * 1000)
    info = json.loads((run_dir / "export" / "export_info.json").read_text())
    assert info["source"] == "final model" and (run_dir / "export" / "config.json").exists()
    fill(page, "predict-limit", "4")
    page.locator("#predict-btn").click()
    expect()(textbox(page, "after-result")).to_have_value(re.compile(r"tasks_eval: 4 samples; rouge-1 "),
                                                          timeout=CHAT_S * 1000)
    metrics = json.loads(next(run_dir.glob("predict/*/metrics.json")).read_text())
    assert metrics["n"] == 4 and f"rouge-1 {metrics['rouge-1']:.2f}" in textbox(page, "after-result").input_value()


def test_compare_tab_plots_runs(submitted, page):
    url, root, run_dir, _ = submitted
    page.goto(url)
    open_tab(page, "Compare")
    rel = str(run_dir.relative_to(root))
    page.locator("#compare-runs input").click()
    page.locator(f"#compare-runs [role=option][aria-label='{rel}']").click()
    line = page.locator(f"#compare-plot path[aria-roledescription='line mark'][aria-label*='series: {rel} train']")
    expect()(line).to_have_attribute("d", re.compile(r"^M[^L]*L[^L]*L[^L]*$"), timeout=30_000)
    screenshot(page, "compare")


def test_bad_override_shows_schema_message_and_queues_nothing(ui_server, page, slurm_cluster):
    url, root = ui_server
    page.goto(url)
    compose_tiny(page)
    fill(page, "overrides", TINY + " train.max_stepz=3")
    before_ids, before_dirs = known_job_ids(), set(root.rglob("config.yaml"))
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(
        re.compile(r"error: unknown config key 'train\.max_stepz' \(known keys here: .*max_steps"), timeout=60_000)
    page.locator("#preview-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("unknown config key 'train.max_stepz'"))
    time.sleep(1)
    assert known_job_ids() == before_ids
    assert set(root.rglob("config.yaml")) == before_dirs


def test_sweep_is_one_job_array(ui_server, page, slurm_cluster):
    url, root = ui_server
    page.goto(url)
    compose_tiny(page, max_steps=2)
    choose(page, "group-method", "lora")
    fill(page, "sweep", "method.lr=1e-3,2e-3 method.lora.r=4,8")
    page.locator("#preview-btn").click()
    expect()(page.locator("#plan")).to_contain_text("job array of 4 tasks", timeout=60_000)
    before = known_job_ids()
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("submitted sweep of 4 point"), timeout=90_000)
    sweep_dir = next(root.glob("sweeps/*/*/*/sweep.json")).parent
    data = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(data["arrays"]) == 1 and data["arrays"][0]["tasks"] == 4
    array_id = data["arrays"][0]["array_job_id"]
    assert {j.split("_")[0] for j in known_job_ids() - before} == {array_id}
    try:
        open_tab(page, "Runs")
        first_point = str((sweep_dir / data["points"][0]["run_dir"]).relative_to(root))
        expect()(page.locator("#runs-table")).to_contain_text(first_point, timeout=30_000)
        # Cancel one point from the page: `launcher cancel RUN_DIR` cancels that task only.
        cell(page, first_point).click()
        expect()(page.locator("#run-select input")).to_have_value(first_point)
        page.locator("#cancel-btn").click()
        expect()(page.locator("#cancel-result")).to_contain_text(f"cancelled job {array_id}_0")
        expect()(row(page, first_point)).to_contain_text("CANCELLED", timeout=60_000)
        open_tab(page, "Compare")
        # `launcher sweep report`, refreshed with the runs: point 0 is no longer pending or running (sacct says
        # CANCELLED, or forgets a task cancelled before it started: UNKNOWN).
        report = page.locator("#sweep-table")
        expect()(report).to_contain_text("4 point(s)", timeout=30_000)
        expect()(report).to_contain_text(re.compile(r"\b0\s+0\.001\s+4\s+(CANCELLED|UNKNOWN)"), timeout=60_000)
        screenshot(page, "sweep")
    finally:
        subprocess.run(["scancel", array_id], check=False)


def test_labels_in_chinese(ui_server, browser):
    url, _ = ui_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    page.goto(url)
    expect()(page.get_by_role("tab", name="配置")).to_be_visible(timeout=30_000)
    expect()(page.locator("#preview-btn")).to_contain_text("预览")
    expect()(page.locator("#group-model")).to_contain_text("模型")
    screenshot(page, "compose-zh")
    context.close()
