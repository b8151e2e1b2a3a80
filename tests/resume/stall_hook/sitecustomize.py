"""Test-only fault injection, loaded by every Python process that has this folder on PYTHONPATH.

With ``LAUNCHER_TEST_STALL_CHECKPOINT_STEP=STEP:SECONDS`` set, rank 0 sleeps SECONDS inside the write of the
checkpoint of STEP (after the state files, before the checkpoint is sealed with its COMPLETE marker), so that a
test can kill the writer there. ``stall-STEP.pid`` beside the checkpoints says who sleeps; it also keeps a
restarted worker from stalling again. The production save path carries no hook: this wraps
``launcher.engines.checkpoint.seal_checkpoint`` when that module is imported.
"""
import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path

SPEC = os.environ.get("LAUNCHER_TEST_STALL_CHECKPOINT_STEP")
TARGET = "launcher.engines.checkpoint"


def _patch(module) -> None:
    stall_step, seconds = (int(x) for x in SPEC.split(":"))
    seal = module.seal_checkpoint

    def stalled_seal(tmp_dir, meta, *args, **kwargs):
        marker = Path(tmp_dir).parent / f"stall-{meta['step']}.pid"
        if meta["step"] == stall_step and not marker.exists():
            marker.write_text(str(os.getpid()))
            print(f"test hook: stalling {seconds}s inside the write of checkpoint step {stall_step}"
                  f" (pid {os.getpid()})", file=sys.stderr, flush=True)
            time.sleep(seconds)
        return seal(tmp_dir, meta, *args, **kwargs)

    module.seal_checkpoint = stalled_seal


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if SPEC:
    sys.meta_path.insert(0, _PatchOnImport())
