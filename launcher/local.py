"""cluster=local: run the ranks on this host.

One process runs in the launcher's own process (no torchrun start-up cost); more run under torchrun
``--standalone`` (a free port, so two local runs never collide), with a log file per rank.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from launcher.config.schema import Config, recipe_module
from launcher.rundir import child_env


def torchrun_command(cfg: Config, run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cfg.cluster.nproc_per_node}",
        f"--log-dir={run_dir / 'logs' / 'torchrun'}",
        "--tee=3",
        "-m", recipe_module(cfg), "--run-dir", str(run_dir),
    ]


def describe_local(cfg: Config) -> str:
    n = cfg.cluster.nproc_per_node
    if n == 1:
        return f"# local: one process, in the launcher's own process: python -m {recipe_module(cfg)} --run-dir RUN_DIR"
    return "# local: " + " ".join(torchrun_command(cfg, Path("RUN_DIR")))


def run_local(cfg: Config, run_dir: Path) -> int:
    run_dir = Path(run_dir)
    if cfg.cluster.nproc_per_node == 1:
        from launcher.training.entry import main_in_process

        return main_in_process(run_dir)
    cmd = torchrun_command(cfg, run_dir)
    env = child_env(cfg.cluster.env)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(cmd, env=env)
