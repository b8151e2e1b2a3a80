"""Run dirs: ``outputs/<name>/<YYYY-MM-DD>/<HH-MM-SS>``, created exclusively, never overwritten.

A run dir holds everything needed to understand and repeat a run: the resolved config (which ranks read),
the overrides as typed, the code version, logs, metrics, checkpoints and the final model.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import yaml

from launcher.config.schema import Config, config_to_dict
from launcher.paths import CONFIG_FILE

SECRET_ENV_VARS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def make_run_dir(output_root: str | Path, name: str, now: Optional[_dt.datetime] = None) -> Path:
    """Create a new, empty run dir; an existing one is never reused (a suffix is added instead)."""
    now = now or _dt.datetime.now()
    parent = Path(output_root) / name / now.strftime("%Y-%m-%d")
    parent.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%H-%M-%S")
    for i in range(1000):
        candidate = parent / (stem if i == 0 else f"{stem}-{i}")
        try:
            candidate.mkdir()  # atomic: fails if another launch took this name
            return candidate.resolve()
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run dir under {parent}")


def write_run_config(run_dir: Path, cfg: Config) -> Path:
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir)))
    path = Path(run_dir) / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
    os.replace(tmp, path)
    return path


def write_overrides(run_dir: Path, overrides: Sequence[str]) -> None:
    (Path(run_dir) / "overrides.txt").write_text("".join(f"{o}\n" for o in overrides))


def write_code_version(run_dir: Path, repo: Path) -> None:
    """Commit and uncommitted diff of the code that launched the run, when it is a git checkout."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "HEAD").strip() or "unknown (not a git checkout)"
    status = git("status", "--porcelain")
    lines = [f"commit: {commit}", f"dirty: {bool(status.strip())}"]
    (Path(run_dir) / "code_version.txt").write_text("\n".join(lines) + "\n")
    diff = git("diff", "HEAD")
    if diff:
        (Path(run_dir) / "code.diff").write_text(diff)


def child_env(extra: Optional[dict] = None) -> dict:
    """Environment for processes we start: secrets pass through the environment, never through files."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env
