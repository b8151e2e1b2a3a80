"""One launch path: the CLI's dry run and the UI's Preview show the plan ``plan_run`` makes, and planning writes
nothing; a refused plan cannot be launched."""
from __future__ import annotations

import pytest

from launcher.cli import main as cli_main
from launcher.errors import PreflightError
from launcher.launch.plan import plan_run
from launcher.launch.run import launch_run


def test_cli_dry_run_and_ui_preview_show_the_same_plan_and_write_nothing(tmp_path, capsys):
    from launcher.ui import actions

    root = tmp_path / "outputs"
    overrides = ["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1", f"run.output_root={root}"]
    plan = plan_run(overrides)
    assert plan.ok and "#SBATCH --nodes=2" in plan.would_run
    assert f"{root.resolve()}/{plan.name}/<date>/<time>" in plan.would_run
    preview = actions.preview(overrides)
    assert preview.ok and preview.plan == plan.would_run and preview.config_yaml == plan.config_yaml()
    assert cli_main(["train", "--dry-run", *overrides]) == 0
    out = capsys.readouterr().out
    assert plan.would_run in out and "preflight passed; dry run: nothing was launched" in out
    assert not list(root.rglob("*")), sorted(root.rglob("*"))  # the preflight's writability probe is gone again


def test_a_refused_plan_keeps_every_problem_and_is_not_launched(tmp_path):
    root = tmp_path / "outputs"
    plan = plan_run(["method.lr=-1", "method.adam_eps=0", f"run.output_root={root}"])
    assert not plan.ok and "2 problems" in str(plan.refusal)
    assert plan.would_run  # what would run is still shown next to the problems (the UI's Preview)
    with pytest.raises(PreflightError):
        launch_run(plan)
    assert not list(root.rglob("config.yaml"))
