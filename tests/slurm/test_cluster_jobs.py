"""Real jobs on the test cluster (slurm/start-cluster.sh --nodes 2): training on 1 node x 2 processes and on
2 nodes x 1 process, the run dir's contents, secrets kept out of files, status/logs/cancel, dry run.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


from launcher.config.compose import compose_config, default_run_name
from launcher.checks.preflight import run_preflight
from launcher.launch.rundir import make_run_dir, write_code_version, write_run_config
from launcher.slurm.jobs import TERMINAL_STATES, cancel_main, job_state, logs_main, status_main
from launcher.slurm.node import REPO_ROOT
from launcher.slurm.render import port_candidates, render_sbatch
from launcher.launch.slurm_submit import render_plan, submit_run

SECRETS = {"WANDB_API_KEY": "wandb-secret-7f3a9c", "HF_TOKEN": "hf_secret_2b8d41"}


def launch(runs_root: Path, overrides: list, worker_module=None) -> tuple:
    """What `launcher train cluster=slurm_local ...` does: compose, preflight, run dir, submit."""
    cfg = compose_config(["cluster=slurm_local", f"run.output_root={runs_root}", "train.exact_match_samples=0",
                          *overrides])
    assert run_preflight(cfg) == []
    run_dir = make_run_dir(cfg.run.output_root, default_run_name(cfg))
    write_run_config(run_dir, cfg)
    write_code_version(run_dir, REPO_ROOT)
    info = submit_run(cfg, run_dir, worker_module=worker_module)
    return cfg, run_dir, info


def wait_for_state(job_id: str, states: set, timeout_s: float = 180) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = job_state(job_id)["state"]
        if state in states:
            return state
        time.sleep(0.25)  # squeue + sacct: a few ms each; a 1 s poll was half a second lost per wait
    raise AssertionError(f"job {job_id} not in {states} after {timeout_s}s (last state {state})")


def node_logs(run_dir: Path, job_id: str) -> str:
    return "".join(p.read_text() for p in sorted((run_dir / "slurm").glob(f"{job_id}_*_log.*")))


def assert_completed(run_dir: Path, job_id: str) -> None:
    state = wait_for_state(job_id, TERMINAL_STATES)
    assert state == "COMPLETED", f"job {job_id} ended {state}:\n{node_logs(run_dir, job_id)[-4000:]}"


def train_steps(run_dir: Path) -> list:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if r.get("kind") == "train"]


def test_one_node_two_processes_trains(slurm_cluster, runs_root, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)  # sbatch passes the environment on; nothing may write it down
    cfg, run_dir, info = launch(runs_root, ["cluster.nodes=1", "cluster.nproc_per_node=2", "train.max_steps=3"])
    job_id = info["job_id"]
    assert_completed(run_dir, job_id)

    assert train_steps(run_dir)[-1] == 3
    assert (run_dir / "model" / "config.json").exists() and (run_dir / "summary.json").exists()
    logs = node_logs(run_dir, job_id)
    assert "world size: 2" in logs
    # Logs per node and per rank.
    for local_rank in (0, 1):
        assert list(run_dir.glob(f"logs/node0/*/attempt_0/{local_rank}/stderr.log")), f"no log for local rank {local_rank}"
    # The run dir holds the exact submitted script, the resolved config and the code version.
    submitted = (run_dir / "submitted.sbatch").read_text()
    assert submitted == (run_dir / "slurm" / f"{job_id}_submission.sh").read_text()
    assert submitted == render_sbatch(cfg, run_dir, python=shlex.quote(sys.executable), repo_root=run_dir / "code")
    assert (run_dir / "config.yaml").exists() and "commit:" in (run_dir / "code_version.txt").read_text()
    # Secrets travelled only through the environment.
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in SECRETS.values():
                assert value.encode() not in data, f"secret written to {path}"


def test_two_nodes_form_one_world_and_train(slurm_cluster, runs_root):
    _, run_dir, info = launch(runs_root, ["cluster.nodes=2", "cluster.nproc_per_node=1", "train.max_steps=3"])
    job_id = info["job_id"]
    assert_completed(run_dir, job_id)

    assert train_steps(run_dir)[-1] == 3
    assert job_state(job_id)["nodes"] == "node[1-2]"
    node0 = (run_dir / "slurm" / f"{job_id}_0_log.out").read_text()
    node1 = (run_dir / "slurm" / f"{job_id}_1_log.out").read_text()
    # Both nodes reached the same head node at the address SLURM gives for it, on the port node 0 published
    # (the job's own one unless another job held it on the head node).
    port = int((run_dir / "logs" / f"rdzv_port.{job_id}.0").read_text())
    assert port in port_candidates(job_id)
    assert f"node 0/2 (node1): head node1 at 127.0.0.1:{port}" in node0
    assert f"node 1/2 (node2): head node1 at 127.0.0.1:{port}" in node1
    assert "world size: 2" in node_logs(run_dir, job_id)
    for node in (0, 1):
        assert list(run_dir.glob(f"logs/node{node}/*/attempt_0/0/stderr.log")), f"no rank log on node {node}"
        assert "--nnodes=2" in (run_dir / "logs" / f"node{node}" / "command.txt").read_text()


def test_status_logs_cancel_on_a_running_job(slurm_cluster, runs_root, monkeypatch, capsys):
    # A cheap payload (one all_reduce, then sleep) stands in for a long training run.
    monkeypatch.setenv("PAYLOAD_SLEEP_S", "300")
    _, run_dir, info = launch(runs_root, ["cluster.nodes=1", "cluster.nproc_per_node=1"],
                              worker_module="tests.slurm.payload_allreduce")
    job_id = info["job_id"]
    wait_for_state(job_id, {"RUNNING"}, timeout_s=60)
    deadline = time.time() + 90
    while "sum of ranks" not in node_logs(run_dir, job_id) and time.time() < deadline:
        time.sleep(0.5)

    follower = subprocess.Popen(
        [sys.executable, "-c", f"from launcher.slurm.jobs import logs_main; logs_main([{str(run_dir)!r}, '--follow',"
         " '--interval', '0.5'])"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    capsys.readouterr()
    assert status_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"job {job_id}: RUNNING" in out and str(run_dir) in out
    assert status_main([job_id]) == 0  # a bare job id finds its run dir through the job's comment
    assert str(run_dir) in capsys.readouterr().out
    assert logs_main([job_id]) == 0
    assert "[node0] [default0]:rank 0/1 on node1: sum of ranks 0.0" in capsys.readouterr().out

    assert cancel_main([job_id]) == 0
    assert f"cancelled job {job_id}" in capsys.readouterr().out
    assert wait_for_state(job_id, TERMINAL_STATES, timeout_s=60) == "CANCELLED"
    followed, _ = follower.communicate(timeout=60)
    assert "sum of ranks" in followed and f"job {job_id} ended: CANCELLED" in followed
    assert status_main([job_id]) == 0
    assert "CANCELLED" in capsys.readouterr().out


def test_dry_run_submits_nothing(slurm_cluster, runs_root, known_job_ids):
    before = known_job_ids()
    cfg = compose_config(["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1",
                          f"run.output_root={runs_root}"])
    assert run_preflight(cfg) == []
    plan = render_plan(cfg, runs_root / "would-be-run-dir")
    assert "#SBATCH --nodes=2" in plan and "torch.distributed.run" in plan
    # And through the CLI, as a user would type it.
    done = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "train", "cluster=slurm_local", "cluster.nodes=2",
         "cluster.nproc_per_node=1", f"run.output_root={runs_root}", "--dry-run"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --nodes=2" in done.stdout and "--rdzv-backend=c10d" in done.stdout
    assert "preflight passed" in done.stdout and "dry run: nothing was launched" in done.stdout
    time.sleep(1)
    assert known_job_ids() <= before, f"new jobs: {known_job_ids() - before}"
    assert not list(runs_root.rglob("slurm_job.json"))


def test_failed_job_is_reported(slurm_cluster, runs_root, capsys):
    _, run_dir, info = launch(runs_root, ["cluster.nodes=1", "cluster.nproc_per_node=1"],
                              worker_module="tests.slurm.no_such_payload")
    job_id = info["job_id"]
    assert wait_for_state(job_id, TERMINAL_STATES, timeout_s=120) == "FAILED"
    assert "torchrun on node 0 exited with code 1" in node_logs(run_dir, job_id)
    capsys.readouterr()
    status_main([str(run_dir)])
    assert f"job {job_id}: FAILED" in capsys.readouterr().out


def test_start_cluster_is_idempotent(slurm_cluster):
    pids = sorted(p.read_text() for p in Path(slurm_cluster).parents[1].glob("run/*.pid"))
    started = time.time()
    done = subprocess.run(["bash", str(REPO_ROOT / "slurm" / "start-cluster.sh"), "--nodes", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.time() - started < 15 and "cluster ready: 2 node(s)" in done.stdout
    assert "up" not in done.stdout.replace("cluster ready", "")  # no daemon was (re)started
    assert sorted(p.read_text() for p in Path(slurm_cluster).parents[1].glob("run/*.pid")) == pids


def test_queued_job_runs_the_code_it_was_submitted_with(slurm_cluster, runs_root):
    # Two nodes: the rendezvous (on the port node 0 publishes) has to form before the payload runs.
    _, run_dir, info = launch(runs_root, ["cluster.nodes=2", "cluster.nproc_per_node=1"],
                              worker_module="tests.slurm.payload_code_origin")
    code = run_dir / "code"
    assert (code / "launcher" / "slurm" / "node.py").is_file() and (code / "recipes" / "sft.py").is_file()
    assert f"export PYTHONPATH={code}" in (run_dir / "submitted.sbatch").read_text()
    assert_completed(run_dir, info["job_id"])
    origin = json.loads((run_dir / "code_origin.json").read_text())
    # The ranks imported the snapshot (not the checkout), ran in it, and still resolve data in the checkout.
    assert Path(origin["launcher"]).is_relative_to(code) and Path(origin["recipes"]).is_relative_to(code)
    assert Path(origin["cwd"]) == code and Path(origin["code_root"]) == code
    assert Path(origin["repo_root"]) == REPO_ROOT.resolve()
    port = int((run_dir / "logs" / f"rdzv_port.{info['job_id']}.0").read_text())
    for node in (0, 1):
        assert f"--rdzv-endpoint=127.0.0.1:{port}" in (run_dir / "logs" / f"node{node}" / "command.txt").read_text()
