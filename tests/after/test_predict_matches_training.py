"""What training saw is what predict sees: ``launcher predict`` on a default-like run's held-out prompts gives
the exact match (and the answers) that training reported at its end.

Training answers with the tokenizer it built; predict reloads the one saved in RUN_DIR/model with
AutoTokenizer. Before the char tokenizer was built as the class AutoTokenizer reloads it as, the reloaded one
dropped every space and newline: the prompts changed and the default run's 27.5% became 0.0%.
"""
from __future__ import annotations

import json

from launcher.inference.predict_cli import predict_main
from tests.after.conftest import train_run

N = 16


def test_predict_reproduces_the_answers_and_exact_match_training_reported(tmp_path, capsys):
    """The default config (tiny_qwen2, builtin:chars, data=tasks), 2 steps: a barely trained model answers
    with near-random characters, so its answers are a fingerprint of the exact prompt ids it was given (a
    well-trained one would need ~1,900 steps, too long for a test on this machine)."""
    run_dir = train_run(tmp_path, "default", ["train.max_steps=2", f"train.exact_match_samples={N}"])
    summary = json.loads((run_dir / "summary.json").read_text())
    capsys.readouterr()
    # Training answered with max_new_tokens=16 (data=tasks); predict the same prompts the same way.
    assert predict_main([str(run_dir), "--limit", str(N), "--max-new-tokens", "16", "--batch-size", "16",
                         "--no-progress"]) == 0
    out_dir = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("written: "))
    out_dir = out_dir[len("written: "):].split("/predictions.jsonl")[0]
    metrics = json.loads(open(f"{out_dir}/metrics.json").read())
    rows = [json.loads(line) for line in open(f"{out_dir}/predictions.jsonl")]
    trained = [e["prediction"] for e in summary["exact_match_examples"]]
    print(f"\ntraining reported {100 * summary['exact_match_after']:.1f}%, predict {metrics['exact_match']:.1f}%"
          f" ({N} prompts); training's answers {trained}, predict's {[r['prediction'] for r in rows[:5]]}")
    assert sum(len(a) for a in trained) >= 20, "answers too short to tell the prompts apart"
    assert [r["prediction"] for r in rows[:5]] == trained
    assert metrics["exact_match"] == round(100 * summary["exact_match_after"], 4)
