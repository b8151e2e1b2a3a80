"""Run dirs: ``outputs/<name>/<YYYY-MM-DD>/<HH-MM-SS>``, created exclusively, never overwritten.

A run dir holds everything needed to understand and repeat a run: the resolved config (which ranks read),
the overrides as typed, the code version, logs, metrics, checkpoints and the final model.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import yaml

from launcher.config.schema import Config, config_to_dict
from launcher.paths import CODE_ROOT, CODE_SNAPSHOT_DIR, CONFIG_FILE, REPO_ROOT, SNAPSHOT_SOURCE_FILE

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


SNAPSHOT_TREES = ("launcher", "recipes", "conf")
"""What a code snapshot holds: the library, the recipes and the config groups (about 1.5 MB; no data)."""


def snapshot_code(run_dir: Path, code_root: Path = CODE_ROOT, checkout: Path = REPO_ROOT) -> Path:
    """Copy the code the ranks will run into RUN_DIR/code, once; returns that folder.

    A plain copy of the trees on disk rather than ``git archive HEAD`` plus ``git diff``: it is exact for
    uncommitted edits and for new files git does not track yet (a diff misses those), needs no git on the
    login node, and takes a few milliseconds for ~160 files. code_version.txt / code.diff still say which
    commit it was. A requeued job or a second submit of the same run dir keeps the first snapshot.
    """
    dest = Path(run_dir) / CODE_SNAPSHOT_DIR
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f".{CODE_SNAPSHOT_DIR}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for tree in SNAPSHOT_TREES:
        if (Path(code_root) / tree).is_dir():
            shutil.copytree(Path(code_root) / tree, tmp / tree,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # The ranks resolve data/ and the default cache against the checkout, not against the snapshot.
    (tmp / SNAPSHOT_SOURCE_FILE).write_text(f"{Path(checkout).resolve()}\n")
    os.replace(tmp, dest)
    return dest


def new_run(cfg: Config, name: str, overrides: Sequence[str], repo: Path) -> Path:
    """A fresh run dir holding what a launch needs: resolved config, overrides as typed, code version and
    the code snapshot the ranks run."""
    run_dir = make_run_dir(cfg.run.output_root, name)
    write_run_config(run_dir, cfg)
    write_overrides(run_dir, overrides)
    write_code_version(run_dir, repo)
    snapshot_code(run_dir)
    return run_dir


def child_env(extra: Optional[dict] = None) -> dict:
    """Environment for processes we start: secrets pass through the environment, never through files."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def run_started(run_dir: Path) -> bool:
    """Whether training got going in ``run_dir``: a metrics record, a checkpoint or a model was written."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    return ((metrics.is_file() and metrics.stat().st_size > 0) or (run_dir / "checkpoints").exists()
            or (run_dir / "model").exists())


def discard_unstarted_run(run_dir: Path) -> bool:
    """Remove the run dir of a launch that failed before training started (and the name/date folders above
    it that this left empty); a run that started keeps its dir and logs. Returns whether it was removed."""
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or run_started(run_dir):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in (run_dir.parent, run_dir.parent.parent):
        try:
            parent.rmdir()  # only when empty: another run of that name or date is left alone
        except OSError:
            break
    return True


def link_final_model(model_dir: Path, target: Path) -> list[str]:
    """Link each file (or folder) of ``model_dir`` into ``target`` by a relative symlink; return what was
    skipped, one line each. Symlinks ``target`` already holds that point below it (an earlier run's) are
    replaced; a real file of the same name is left alone and reported."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for entry in target.iterdir():
        if entry.is_symlink() and not os.path.isabs(os.readlink(entry)) \
                and root in Path(os.path.normpath(target / os.readlink(entry))).resolve().parents:
            entry.unlink()
    skipped = []
    for item in sorted(model_dir.iterdir()):
        link = target / item.name
        if link.exists() or link.is_symlink():
            skipped.append(f"{link} exists and is not a link this launcher made; left as it is")
            continue
        link.symlink_to(os.path.relpath(item.resolve(), root))
    return skipped
