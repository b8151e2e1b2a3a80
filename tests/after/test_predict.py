"""predict: predictions and metrics for a run's held-out prompts, reproducible from request.yaml."""
from __future__ import annotations

import json
from pathlib import Path

import launcher.inference.predict as predict_module
from launcher.inference.predict_cli import predict_main
from launcher.inference.predict import load_request
from launcher.inference.text_metrics import similarity_metrics


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def written_dir(printed: str) -> Path:
    """The folder ``launcher predict`` says it wrote (each call writes a new one)."""
    line = next(line for line in printed.splitlines() if line.startswith("written: "))
    return Path(line[len("written: "):].split("/predictions.jsonl")[0])


def test_predict_writes_predictions_and_metrics(lora_run, capsys):
    code = predict_main([str(lora_run), "--limit", "5", "--max-new-tokens", "6", "--batch-size", "2", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    out_dir = written_dir(printed)
    assert out_dir.parent == lora_run / "predict" and out_dir.name.startswith("tasks_eval")
    rows = read_jsonl(out_dir / "predictions.jsonl")
    tasks_eval = json.loads((Path(__file__).resolve().parents[2] / "data" / "tasks_eval.json").read_text())[:5]
    assert [r["label"] for r in rows] == [t["output"] for t in tasks_eval]  # dataset order kept despite batching
    for row, task in zip(rows, tasks_eval):
        assert task["input"] in row["prompt"] and row["prompt"].endswith("<|im_start|>assistant\n")
        assert isinstance(row["prediction"], str)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    recomputed = similarity_metrics([r["prediction"] for r in rows], [r["label"] for r in rows])
    for key, value in recomputed.items():
        assert metrics[key] == value
    assert metrics["n"] == 5 and metrics["model"] == "final model" and metrics["args"]["max_new_tokens"] == 6
    assert 0 < metrics["generated_tokens"] <= 5 * 6
    assert "rouge-1" in printed and "bleu-4" in printed

    # request.yaml holds what a SLURM job needs to run it again.
    cfg, run_dir, args = load_request(out_dir / "request.yaml")
    assert run_dir == lora_run.resolve() and args.limit == 5 and cfg.method.name == "lora"


def test_predict_other_dataset_by_override_and_checkpoint(lora_run, capsys):
    code = predict_main([str(lora_run), "data.eval_datasets=[tasks]", "--limit", "3", "--max-new-tokens", "4",
                         "--checkpoint", "step-2", "--no-progress"])
    assert code == 0
    out_dir = written_dir(capsys.readouterr().out)
    assert out_dir.name.startswith("tasks@step-2")
    assert len(read_jsonl(out_dir / "predictions.jsonl")) == 3
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "tasks" and metrics["model"] == "checkpoint step-0000002"


def test_predict_scores_and_order_with_known_answers(lora_run, monkeypatch, capsys):
    """Generation replaced by the reference answers (batches are sorted by length): every metric is exact."""
    from launcher.inference.prompts import held_out_samples, prompt_renderer
    from launcher.inference.generation import prompt_and_reference
    from launcher.inference.trained import load_run_model

    _, tokenizer, cfg, _ = load_run_model(lora_run)
    render = prompt_renderer(tokenizer, cfg)
    answer_of = {}
    for sample in held_out_samples(cfg)[1][:7]:
        conversation, reference = prompt_and_reference(sample)
        answer_of[render(conversation, None)] = reference

    def fake_generate(model, tok, prompts, args, device, *vision):  # vision: VL runs only
        return [answer_of[p] for p in prompts], [len(answer_of[p]) for p in prompts]

    monkeypatch.setattr(predict_module, "generate_batch", fake_generate)
    assert predict_main([str(lora_run), "--limit", "7", "--batch-size", "3", "--no-progress"]) == 0
    out_dir = written_dir(capsys.readouterr().out)
    rows = read_jsonl(out_dir / "predictions.jsonl")
    assert all(r["prediction"] == r["label"] for r in rows)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["exact_match"] == 100.0 and metrics["rouge-1"] == 100.0 and metrics["rouge-l"] == 100.0


def test_each_call_writes_a_new_folder_and_keeps_the_earlier_ones(lora_run, capsys):
    args = [str(lora_run), "--limit", "2", "--max-new-tokens", "3", "--no-progress"]
    assert predict_main(args) == 0
    first = written_dir(capsys.readouterr().out)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    (first / "notes.txt").write_text("mine")
    assert predict_main(args + ["--seed", "7"]) == 0
    second = written_dir(capsys.readouterr().out)
    assert second != first and second.parent == first.parent
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.name != "notes.txt"} == before
    assert (first / "notes.txt").read_text() == "mine"
    assert load_request(second / "request.yaml")[2].seed == 7 and load_request(first / "request.yaml")[2].seed == 42
