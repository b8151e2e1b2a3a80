"""How a rank starts: ``python -m recipes.<method> --run-dir RUN_DIR`` (under torchrun, or alone).

Each recipe module ends with ``sys.exit(recipe_main(RECIPE))``. The rank reads the resolved config the
launcher wrote into the run dir (Hydra is never involved here), joins the process group, and runs the
recipe's setup, train and cleanup. The launcher side names a recipe by its module only (``recipe_module``
from the config); ``run_in_process`` imports it by that name to run one process inside the launcher's own.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from launcher.config.schema import load_run_config, recipe_module
from launcher.errors import LauncherError


def setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "urllib3", "datasets", "transformers.modeling_utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_recipe(recipe_cls, run_dir: Path, evaluations: bool = True, stop_signals: Optional[tuple] = None,
               escalate: tuple = ()) -> dict:
    """Set up and train. ``evaluations=False`` (launcher bench) leaves out every evaluation. ``stop_signals`` /
    ``escalate``: see ``StopFlag`` (None: the signals ``STOP_SIGNALS_ENV`` lists)."""
    from launcher.training.preemption import StopFlag

    # First, so that a preemption signal arriving during setup is kept for the first step boundary.
    stop_flag = StopFlag(run_dir, stop_signals, escalate)
    from launcher.engines.distributed import destroy_distributed, init_distributed, uses_cpu_offload_group
    from launcher.training import progress
    from launcher.training.watchdog import start_watchdog

    cfg = load_run_config(run_dir)
    rank = int(os.environ.get("RANK", 0))
    # Rank 0 locks the run dir before anything is written there (the progress files included), so that a second
    # process started on a live run leaves its files alone; the other ranks learn a refusal after the rendezvous.
    early_lock, early_refusal = lock_run_dir(run_dir) if rank == 0 else (None, None)
    # Before the process group: a rendezvous that never completes is a stall too.
    watchdog = None
    if early_refusal is None:
        watchdog = start_watchdog(run_dir, rank, int(os.environ.get("WORLD_SIZE", 1)), cfg.train.stall_timeout_s,
                                  cfg.train.startup_stall_timeout_s)
    recipe = None
    lock = early_lock
    try:
        dist_info = init_distributed(cfg.parallelism.backend, cpu_offload=uses_cpu_offload_group(cfg.parallelism))
        if watchdog is not None:
            watchdog.device_type = dist_info.device.type
        if dist_info.device.type == "cpu" and dist_info.world_size == 1:
            from launcher.training.host_heap import keep_freed_memory

            keep_freed_memory()  # no page faults for each step's fresh large tensors (see the module)
        setup_logging(dist_info.rank)
        lock = hold_run(dist_info, early_lock, early_refusal)
        if dist_info.is_main:
            progress.record_attempt(run_dir, dist_info.world_size)
        progress.report(progress.DATA)
        recipe = recipe_cls(cfg, run_dir, dist_info)
        recipe.stop_flag = stop_flag
        recipe.evaluations = evaluations
        recipe.setup()
        summary = recipe.train()
        progress.report(progress.DONE)
    finally:
        stop_flag.close()
        if recipe is not None:
            recipe.cleanup()
        destroy_distributed()
        if lock is not None:
            lock.release()
        if watchdog is not None:
            watchdog.stop()
        progress.stop_progress()
    return summary


def lock_run_dir(run_dir: Path):
    """(the run dir's lock, None) or (None, the one-line refusal): launcher/process_lock.py, taken by rank 0."""
    from launcher.process_lock import hold_run_dir

    try:
        return hold_run_dir(run_dir), None
    except LauncherError as exc:
        return None, str(exc)


def hold_run(dist_info, lock, refusal: Optional[str]):
    """Every rank learns whether rank 0 could lock the run dir, so that a refused run ends on every rank with the
    same one line, before anything is written."""
    from launcher.engines.distributed import broadcast_object

    refusal = broadcast_object(refusal if dist_info.is_main else None)
    if refusal:
        if lock is not None:
            lock.release()
        raise LauncherError(refusal)
    return lock


def recipe_main(recipe_cls, argv=None) -> int:
    parser = argparse.ArgumentParser(description=f"Run {recipe_cls.__name__} on this rank.")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_recipe(recipe_cls, args.run_dir.resolve())
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_in_process(run_dir: Path, evaluations: bool = True, stop_signals: Optional[tuple] = None,
                   escalate: tuple = ()) -> dict:
    """One rank in this process: the recipe the run's config names, imported by its module name."""
    cfg = load_run_config(run_dir)
    module = importlib.import_module(recipe_module(cfg))
    return run_recipe(module.RECIPE, Path(run_dir).resolve(), evaluations, stop_signals, escalate)


def main_in_process(run_dir: Path, stop_signals: Optional[tuple] = None, escalate: tuple = ()) -> int:
    """``run_in_process`` with the rank's error handling (one line for a user's error, exit code 2)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_in_process(run_dir, stop_signals=stop_signals, escalate=escalate)
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
