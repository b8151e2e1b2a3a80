"""A complete checkpoint damaged after its COMPLETE marker (cut short, overwritten, a file lost) is detected
from the manifest written at save time, named in one line, and resume falls back to the one before it."""
from __future__ import annotations

import json
import logging

import pytest

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.engines.distributed import init_distributed
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.engines import checkpoint as ckpt
from recipes.sft import SFTRecipe
from tests.resume.helpers import TINY, assert_same_weights, final_weights, raw_train_steps, train_losses

STEPS = 8


class StopAt:
    def __init__(self, recipe, step):
        self.recipe, self.step = recipe, step

    def requested(self) -> bool:  # what the loop asks a StopFlag at each step boundary
        return self.recipe.step >= self.step


def train(root, name, extra=(), stop_at=None, run_dir=None):
    cfg = compose_config([f"run.output_root={root}", f"train.max_steps={STEPS}", *TINY, *extra])
    if run_dir is None:
        run_dir = make_run_dir(root, name)
        write_run_config(run_dir, cfg)
    recipe = SFTRecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    if stop_at is not None:
        recipe.stop_flag = StopAt(recipe, stop_at)
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    return run_dir


# ----------------------------------------------------------------------------- the manifest alone

def sealed(tmp_path):
    d = tmp_path / "step-0000004"
    (d / "shard").mkdir(parents=True)
    (d / "state.pt").write_bytes(bytes(range(256)) * 40)
    (d / "shard" / "rank1.bin").write_bytes(b"x" * 1000)
    (d / "meta.json").write_text('{"step": 4}')
    ckpt.mark_complete(d)
    return d


def test_manifest_records_every_file_and_an_untouched_checkpoint_passes(tmp_path):
    d = sealed(tmp_path)
    manifest = json.loads((d / ckpt.MANIFEST).read_text())["files"]
    assert sorted(manifest) == ["meta.json", "shard/rank1.bin", "state.pt"]
    assert manifest["state.pt"]["size"] == 10240 and len(manifest["state.pt"]["sha256"]) == 64
    assert ckpt.checkpoint_problem(d) is None


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:5000]), "state.pt has 5000 bytes, 10240 when saved"),
    (lambda d: (d / "shard" / "rank1.bin").write_bytes(b"y" * 1000), "shard/rank1.bin changed since it was saved"),
    (lambda d: (d / "meta.json").unlink(), "meta.json is missing"),
    (lambda d: (d / ckpt.MANIFEST).write_text('{"files": {}}'), "manifest.json does not match its COMPLETE marker"),
    (lambda d: (d / ckpt.MANIFEST).unlink(), "manifest.json is missing"),
])
def test_damage_is_named(tmp_path, damage, reason):
    d = sealed(tmp_path)
    damage(d)
    assert reason in ckpt.checkpoint_problem(d)


def test_big_files_are_hashed_at_their_edges_only(tmp_path, monkeypatch):
    """Past HASH_WHOLE_MAX only the first and last HASH_EDGE_BYTES are read; the size still catches a cut."""
    monkeypatch.setattr(ckpt, "HASH_WHOLE_MAX", 4096)
    monkeypatch.setattr(ckpt, "HASH_EDGE_BYTES", 1024)
    d = sealed(tmp_path)
    assert json.loads((d / ckpt.MANIFEST).read_text())["files"]["state.pt"]["sha256"].startswith("edges:")
    data = bytearray((d / "state.pt").read_bytes())
    data[5000] ^= 1  # in the middle: not read, by design
    (d / "state.pt").write_bytes(bytes(data))
    assert ckpt.checkpoint_problem(d) is None
    data[-1] ^= 1  # in the last KiB: caught
    (d / "state.pt").write_bytes(bytes(data))
    assert "changed since it was saved" in ckpt.checkpoint_problem(d)


def test_a_checkpoint_from_before_manifests_is_accepted(tmp_path):
    d = tmp_path / "step-0000002"
    d.mkdir()
    (d / "state.pt").write_bytes(b"old")
    (d / ckpt.COMPLETE).write_text("")
    assert ckpt.checkpoint_problem(d) is None


# ----------------------------------------------------------------------------- resume falls back

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return train(tmp_path_factory.mktemp("ref"), "ref")


@pytest.mark.parametrize("damage", ["truncated", "disk-full"])
def test_resume_skips_a_damaged_latest_checkpoint(reference, output_root, damage, caplog):
    run_dir = train(output_root, damage, ["train.save_every=2", "train.keep_checkpoints=3"], stop_at=6)
    latest = ckpt.latest_checkpoint(run_dir)
    assert latest.name == "step-0000006"
    state = latest / "state.pt"
    size = state.stat().st_size
    if damage == "truncated":  # cut short after COMPLETE was written
        with open(state, "r+b") as fh:
            fh.truncate(size // 2)
    else:  # a full disk: the file's end never reached it, the rest reads as zeros
        state.write_bytes(state.read_bytes()[: size - 4096] + bytes(4096))
    with caplog.at_level(logging.INFO):
        train(output_root, damage, ["train.save_every=2", "train.keep_checkpoints=3"], run_dir=run_dir)
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and "step-0000006" in warnings[0] and "state.pt" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert any("resumed from" in r.getMessage() and "step-0000004" in r.getMessage() for r in caplog.records)
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1))
    assert train_losses(run_dir) == train_losses(reference)
    assert_same_weights(final_weights(run_dir), final_weights(reference))


def test_explicit_resume_of_a_damaged_checkpoint_is_refused(output_root):
    run_dir = train(output_root, "explicit", ["train.save_every=2"], stop_at=2)
    target = ckpt.latest_checkpoint(run_dir)
    (target / "meta.json").write_text('{"step": 2, "world_size": 1}  ')
    cfg = compose_config([f"run.output_root={output_root}", *TINY, f"run.resume={target}"])
    other = make_run_dir(output_root, "other")
    write_run_config(other, cfg)
    with pytest.raises(ConfigError, match=r"run.resume: checkpoint .*step-0000002 is damaged \(meta.json has 30 bytes, \d+ when saved\)"):
        SFTRecipe(cfg, other, init_distributed()).setup()
