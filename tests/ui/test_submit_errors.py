"""A submission that SLURM does not answer: the page's one line is sbatch's own, and no run dir is left.

The SLURM config is the test cluster's with the controller's port moved to one nobody listens on (and short
timeouts, so that sbatch gives up at once): a real sbatch, a real refusal."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from launcher.errors import SubmitError


def dead_slurm_conf(live_conf: str, folder: Path) -> Path:
    from tests.ui.conftest import free_port

    text = Path(live_conf).read_text()
    text = re.sub(r"(?m)^SlurmctldPort=.*$", f"SlurmctldPort={free_port()}", text)
    conf = folder / "slurm.conf"
    conf.write_text(text + "\nMessageTimeout=1\nTCPTimeout=1\n")
    return conf


def test_submit_to_a_silent_slurm_says_why_in_one_line_and_leaves_no_run(slurm_cluster, tmp_path, monkeypatch):
    from launcher.ui import actions
    from launcher.ui.tabs.page import failure

    monkeypatch.setenv("SLURM_CONF", str(dead_slurm_conf(slurm_cluster, tmp_path)))
    root = tmp_path / "runs"
    overrides = ["cluster=slurm_local", "train.max_steps=2", f"run.output_root={root}"]
    with pytest.raises(SubmitError) as caught:
        actions.submit(overrides)
    shown = failure(caught.value, "en")
    assert re.fullmatch(r"error: sbatch: error: .*(Unable to contact slurm controller|connect).*", shown), shown
    assert "\n" not in shown
    assert failure(caught.value, "zh-CN").startswith("错误：sbatch: error: ")
    assert not list(root.rglob("config.yaml"))  # nothing half-made for the Runs tab to list as UNKNOWN
