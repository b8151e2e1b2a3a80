"""Sweep expansion and checks without a cluster: grid sizes, Hydra sweep syntax, group globs, one bad point
refusing the whole sweep before anything is written, grouping by resource shape, the report's parsing."""
from __future__ import annotations

import json
import sys
import time

import pytest

from launcher.config.compose import conf_dir

from launcher.errors import ConfigError, PreflightError
from launcher.sweep.expand import expand_grid
from launcher.cli import train_main
from launcher.launch.sweep_launch import run_local_sweep
from launcher.sweep.plan import LOCAL_LOG, LOCAL_RESULT, SweepPoint, check_points, group_by_shape, point_dir_name
from launcher.sweep.report import _expand_task_ids, format_table, last_error_line, plot_sweep


def test_grid_is_the_cartesian_product_in_the_given_order():
    grid = expand_grid(["method=lora", "method.lr=1e-5,3e-5", "method.lora.r=8,16,32"])
    assert len(grid.points) == 6
    assert grid.swept_keys == ["method.lr", "method.lora.r"]
    assert grid.points[0] == ["method=lora", "method.lr=1e-05", "method.lora.r=8"]
    assert grid.points[-1] == ["method=lora", "method.lr=3e-05", "method.lora.r=32"]
    assert grid.swept_values(grid.points[1]) == {"method.lr": "1e-05", "method.lora.r": "16"}


def test_range_choice_and_a_repeated_key():
    grid = expand_grid(["train.seed=range(1,4)", "method.lora.r=choice(4,8)", "train.max_steps=5",
                        "train.max_steps=7,9"])
    assert len(grid.points) == 3 * 2 * 2
    assert {p[0] for p in grid.points} == {"train.seed=1", "train.seed=2", "train.seed=3"}
    # As in Hydra's BasicSweeper, the last value given for a key wins.
    assert {p[2] for p in grid.points} == {"train.max_steps=7", "train.max_steps=9"}
    assert expand_grid(["train.seed=range(0,10,5)"]).points == [["train.seed=0"], ["train.seed=5"]]


def test_glob_over_a_config_group():
    options = sorted(p.stem for p in conf_dir().joinpath("method").glob("*.yaml"))
    assert {"lora", "sft_full"} <= set(options)
    grid = expand_grid(["method=glob(*)", "train.max_steps=5"])
    assert sorted(p[0] for p in grid.points) == [f"method={o}" for o in options]
    kept = sorted(o for o in options if o != "lora" and not o.startswith("dpo"))
    assert sorted(expand_grid(["method=glob(*,exclude=[lora,dpo*])"]).points) == [[f"method={o}"] for o in kept]
    with pytest.raises(ConfigError, match="matches no option"):
        expand_grid(["method=glob(nothing*)"])


def test_no_sweep_is_one_point_and_bad_syntax_is_named():
    assert expand_grid(["method=lora"]).points == [["method=lora"]]
    assert expand_grid([]).points == [[]]
    with pytest.raises(ConfigError, match="interval sweep"):
        expand_grid(["method.lr=interval(0.1,1)"])
    with pytest.raises(ConfigError, match="cannot parse override 'method.lr=1,,2'"):
        expand_grid(["method.lr=1,,2"])


def test_a_bad_point_refuses_the_whole_sweep_naming_its_overrides():
    grid = expand_grid(["method=lora", "method.lora.r=8,0", "method.lr=1e-3,2e-3"])
    with pytest.raises(PreflightError) as err:
        check_points(grid)
    text = str(err.value)
    assert "2 of 4 point(s)" in text and "nothing was written or submitted" in text
    assert "point 2 (method.lora.r=0 method.lr=0.001)" in text and "method.lora.r: must be a positive rank" in text
    # A point that composes but fails the preflight (a dataset that does not exist) refuses it too.
    grid = expand_grid(["data.datasets=[tasks],[nope]"])
    with pytest.raises(PreflightError, match=r"point 1 \(data.datasets=\[nope\]\):[\s\S]*unknown dataset 'nope'"):
        check_points(grid)


def test_refused_sweep_writes_nothing(output_root):
    with pytest.raises(PreflightError, match=r"point 1 \(method.lora.r=-1\)"):
        train_main(["-m", f"run.output_root={output_root}", "method=lora", "method.lora.r=8,-1"])
    assert list(output_root.iterdir()) == []


def test_points_get_the_sweep_as_wandb_group_and_their_own_name():
    grid = expand_grid(["method=lora", "method.lr=1e-3,2e-3", "logger=wandb"])
    name, points = check_points(grid, name="lr-scan")
    assert name == "lr-scan"
    assert [p.cfg.logger.group for p in points] == ["lr-scan", "lr-scan"]
    assert [p.cfg.run.name for p in points] == ["lr-scan-000", "lr-scan-001"]
    _, points = check_points(expand_grid(["logger=wandb", "logger.group=mine", "method.lr=1e-3,2e-3"]))
    assert {p.cfg.logger.group for p in points} == {"mine"}


def test_one_array_per_resource_shape():
    grid = expand_grid(["cluster=slurm_local", "method.lr=1e-3,2e-3", "cluster.time_min=10,20"])
    _, points = check_points(grid)
    groups = group_by_shape(points)
    assert [[p.index for p in g] for g in groups] == [[0, 2], [1, 3]]
    assert {p.cfg.cluster.time_min for p in groups[1]} == {20}
    _, points = check_points(expand_grid(["cluster=slurm_local", "method.lr=1e-3,2e-3,3e-3"]))
    assert len(group_by_shape(points)) == 1


def test_point_dir_names():
    assert point_dir_name(3, {"method.lr": "0.001", "method.lora.r": "8"}) == "003_lr=0.001_r=8"
    assert point_dir_name(0, {"data.datasets": "[a,b]"}) == "000_datasets=-a-b-"


def test_dry_run_prints_the_arrays_and_writes_nothing(output_root, capsys):
    rc = train_main(["-m", "--dry-run", f"run.output_root={output_root}", "cluster=slurm_local",
                     "cluster.array_parallelism=2", "method=lora", "method.lr=1e-3,3e-3", "method.lora.r=4,8,16"])
    out = capsys.readouterr().out
    assert rc == 0 and "6 point(s)" in out and "job array of 6 tasks (points 0-5): --array=0-5%2" in out
    assert list(output_root.iterdir()) == []


def test_local_points_run_n_at_a_time(tmp_path, monkeypatch):
    """--parallel 2 overlaps two points; a failing point is recorded and does not stop the others."""
    import launcher.launch.sweep_launch as sweep

    script = "import sys, time; t = time.time(); time.sleep(1.0); print(t, time.time()); sys.exit(int(sys.argv[1]))"
    monkeypatch.setattr(sweep, "local_command", lambda cfg, run_dir: [sys.executable, "-c", script,
                                                                     "3" if run_dir.name == "p1" else "0"])
    from launcher.config.schema import Config

    points = []
    for i in range(3):
        run_dir = tmp_path / f"p{i}"
        run_dir.mkdir()
        points.append(SweepPoint(index=i, overrides=[], swept={}, cfg=Config(), run_dir=run_dir))
    start = time.time()
    assert run_local_sweep(points, parallel=2, poll_s=0.05) == 1
    elapsed = time.time() - start
    assert elapsed < 2.9, f"3 one-second points, 2 at a time, took {elapsed:.1f} s"
    spans = [tuple(map(float, (p.run_dir / LOCAL_LOG).read_text().split())) for p in points]
    assert spans[1][0] < spans[0][1], "points 0 and 1 did not overlap"
    codes = [json.loads((p.run_dir / LOCAL_RESULT).read_text())["returncode"] for p in points]
    assert codes == [0, 3, 0]


def test_report_helpers(tmp_path):
    assert _expand_task_ids("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]
    assert _expand_task_ids("12_[3]") == ["12_3"] and _expand_task_ids("12_7") == ["12_7"]
    log = tmp_path / "stderr.log"
    log.write_text("Traceback (most recent call last):\n  File x\nValueError: boom\n[default0]:error: data: 4 rows\n"
                   "[default0]:more\n")
    assert last_error_line([tmp_path / "missing.log", log]) == "error: data: 4 rows"
    log.write_text("Traceback (most recent call last):\n  File x\ntorch.OutOfMemoryError: CUDA out of memory\n")
    assert last_error_line([log]) == "torch.OutOfMemoryError: CUDA out of memory"

    data = {"name": "s", "swept_keys": ["method.lr", "method.lora.r"]}
    rows = []
    for i, (lr, r, loss, state) in enumerate([("1e-3", "4", 2.0, "COMPLETED"), ("1e-2", "4", 1.5, "COMPLETED"),
                                                ("1e-3", "16", 1.8, "COMPLETED"), ("1e-2", "16", None, "FAILED")]):
        rows.append({"index": i, "swept": {"method.lr": lr, "method.lora.r": r}, "state": state, "step": 5,
                     "final_train_loss": loss, "final_eval_loss": loss, "best_eval_step": 5, "best_eval_loss": loss,
                     "job_id": f"7_{i}", "run_dir": f"/x/{i}", "error": "error: boom" if state == "FAILED" else None})
    table = format_table(data, rows)
    assert "3 completed, 1 failed" in table and "point 3 failed: error: boom" in table
    assert "best final eval loss: 1.5000 (point 1: method.lr=1e-2 method.lora.r=4)" in table
    out = plot_sweep(data, rows, tmp_path / "sweep.png")
    assert out is not None and out.stat().st_size > 1000


def test_fast_compose_equals_hydra_compose_of_each_point():
    from launcher.config.compose import compose_dict
    from launcher.sweep.plan import compose_points

    grid = expand_grid(["method=sft_full,lora", "method.lr=1e-3,2e-3", "cluster=local,slurm_local", "train.max_steps=7",
                        "data.datasets=[tasks],[tasks,tasks_eval]", "cluster.env.FOO=bar", "experiment=tasks_lora"])
    fast = compose_points(grid.points)
    assert len(fast) == 16
    for point, composed in zip(grid.points, fast):
        assert composed == compose_dict(point), point
    bad = compose_points([["method.lr=1e-3"], ["method=nope"], ["method.lora.r=[1"]])
    assert isinstance(bad[0], dict) and bad[0]["method"]["lr"] == 1e-3
    assert isinstance(bad[1], str) and "nope" in bad[1]
    assert isinstance(bad[2], str)


def test_compact_indices():
    from launcher.sweep.plan import compact_indices

    assert compact_indices([0, 1, 2, 3, 7, 9, 10]) == "0-3, 7, 9-10"
    assert compact_indices([4]) == "4"


def test_a_sweep_keeps_to_one_cluster_kind_and_one_output_root(tmp_path):
    with pytest.raises(ConfigError, match="mix cluster kinds"):
        check_points(expand_grid(["cluster=local,slurm_local"]))
    with pytest.raises(ConfigError, match="run.output_root differs"):
        check_points(expand_grid([f"run.output_root={tmp_path}/a,{tmp_path}/b"]))


def test_warnings_for_wasted_points():
    from launcher.sweep.plan import sweep_warnings

    grid = expand_grid(["method.lr=1e-3,2e-3", "method.lora.r=8,16"])
    _, points = check_points(grid)
    assert "method.lora.r is swept but point(s) 0-3 train all weights" in " ".join(sweep_warnings(grid, points))
    grid = expand_grid(["method=lora", "method.lora.r=8,16"])
    assert sweep_warnings(grid, check_points(grid)[1]) == []
    grid = expand_grid(["method.lr=1e-3,0.001,2e-3"])
    assert "same config (points 0-1)" in " ".join(sweep_warnings(grid, check_points(grid)[1]))
