"""logger=wandb without credentials: a one-line note, and a real offline W&B run in the run dir."""
from __future__ import annotations

import json

from launcher.cli import main as cli_main

FAST = ["train.max_steps=3", "train.micro_batch_size=4", "train.log_every=1", "data.max_samples=100",
        "train.eval_max_batches=1", "train.exact_match_samples=0"]


def test_wandb_offline_without_credentials(output_root, tmp_path, monkeypatch, capsys):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SILENT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with W&B credentials
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    code = cli_main(["train", f"run.output_root={output_root}", "logger=wandb", "logger.project=launcher-test",
                     *FAST, "--name", "wb"])
    out = capsys.readouterr().out
    assert code == 0
    notes = [line for line in out.splitlines() if line.startswith("W&B:")]
    assert len(notes) == 1 and "offline" in notes[0]
    (run_dir,) = list(output_root.glob("wb/*/*"))
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    history = list(offline.glob("*.wandb"))
    assert history and history[0].stat().st_size > 0, "the offline run holds no history"
    steps = [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["kind"] == "train"]
    assert steps == [1, 2, 3]
