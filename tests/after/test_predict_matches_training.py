"""What training saw is what predict sees, on a run of the default config (tiny_qwen2, builtin:chars, data=tasks).

Training tokenizes with the tokenizer it built; predict, chat and export reload the one saved in RUN_DIR/model
with AutoTokenizer. Before the char tokenizer was built as the class AutoTokenizer reloads it as, the reloaded
one dropped every space and newline: the default run reported 27.5% held-out exact match and predict gave 0.0%.
"""
from __future__ import annotations

import json

from launcher.data.templates import choose_renderer
from launcher.data.tokenize import IGNORE_INDEX, tokenize_sample
from launcher.inference.generation import prompt_and_reference
from launcher.inference.predict_cli import predict_main
from launcher.inference.prompts import held_out_samples, prompt_renderer
from launcher.models.tokenizers import load_tokenizer
from launcher.inference.trained import load_run_model
from tests.after.conftest import train_run

N = 16


def test_predict_sees_the_ids_training_saw_and_reproduces_its_exact_match(tmp_path, capsys):
    # 2 steps: a well-trained model needs ~1,900 (minutes on a free 2-core machine, too long for a test).
    run_dir = train_run(tmp_path, "default", ["train.max_steps=2", f"train.exact_match_samples={N}"])

    # Token level: every held-out prompt, as predict renders it and the reloaded tokenizer encodes it, is the
    # start of the row training made of that sample; the trained answer decodes back to the reference.
    _, reloaded, cfg, _ = load_run_model(run_dir)
    built = load_tokenizer(cfg.model)
    renderer, _ = choose_renderer(built, cfg.data.template)
    render = prompt_renderer(reloaded, cfg)
    _, samples = held_out_samples(cfg)
    for sample in samples[:N]:
        conversation, reference = prompt_and_reference(sample)
        prompt_ids = reloaded(render(conversation, None), add_special_tokens=False)["input_ids"]
        row = tokenize_sample(built, renderer, sample, cfg.data.cutoff_len)[0]
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids, reference
        answer = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
        assert reloaded.decode(answer, skip_special_tokens=True).strip() == reference

    # Command level: launcher predict on the same prompts, answered the same way (greedy, max_new_tokens=16
    # as data=tasks sets for training), gives the answers and exact match that training reported.
    summary = json.loads((run_dir / "summary.json").read_text())
    capsys.readouterr()
    assert predict_main([str(run_dir), "--limit", str(N), "--max-new-tokens", "16", "--batch-size", "16",
                         "--no-progress"]) == 0
    out_dir = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("written: "))
    out_dir = out_dir[len("written: "):].split("/predictions.jsonl")[0]
    metrics = json.loads(open(f"{out_dir}/metrics.json").read())
    rows = [json.loads(line) for line in open(f"{out_dir}/predictions.jsonl")]
    assert [r["prediction"] for r in rows[:5]] == [e["prediction"] for e in summary["exact_match_examples"]]
    assert metrics["exact_match"] == round(100 * summary["exact_match_after"], 4)
