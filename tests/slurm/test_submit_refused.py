"""A submission SLURM does not take: real sbatch against a controller that does not answer (a copy of the test
cluster's slurm.conf with a dead port). The launch says sbatch's one-line reason and leaves no run dir."""
from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import SubmitError
from launcher.launch.plan import plan_run
from launcher.launch.run import launch_run


@pytest.fixture
def dead_controller(slurm_cluster, tmp_path, monkeypatch) -> Path:
    """SLURM_CONF naming a controller port nothing listens on; MessageTimeout=1 so that sbatch and sinfo give
    up in a second instead of retrying for ten."""
    lines = [line for line in Path(slurm_cluster).read_text().splitlines()
             if not line.startswith(("SlurmctldPort=", "MessageTimeout="))]
    conf = tmp_path / "slurm.conf"
    conf.write_text("\n".join(lines + ["SlurmctldPort=1", "MessageTimeout=1"]) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    return conf


def overrides(root: Path) -> list:
    return ["cluster=slurm_local", f"run.output_root={root}", "train.exact_match_samples=0", "train.max_steps=2"]


def assert_one_line_sbatch_reason(message: str) -> None:
    assert message.startswith("sbatch: error:") and "\n" not in message, message
    assert "Traceback" not in message and "controller" in message, message


def test_refused_submission_says_why_in_one_line_and_leaves_no_run_dir(dead_controller, tmp_path, capsys):
    root = tmp_path / "runs"
    plan = plan_run(overrides(root))
    assert plan.ok, plan.refusal  # sinfo not answering is a warning: the partition is not checked
    with pytest.raises(SubmitError) as err:
        launch_run(plan)
    assert_one_line_sbatch_reason(str(err.value))
    assert list(root.iterdir()) == [], "the half-made run dir was left behind"
    assert "run dir removed" in capsys.readouterr().err


def test_the_ui_submit_shows_the_same_line_and_leaves_no_run(dead_controller, tmp_path):
    from launcher.ui import actions, runs

    root = tmp_path / "runs"
    with pytest.raises(SubmitError) as err:
        actions.submit(overrides(root), name="refused")
    assert_one_line_sbatch_reason(str(err.value))
    assert list(root.iterdir()) == []
    assert runs.scan(root) == []  # nothing listed as UNKNOWN in the Runs tab
