"""Pure rendering: golden sbatch script and torchrun command, port, head-node resolution. No cluster needed.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 pytest tests/slurm/test_render.py
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.slurm.head_node import HeadNodeError, parse_hostnames, parse_node_addr, resolve_head_node
from launcher.slurm.render import format_command, port_for_job, render_sbatch, render_torchrun_command
from launcher.launch.slurm_submit import render_plan

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = "/shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00"
PYTHON = "/opt/venv/bin/python"
REPO = f"{RUN_DIR}/code"
"""What submit passes: the run's code snapshot, which the job puts on PYTHONPATH (not the live checkout)."""

A100_OVERRIDES = [
    "cluster=slurm_a100",
    "cluster.nodes=4",
    "cluster.account=proj42",
    "cluster.qos=high",
    "cluster.partition=gpu",
    "cluster.setup=[module load cuda/12.4,source /opt/venv/bin/activate]",
    "+cluster.sbatch_extra.reservation=llm",
    "+cluster.sbatch_extra.mail-type=END",
]


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 if intended)"


def test_golden_sbatch_multinode_gpu():
    cfg = compose_config(A100_OVERRIDES)
    script = render_sbatch(cfg, RUN_DIR, python=PYTHON, repo_root=REPO)
    _check_golden("sbatch_a100_4nodes.sh", script)
    # The facts the golden file pins, spelled out:
    assert "#SBATCH --nodes=4\n" in script
    assert "#SBATCH --ntasks-per-node=1\n" in script  # one task per node, never one per GPU
    assert "#SBATCH --gpus-per-node=8\n" in script
    assert "#SBATCH --signal=USR2@120\n" in script and "#SBATCH --requeue\n" in script
    assert "#SBATCH --exclusive\n" in script and "#SBATCH --mem=480GB\n" in script
    assert "#SBATCH --account=proj42\n" in script and "#SBATCH --qos=high\n" in script
    assert "#SBATCH --reservation=llm\n" in script and "#SBATCH --mail-type=END\n" in script
    assert "module load cuda/12.4\n" in script and "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1\n" in script
    assert f"export PYTHONPATH={RUN_DIR}/code${{PYTHONPATH:+:$PYTHONPATH}}\n" in script
    assert f"#SBATCH --chdir={RUN_DIR}/code\n" in script  # `python -m` looks in the cwd first


def test_golden_torchrun_command():
    cfg = compose_config(A100_OVERRIDES)
    argv = render_torchrun_command(cfg, RUN_DIR, "10.0.0.11", port_for_job(123456), "123456", 1, python=PYTHON)
    _check_golden("torchrun_a100_node1.sh", format_command(argv) + "\n")
    assert "--nnodes=4" in argv and "--nproc-per-node=8" in argv
    assert "--rdzv-endpoint=10.0.0.11:23456" in argv and "--rdzv-conf=is_host=0" in argv
    head = render_torchrun_command(cfg, RUN_DIR, "10.0.0.11", 23456, "123456", 0, python=PYTHON)
    assert "--rdzv-conf=is_host=1" in head


def test_render_is_deterministic():
    cfg = compose_config(A100_OVERRIDES)
    assert render_sbatch(cfg, RUN_DIR, PYTHON, REPO) == render_sbatch(compose_config(A100_OVERRIDES), RUN_DIR, PYTHON, REPO)


def test_port_for_job():
    assert port_for_job(1) == 20001
    assert port_for_job("123456") == 23456
    assert port_for_job(5) != port_for_job(6)
    assert all(20000 <= port_for_job(j) < 30000 for j in (0, 9999, 10000, 987654321))
    with pytest.raises(ValueError):
        port_for_job("12_x")  # an array task "12_3" is fine (tests/slurm/test_rdzv_port.py)


SHOW_NODE = """NodeName=gpu017 Arch=x86_64 CoresPerSocket=32
   CPUAlloc=0 CPUEfctv=64 CPUTot=64 CPULoad=0.01
   NodeAddr=10.1.2.17 NodeHostName=gpu017 Version=22.05.8
"""


def test_resolve_head_node_uses_nodelist_and_nodeaddr():
    calls = []

    def scontrol(args):
        calls.append(args)
        if args[:2] == ["show", "hostnames"]:
            assert args[2] == "gpu[017-020]"
            return "gpu017\ngpu018\ngpu019\ngpu020\n"
        assert args == ["show", "node", "gpu017"]
        return SHOW_NODE

    assert resolve_head_node("gpu[017-020]", 4, scontrol) == ("gpu017", "10.1.2.17")
    assert parse_hostnames("a\n\nb\n") == ["a", "b"]
    assert parse_node_addr("NodeName=x") is None


def test_head_node_never_localhost_on_multinode():
    def scontrol(args):
        return "node1\nnode2\n" if args[1] == "hostnames" else "NodeName=node1 NodeAddr=localhost\n"

    with pytest.raises(HeadNodeError, match="NodeAddr"):
        resolve_head_node("node[1-2]", 2, scontrol)
    assert resolve_head_node("node1", 1, lambda a: "node1\n" if a[1] == "hostnames" else "NodeAddr=localhost") == (
        "node1", "localhost")
    with pytest.raises(HeadNodeError, match="SLURM_JOB_NODELIST"):
        resolve_head_node("", 2, scontrol)


def test_secret_in_cluster_env_is_refused():
    cfg = compose_config(["cluster=slurm_local", "+cluster.env.WANDB_API_KEY=abc123"])
    with pytest.raises(ConfigError, match="cluster.env.WANDB_API_KEY: looks like a secret, and secrets are never written"):
        render_plan(cfg, RUN_DIR)


def test_reserved_sbatch_option_is_refused():
    cfg = compose_config(["cluster=slurm_local", "+cluster.sbatch_extra.ntasks-per-node=8"])
    with pytest.raises(ConfigError, match=r"cluster.sbatch_extra.ntasks-per-node: set by the launcher; use cluster.nodes"):
        render_plan(cfg, RUN_DIR)


def test_render_plan_shows_script_and_per_node_command(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    cfg = compose_config(["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1"])
    plan = render_plan(cfg, RUN_DIR, python=PYTHON)
    assert "#SBATCH --nodes=2" in plan
    assert "-m torch.distributed.run \\\n  --nnodes=2 \\\n  --nproc-per-node=1" in plan
    # The node-side values stay shell variables, expanded where the command is pasted; nothing else expands.
    assert '--rdzv-endpoint="$HEAD_ADDR":"$PORT"' in plan and '--rdzv-id="$SLURM_JOB_ID"' in plan
    assert "hf_secret_value_123" not in plan


def test_nccl_network_keys_are_exported():
    cfg = compose_config([*A100_OVERRIDES, "cluster.nccl_socket_ifname=ib0", "cluster.nccl_ib_hca='mlx5_0,mlx5_1'"])
    script = render_sbatch(cfg, RUN_DIR, python=PYTHON, repo_root=REPO)
    assert "export NCCL_SOCKET_IFNAME=ib0\n" in script and "export NCCL_IB_HCA=mlx5_0,mlx5_1\n" in script
    # Unset: nothing exported, NCCL picks; cluster.env wins over the key.
    assert "NCCL_SOCKET_IFNAME" not in render_sbatch(compose_config(A100_OVERRIDES), RUN_DIR, python=PYTHON,
                                                     repo_root=REPO)
    both = compose_config([*A100_OVERRIDES, "cluster.nccl_socket_ifname=ib0", "+cluster.env.NCCL_SOCKET_IFNAME=eth1"])
    text = render_sbatch(both, RUN_DIR, python=PYTHON, repo_root=REPO)
    assert "export NCCL_SOCKET_IFNAME=eth1\n" in text and "NCCL_SOCKET_IFNAME=ib0" not in text


def test_container_image_runs_each_node_task_in_pyxis():
    cfg = compose_config([*A100_OVERRIDES, "cluster.container_image='nvcr.io#nvidia/pytorch:25.01-py3'",  # quoted: # starts a comment for Hydra
                          "cluster.container_mounts=[/data:/data,/models:/models:ro]", "cluster.container_python=python3"])
    script = render_sbatch(cfg, RUN_DIR, python=PYTHON, repo_root=REPO)
    srun = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1, script
    # (quoted by submitit's renderer: # would start a shell comment)
    assert (f"'--container-image=nvcr.io#nvidia/pytorch:25.01-py3' --container-mounts=/data:/data,/models:/models:ro,"
            f"{RUN_DIR}:{RUN_DIR} --container-workdir={REPO}") in srun[0]
    # The image's Python runs the task (the submitting one's path is not in the image), and its torchrun.
    assert srun[0].endswith(f"python3 -u -m submitit.core._submit {RUN_DIR}/slurm") and PYTHON not in srun[0]
    argv = render_torchrun_command(cfg, RUN_DIR, "10.0.0.11", 23456, "123456", 0, python="/usr/bin/python3.12")
    assert argv[:3] == ["python3", "-m", "torch.distributed.run"]
    plan = render_plan(cfg, RUN_DIR, python=PYTHON)
    assert "--container-image=nvcr.io#nvidia/pytorch:25.01-py3" in plan and "in the container" in plan
    # Without the key nothing changes: the golden script has no container option.
    assert "--container" not in render_sbatch(compose_config(A100_OVERRIDES), RUN_DIR, python=PYTHON, repo_root=REPO)


def test_container_prefix_goes_before_torchrun():
    cfg = compose_config([*A100_OVERRIDES, "cluster.container_prefix='apptainer exec --nv -B /data /img/l.sif'"])
    argv = render_torchrun_command(cfg, RUN_DIR, "10.0.0.11", 23456, "123456", 1, python=PYTHON)
    assert argv[:7] == ["apptainer", "exec", "--nv", "-B", "/data", "/img/l.sif", "python"]
    assert argv[7:9] == ["-m", "torch.distributed.run"] and argv[-3:] == ["recipes.sft", "--run-dir", RUN_DIR]
    script = render_sbatch(cfg, RUN_DIR, python=PYTHON, repo_root=REPO)
    assert "--container" not in script and f"{PYTHON} -u -m submitit.core._submit" in script  # the task: on the host
    plan = render_plan(cfg, RUN_DIR, python=PYTHON)
    assert "\napptainer exec --nv -B /data /img/l.sif python -m torch.distributed.run \\\n  --nnodes=4 \\\n" in plan


def test_container_keys_are_checked():
    both = compose_config([*A100_OVERRIDES, "cluster.container_image=img", "cluster.container_prefix='apptainer exec x'"])
    with pytest.raises(ConfigError, match="cluster.container_image and cluster.container_prefix: set one"):
        render_plan(both, RUN_DIR)
    mounts = compose_config([*A100_OVERRIDES, "cluster.container_mounts=[/data:/data]"])
    with pytest.raises(ConfigError, match="cluster.container_mounts: only with cluster.container_image"):
        render_plan(mounts, RUN_DIR)
    from launcher.errors import PreflightError
    from launcher.checks.preflight import run_preflight

    local = compose_config(["cluster.container_image=img"])  # the key would be ignored: refused before the run
    with pytest.raises(PreflightError, match="cluster.container_image: containers are for cluster.kind=slurm"):
        run_preflight(local)
