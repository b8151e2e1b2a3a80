"""Issue 29 item 9 (the data cache): a build stopped by SIGTERM removes its own .tmp folder; one killed outright
(kill -9) leaves it, and the next build removes it, naming the PID and host that left it. Real processes, real
signals."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from launcher.data import cache

REPO_ROOT = Path(__file__).resolve().parents[2]

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from launcher.data.cache import cached

    def build(tmp):
        (tmp / "input_ids.bin").write_bytes(b"x" * 4096)
        print("building", flush=True)
        time.sleep(120)

    cached(Path(sys.argv[1]), sys.argv[2], build)
""")


def start_build(cache_dir: Path, key: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(cache_dir), key], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout.readline().strip() == "building", proc.stderr.read()
    return proc


def build_dirs(cache_dir: Path) -> list:
    return sorted(p.name for p in cache_dir.iterdir() if p.is_dir())


def test_sigterm_during_a_build_removes_its_folder(tmp_path):
    proc = start_build(tmp_path, "k1")
    [tmp] = build_dirs(tmp_path)
    assert tmp == f"k1.tmp-{socket.gethostname()}-{proc.pid}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert build_dirs(tmp_path) == [], "SIGTERM left the unfinished build behind"
    assert "SIGTERM during preprocessing" in proc.stderr.read()


def test_a_killed_build_is_removed_by_the_next_one(tmp_path, caplog):
    proc = start_build(tmp_path, "k1")
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close(), proc.stderr.close()
    [orphan] = build_dirs(tmp_path)
    assert orphan.startswith("k1.tmp-")

    with caplog.at_level(logging.WARNING, logger="launcher.data"):
        folder, hit = cache.cached(tmp_path, "k1", lambda tmp: (tmp / "ok").write_text("1"))
    assert not hit and (folder / "ok").is_file()
    assert build_dirs(tmp_path) == ["k1"]
    [line] = [r.getMessage() for r in caplog.records if "unfinished build" in r.getMessage()]
    assert orphan in line and f"PID {proc.pid} on host {socket.gethostname()}" in line


def test_another_keys_orphan_is_removed_but_a_live_build_is_left_alone(tmp_path):
    dead = start_build(tmp_path, "dead")
    dead.kill()
    dead.wait(timeout=30)
    dead.stdout.close(), dead.stderr.close()
    live = start_build(tmp_path, "live")
    try:
        cache.cached(tmp_path, "other", lambda tmp: (tmp / "ok").write_text("1"))
        names = build_dirs(tmp_path)
        assert "other" in names and f"live.tmp-{socket.gethostname()}-{live.pid}" in names
        assert not any(n.startswith("dead.tmp") for n in names), names
    finally:
        live.kill()
        live.wait(timeout=30)
        live.stdout.close(), live.stderr.close()


def test_a_rank_whose_sigterm_means_stop_keeps_its_handler(tmp_path):
    """Under SLURM, TERM asks the ranks to checkpoint and stop (preemption.StopFlag): the build leaves that be."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        def build(tmp):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            (tmp / "ok").write_text("1")

        folder, _ = cache.cached(tmp_path, "k", build)
        assert (folder / "ok").is_file() and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


PREPROCESS = textwrap.dedent("""
    import sys
    from launcher.data import cli as data_cli
    from tests.data.helpers import char_tokenizer

    data_cli.load_tokenizer = lambda model_cfg: char_tokenizer()
    sys.exit(data_cli.data_main(["dump", "--out", sys.argv[1], *sys.argv[2:]]))
""")


def test_sigterm_during_real_preprocessing_with_workers(tmp_path):
    """`launcher data dump` tokenizing 60k rows with 2 encoder workers, stopped by SIGTERM once its .tmp appears."""
    from tests.data.helpers import write_dataset

    rows = [{"instruction": f"Question {i} " * 8, "input": "", "output": f"Answer {i} " * 8} for i in range(60000)]
    write_dataset(tmp_path / "data", "d", rows)
    cache_dir = tmp_path / "cache"
    overrides = [f"data.dataset_dir={tmp_path / 'data'}", "data.datasets=[d]", "data.eval_datasets=[]",
                 f"data.cache_dir={cache_dir}", "data.cutoff_len=256", "data.num_proc=2"]
    proc = subprocess.Popen([sys.executable, "-c", PREPROCESS, str(tmp_path / "rows.jsonl"), *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.monotonic() + 120
    while not (cache_dir.is_dir() and any(".tmp-" in p.name for p in cache_dir.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # into the encoding
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM during preprocessing" in err
    assert build_dirs(cache_dir) == [], "the interrupted preprocessing left a folder"
