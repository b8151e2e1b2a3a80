"""Issue 29 item 7: a damaged newest checkpoint must not eat the good ones. With keep_checkpoints=1 and the only
checkpoint damaged, resume used to start from step 0 and retention then deleted every new checkpoint right after
saving it (it counted the damaged one as the newest complete one), so a kill left nothing usable."""
from __future__ import annotations

import logging

from launcher.engines import checkpoint as ckpt
from tests.resume.test_checkpoint_integrity import train

KEEP_ONE = ["train.save_every=2", "train.keep_checkpoints=1"]


def sealed(root, step):
    d = root / ckpt.step_dir_name(step)
    d.mkdir(parents=True)
    (d / "state.pt").write_bytes(bytes(range(256)) * 40)
    (d / "meta.json").write_text(f'{{"step": {step}}}')
    ckpt.mark_complete(d)
    return d


def damaged_names(run_dir):
    aside = ckpt.checkpoint_root(run_dir) / ckpt.DAMAGED_DIR
    return sorted(p.name for p in aside.iterdir()) if aside.is_dir() else []


def test_a_damaged_only_checkpoint_is_moved_aside_and_new_ones_survive(output_root, caplog):
    run_dir = train(output_root, "keep1", KEEP_ONE, stop_at=6)
    assert [p.name for p in ckpt.complete_checkpoints(run_dir)] == ["step-0000006"]
    state = ckpt.checkpoint_root(run_dir) / "step-0000006" / "state.pt"
    with open(state, "r+b") as fh:
        fh.truncate(state.stat().st_size // 2)

    # The restarted attempt starts over and is stopped (as by a kill) after its checkpoint at step 4.
    with caplog.at_level(logging.INFO):
        train(output_root, "keep1", KEEP_ONE, stop_at=4, run_dir=run_dir)
    lines = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(lines) == 1 and "step-0000006" in lines[0] and "moved to" in lines[0] and "/damaged/" in lines[0], lines
    assert any("training starts from step 0" in r.getMessage() for r in caplog.records)
    assert [p.name for p in ckpt.complete_checkpoints(run_dir)] == ["step-0000004"], "the good checkpoint was pruned"
    assert ckpt.checkpoint_problem(ckpt.latest_checkpoint(run_dir)) is None
    [aside] = damaged_names(run_dir)
    assert aside.startswith("step-0000006-")

    # The next attempt resumes from that good checkpoint, and retention keeps one good checkpoint throughout.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(output_root, "keep1", KEEP_ONE, run_dir=run_dir)
    assert any("resumed from" in r.getMessage() and "step-0000004" in r.getMessage() for r in caplog.records)
    assert [p.name for p in ckpt.complete_checkpoints(run_dir)] == ["step-0000006"]  # none at the last step
    assert damaged_names(run_dir) == [aside], "a damaged checkpoint is never deleted by retention"


def test_retention_never_deletes_a_good_checkpoint_for_a_damaged_newer_one(tmp_path, caplog):
    """Damage that resume did not see (it happened later): retention checks what it keeps."""
    root = ckpt.checkpoint_root(tmp_path)
    sealed(root, 4)
    bad = sealed(root, 6)
    (bad / "state.pt").write_bytes(b"cut")
    with caplog.at_level(logging.WARNING):
        ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-0000004"]
    assert [n.rsplit("-", 2)[0] for n in damaged_names(tmp_path)] == ["step-0000006"]
    assert any("step-0000006 is damaged (state.pt has 3 bytes" in r.getMessage()
               and "not counted by train.keep_checkpoints" in r.getMessage() for r in caplog.records)


def test_retention_reads_a_kept_checkpoint_once(tmp_path, monkeypatch):
    root = ckpt.checkpoint_root(tmp_path)
    sealed(root, 2)
    calls = []
    real = ckpt.checkpoint_problem
    monkeypatch.setattr(ckpt, "checkpoint_problem", lambda d: calls.append(d) or real(d))
    ckpt.prune_checkpoints(tmp_path, keep=2)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert len(calls) == 1
