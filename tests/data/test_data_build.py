"""``launcher data build``: the training run's own cache key, built once on CPU; a waiter on the build lock says
in the log who builds and for how long it has waited (no collective, no timeout)."""
from __future__ import annotations

import fcntl
import logging
import threading
import time

from launcher.config.compose import compose_config
from launcher.data import build_datasets
from launcher.data import cli as data_cli
from launcher.data.cache import BUILDER_MARK, wait_for_lock
from launcher.models.tokenizers import load_tokenizer
from tests.resume.helpers import TINY


def test_build_then_training_maps_the_same_store(tmp_path, capsys):
    overrides = [f"data.cache_dir={tmp_path / 'cache'}", *TINY]
    assert data_cli.data_main(["build", *overrides]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data store built in ") and str(tmp_path / "cache") in out
    key = out.split("\n", 1)[0].rsplit("/", 1)[1]
    cfg = compose_config(overrides)  # what a training rank composes from the same overrides
    stats = build_datasets(cfg, load_tokenizer(cfg.model)).stats
    assert stats["cache_hit"] and stats["cache_key"] == key
    assert data_cli.data_main(["build", *overrides]) == 0
    assert capsys.readouterr().out.startswith("data store already built (cache hit)")


def test_waiting_on_the_build_lock_says_who_builds(tmp_path, caplog):
    key = "k1"
    (tmp_path / f"{key}.tmp-host-7").mkdir()
    (tmp_path / f"{key}.tmp-host-7" / BUILDER_MARK).write_text("PID 7 on host")
    builder = open(tmp_path / f"{key}.lock", "w")
    fcntl.flock(builder, fcntl.LOCK_EX)
    threading.Timer(2.5, lambda: fcntl.flock(builder, fcntl.LOCK_UN)).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="launcher.data"), open(tmp_path / f"{key}.lock", "w") as lock:
        wait_for_lock(lock, tmp_path, key, log_every_s=1.0)
    assert time.monotonic() - started >= 2
    text = caplog.text
    assert "waiting for the tokenized data (cache key k1), which process PID 7 on host is building" in text
    assert "still waiting for process PID 7 on host to finish tokenizing" in text
    assert "ready after" in text
    builder.close()
