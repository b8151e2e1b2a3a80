"""The UI's parts without a browser: the form's overrides, labels, path confinement, the run-dir scan, the
host/token check of ``launcher ui``, and a local run started from the UI (detached, to completion and cancel).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.errors import ConfigError, LauncherError
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.ui import form, runs
from launcher.ui.i18n import LABELS, LANGUAGES, required_keys, translations
from tests.ui.conftest import REPO_ROOT, free_port, start_ui, wait_for_page

PY = [sys.executable]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}


# ------------------------------------------------------------------------------------------------ form


def test_form_gives_the_shortest_overrides():
    defaults = form.default_groups()
    assert defaults["model"] == "tiny_qwen2" and defaults["cluster"] == "local"
    assert defaults["experiment"] == form.NO_EXPERIMENT
    groups = {**defaults, "cluster": "slurm_local", "method": "lora"}
    assert form.group_overrides(groups) == ["method=lora", "cluster=slurm_local"]
    composed = form.field_defaults({"method": {"lr": 0.002, "lora": {"r": 8}}, "cluster": {"partition": None}})
    values = {"method.lr": 0.002, "method.lora.r": 16, "cluster.partition": "gpu a"}
    assert form.field_overrides(values, composed) == ["method.lora.r=16", "cluster.partition='gpu a'"]
    assert form.split_overrides("a=1  'b=x y' # comment\nc=2") == ["a=1", "b=x y", "c=2"]
    with pytest.raises(ConfigError, match="close the quote"):
        form.split_overrides("a='1")
    with pytest.raises(ConfigError, match="method.lora.r: expected int"):
        form.field_overrides({"method.lora.r": 2.5}, composed)


def test_group_options_come_from_conf():
    options = form.group_options()
    assert "slurm_local" in options["cluster"] and "local_profile.example" not in options["cluster"]
    assert set(options) == set(form.GROUPS)
    assert options["experiment"][0] == form.NO_EXPERIMENT


def test_every_label_has_english_and_chinese():
    table = translations()
    assert set(table) == set(LANGUAGES)
    for key, texts in LABELS.items():
        assert len(texts) == len(LANGUAGES) and all(t.strip() for t in texts), key
    assert required_keys() <= set(LABELS)
    chinese = [texts[1] for texts in LABELS.values()]
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in t) for t in chinese) >= len(chinese) - 3  # "LoRA alpha" etc.


def test_app_builds_with_every_label(tmp_path):
    pytest.importorskip("gradio")
    from launcher.ui.app import build_app

    app = build_app(tmp_path / "root")  # Labels raises on a key missing from LABELS
    assert app.launcher_i18n is not None


# ------------------------------------------------------------------------------------------------ paths


def test_paths_stay_under_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (root / "link").symlink_to(tmp_path / "secret")
    assert runs.confine(root, "a") == (root / "a").resolve()
    for bad in ("../secret", str(tmp_path / "secret"), "link", "a/../../secret"):
        with pytest.raises(LauncherError, match="not under the output root"):
            runs.confine(root, bad)


def test_log_tail_hides_secret_values(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-7f3a9c")
    log = tmp_path / "stdout.log"
    log.write_text("start\nkey=wandb-secret-7f3a9c\n")
    text = runs.tail_text(log)
    assert "wandb-secret-7f3a9c" not in text and "<WANDB_API_KEY>" in text


# ------------------------------------------------------------------------------------------------ scan


def fake_run(root: Path, name: str, steps: int, max_steps: int, summary: bool = False, extra=()) -> Path:
    cfg = compose_config([f"run.output_root={root}", f"train.max_steps={max_steps}", *extra])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for step in range(1, steps + 1):
            fh.write(json.dumps({"kind": "train", "step": step, "loss": 5.0 / step, "epoch": step / 100,
                                 "trained_tokens_seen": 100 * step, "trained_tokens_per_s": 50.0,
                                 "tokens_per_s": 80.0}) + "\n")
        fh.write(json.dumps({"kind": "eval", "step": steps, "eval_loss": 1.5}) + "\n")
        fh.write('{"kind": "train", "step": 99')  # a line being written
    if summary:
        (run_dir / "summary.json").write_text(json.dumps({"total_steps": steps, "final_step": steps,
                                                          "final_train_loss": 5.0 / steps}))
    return run_dir


def test_scan_reads_every_run_from_its_dir(tmp_path):
    root = tmp_path / "root"
    done = fake_run(root, "done", 10, 10, summary=True)
    lost = fake_run(root, "lost", 4, 10)
    (lost / "local_job.json").write_text(json.dumps({"pid": 2 ** 22 + 7, "create_time": 1.0}))  # no such process
    cancelled = fake_run(root, "cancelled", 4, 10)
    (cancelled / "local_job.json").write_text(json.dumps({"pid": 2 ** 22 + 7, "create_time": 1.0}))
    (cancelled / "local_cancelled.json").write_text("{}")
    fake_run(root, "cli", 3, -1)  # started from a terminal: no job file, no summary yet
    slurm = fake_run(root, "slurm", 2, 10)
    (slurm / "slurm_job.json").write_text(json.dumps({"job_id": "123"}))
    (slurm / "requeues.json").write_text(json.dumps({"requeues": [{"job_id": "123", "step": 1}]}))

    infos = {i.name: i for i in runs.scan(root, slurm_states={"123": "RUNNING"})}
    assert infos["done"].state == "COMPLETED" and (infos["done"].step, infos["done"].total_steps) == (10, 10)
    assert infos["lost"].state == "LOST" and infos["lost"].step == 4 and infos["lost"].loss == pytest.approx(1.25)
    assert infos["cancelled"].state == "CANCELLED"
    # 3 steps are 0.03 of an epoch: the total follows the default config's epochs
    epochs = compose_config([]).train.epochs
    assert infos["cli"].state == "UNKNOWN" and infos["cli"].total_steps == round(3 / 0.03 * epochs)
    s = infos["slurm"]
    assert (s.state, s.job_id, s.requeues, s.eval_loss) == ("RUNNING", "123", 1, 1.5)
    # measured between the last two train records: 100 trained tokens per step at 50 tokens/s
    assert s.step_s == pytest.approx(2.0) and s.eta_s == pytest.approx(2.0 * 8)
    assert (s.phase, infos["done"].phase, infos["lost"].phase) == ("training", "finished", "failed")
    rows = runs.table_rows(list(infos.values()))
    assert len(rows) == 5 and all(len(r) == len(runs.TABLE_HEADERS) for r in rows)
    assert [p["series"] for p in runs.curves(done)].count("train") == 10


# ------------------------------------------------------------------------------------------------ server


def test_help_does_not_import_gradio():
    code = "import sys; from launcher.cli import main; main(['--help']); print('gradio' in sys.modules)"
    out = subprocess.run(PY + ["-c", code], capture_output=True, text=True, env=ENV, timeout=120).stdout
    assert "ui [--host 127.0.0.1]" in out and out.strip().endswith("False")


def test_public_host_without_token_is_refused(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "LAUNCHER_UI_TOKEN"}
    port = free_port()
    done = subprocess.run(PY + ["-m", "launcher", "ui", "--host", "0.0.0.0", "--port", str(port), "--root",
                                str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "error: --host 0.0.0.0: the UI would be reachable from other machines without a login" in done.stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    short = subprocess.run(PY + ["-m", "launcher", "ui", "--host", "0.0.0.0", "--token", "abc"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert short.returncode == 2 and "at least 8 characters" in short.stderr


def test_public_host_with_token_asks_for_a_login(tmp_path):
    pytest.importorskip("gradio")
    port = free_port()
    log = tmp_path / "server.log"
    token = "tok-" + os.urandom(6).hex()
    env_before = os.environ.get("LAUNCHER_UI_TOKEN")
    os.environ["LAUNCHER_UI_TOKEN"] = token  # start_ui passes the environment on
    try:
        proc = start_ui(tmp_path / "root", port, log, extra_args=("--host", "0.0.0.0"))
    finally:
        if env_before is None:
            os.environ.pop("LAUNCHER_UI_TOKEN")
        else:
            os.environ["LAUNCHER_UI_TOKEN"] = env_before
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", proc, log)
        with pytest.raises(urllib.error.HTTPError) as refused:  # the app's config needs the login
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10)
        assert refused.value.code == 401
        login = urllib.request.Request(f"http://127.0.0.1:{port}/login", method="POST",
                                       data=f"username=launcher&password={token}".encode(),
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(login, timeout=10) as resp:
            assert resp.status == 200
        assert token not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ------------------------------------------------------------------------------------------------ local


def wait_state(root: Path, name: str, states: set, timeout_s: float = 240):
    deadline = time.time() + timeout_s
    info = None
    while time.time() < deadline:
        info = next((i for i in runs.scan(root) if i.name == name), None)
        if info is not None and info.state in states:
            return info
        time.sleep(0.5)
    raise AssertionError(f"{name}: not in {states} after {timeout_s} s (last: {info})")


def test_local_run_started_from_the_ui_completes_and_cancels(tmp_path):
    from launcher.ui import actions

    root = tmp_path / "root"
    base = ["train.exact_match_samples=0", "train.eval_every=0", "train.log_every=1", f"run.output_root={root}"]
    start = time.perf_counter()
    done = actions.submit(base + ["train.max_steps=2"], name="short")
    assert time.perf_counter() - start < 30  # returns without waiting for training
    assert "started locally" in done.message and (done.run_dir / "local_job.json").exists()
    long = actions.submit(base + ["train.max_steps=100000"], name="long")
    try:
        info = wait_state(root, "short", {"COMPLETED", "FAILED", "LOST"})
        assert info.state == "COMPLETED", (done.run_dir / "run.log").read_text()[-3000:]
        assert info.step == 2 and (done.run_dir / "model").is_dir()
        assert json.loads((done.run_dir / "local_result.json").read_text())["returncode"] == 0

        running = wait_state(root, "long", {"RUNNING"})
        deadline = time.time() + 120
        while not (long.run_dir / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.5)
        assert "stopped the local job" in str(runs.cancel(running.path))
        stopped = wait_state(root, "long", {"CANCELLED", "COMPLETED", "FAILED"}, timeout_s=60)
        assert stopped.state == "CANCELLED"
        assert "nothing to cancel" in str(runs.cancel(running.path))
    finally:
        from launcher.launch.detached import stop

        stop(long.run_dir)  # never leave a detached run training after a failed assertion


def test_resume_takes_the_runs_overrides_and_its_latest_or_chosen_checkpoint(tmp_path):
    from launcher.errors import ConfigError
    from launcher.ui.actions import resume_overrides

    run_dir = tmp_path / "r" / "2026-01-01" / "10-00-00"
    (run_dir / "checkpoints" / "step-0000004").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-0000012").mkdir()
    with pytest.raises(ConfigError, match="no overrides.txt"):
        resume_overrides(run_dir)
    (run_dir / "overrides.txt").write_text("method=lora\ntrain.max_steps=20\nrun.resume=never\n")
    assert resume_overrides(run_dir) == ["method=lora", "train.max_steps=20",
                                         f"run.resume={run_dir}/checkpoints/step-0000012"]
    assert resume_overrides(run_dir, "step-0000004")[-1] == f"run.resume={run_dir}/checkpoints/step-0000004"
    with pytest.raises(ConfigError, match="no checkpoint step-9"):
        resume_overrides(run_dir, "step-9")
