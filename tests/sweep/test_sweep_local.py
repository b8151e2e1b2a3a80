"""cluster=local: a 2-point sweep runs here, one point after the other, and the report reads its files."""
from __future__ import annotations

import json

from launcher.cli import train_main
from launcher.sweep.plan import LOCAL_RESULT, SWEEP_FILE
from launcher.sweep.report import report_main, sweep_rows


def test_local_sequential_sweep_of_two_points(output_root, capsys):
    rc = train_main(["-m", f"run.output_root={output_root}", "train.exact_match_samples=0", "method=lora", "method.lora.r=4,8", "train.max_steps=3",
                     "train.log_every=1", "train.eval_every=0", "data.max_samples=64", "train.eval_max_batches=1",
                     "--name", "local-r"])
    out = capsys.readouterr().out
    assert rc == 0, out
    sweep_dirs = list((output_root / "sweeps" / "local-r").glob("*/*"))
    assert len(sweep_dirs) == 1
    sweep_dir = sweep_dirs[0]
    data = json.loads((sweep_dir / SWEEP_FILE).read_text())
    assert data["cluster"] == "local" and data["swept_keys"] == ["method.lora.r"]
    # The points waited in this process's queue; they ran the code snapshot taken when the sweep was laid out.
    assert (sweep_dir / "code" / "recipes" / "sft.py").is_file()
    # One after the other: the second started after the first ended.
    results = [json.loads((sweep_dir / p["run_dir"] / LOCAL_RESULT).read_text()) for p in data["points"]]
    assert [r["returncode"] for r in results] == [0, 0]
    assert results[0]["ended_at"] <= results[1]["started_at"]
    _, rows = sweep_rows(sweep_dir)
    assert [r["state"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert all(r["final_train_loss"] and r["final_eval_loss"] and r["step"] == 3 for r in rows)
    assert report_main([str(sweep_dir)]) == 0
    assert "2 point(s): 2 completed" in capsys.readouterr().out
    assert (sweep_dir / "sweep.png").exists()
