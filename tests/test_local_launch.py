"""Local launches: a failed one leaves no half-made run dir; ranks share the CPUs; --version; train --help."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import __version__
from launcher.cli import main as cli_main
from launcher.launch.local import omp_threads_per_rank, usable_cpus
from launcher.launch.rundir import discard_unstarted_run, make_run_dir
from launcher.engines import checkpoint as ckpt

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.max_steps=1", "data.max_samples=16", "train.micro_batch_size=4", "train.eval_every=0",
         "train.exact_match_samples=0", "logger=none", "train.save_model=false"]


def test_version(capsys):
    assert cli_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"launcher {__version__}"


def test_train_help_lists_the_config_groups_and_where_keys_are_documented(capsys):
    with pytest.raises(SystemExit) as done:
        cli_main(["train", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for group, options in {"model": "tiny_qwen2*", "data": "tasks*", "method": "lora", "parallelism": "zero3",
                           "cluster": "slurm_h100", "experiment": "tasks_lora"}.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(group + " "))
        assert options in line, line
    assert "local_profile.example" not in out
    assert "launcher/config/schema.py" in out and "--dry-run" in out


def fake_two_rank_checkpoint(root: Path) -> Path:
    """A sealed checkpoint written by a 2-rank run: a 1-process run refuses it in its setup, on the rank."""
    d = root / "elsewhere" / "checkpoints" / "step-0000004"
    d.mkdir(parents=True)
    (d / "state.pt").write_bytes(b"weights")
    (d / "meta.json").write_text(json.dumps({"step": 4, "world_size": 2, "trained_tokens": 0}))
    ckpt.mark_complete(d)
    return d


def test_a_launch_that_fails_before_training_leaves_no_run_dir(tmp_path, capsys):
    root = tmp_path / "outputs"
    # Passes the preflight (which cannot count rows without tokenizing) and fails in the rank's setup.
    code = cli_main(["train", f"run.output_root={root}", *SMALL, "data.max_samples=3", "train.micro_batch_size=8"])
    err = capsys.readouterr().err
    assert code == 2
    assert "fewer than one global batch" in err and "run dir removed: the launch failed before training started" in err
    assert not root.exists() or not any(root.rglob("config.yaml")), sorted(root.rglob("*"))


def test_only_unstarted_run_dirs_are_discarded(tmp_path):
    started = make_run_dir(tmp_path, "r")
    (started / "config.yaml").write_text("x")
    (started / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    failed = make_run_dir(tmp_path, "r")  # same second: HH-MM-SS-1 beside it
    (failed / "config.yaml").write_text("x")
    assert discard_unstarted_run(failed) and not failed.exists()
    assert not discard_unstarted_run(started) and (started / "metrics.jsonl").exists()
    alone = make_run_dir(tmp_path, "other")
    assert discard_unstarted_run(alone)
    assert not (tmp_path / "other").exists()  # its empty name/date folders go too
    assert (tmp_path / "r").exists()


def test_threads_per_rank_share_the_cpus():
    assert omp_threads_per_rank(1, cpus=16) == 16
    assert omp_threads_per_rank(2, cpus=16) == 8
    assert omp_threads_per_rank(3, cpus=16) == 5
    assert omp_threads_per_rank(32, cpus=16) == 1
    assert omp_threads_per_rank(2, concurrent_runs=2, cpus=16) == 4  # a local sweep, two points at a time
    assert omp_threads_per_rank(2) == max(1, usable_cpus() // 2)


def test_two_local_ranks_run_with_their_share_of_threads(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "train", f"run.output_root={tmp_path}",
                           "cluster.nproc_per_node=2", *SMALL], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"CPU threads per rank: {omp_threads_per_rank(2)}" in done.stdout + done.stderr


def test_each_commands_help_lists_its_flags(capsys):
    """`launcher train --help` lists the flags taken before its parser (--from-llamafactory, -m), whatever else
    the line holds; every other command's --help lists its own."""
    for argv, flags in [(["train", "--help"], ["--from-llamafactory", "-m, --multirun", "--parallel", "--dry-run"]),
                        (["train", "--from-llamafactory", "lf.yaml", "--help"], ["--from-llamafactory"]),
                        (["train", "-m", "--help"], ["--parallel", "--dry-run"]),
                        (["predict", "--help"], ["--dataset", "--limit"]),
                        (["export", "--help"], ["--format", "--out"])]:
        with pytest.raises(SystemExit) as done:
            cli_main(argv)
        assert done.value.code == 0, argv
        out = capsys.readouterr().out
        for flag in flags:
            assert flag in out, (argv, flag)
