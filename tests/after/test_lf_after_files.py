"""LLaMA-Factory's own prediction, merge and inference files (tests/llamafactory/lf_examples, copied from LF's
examples/ with its licence) through ``launcher predict|export|chat|serve --from-llamafactory``, with only the
model, the adapter (a tiny trained run's, reached through the output_dir links training makes) and the data
substituted; keys we cannot honour are refused in one line naming the key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from launcher.cli import main as cli_main
from launcher.config.llamafactory_after import command_for, run_dir_of, translate_after
from launcher.errors import ConfigError
from launcher.training.model_links import link_final_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "llamafactory" / "lf_examples"


def lf_file(tmp_path: Path, example: str, **changes) -> Path:
    """LF's example ``example`` with ``changes`` applied (None removes a key), written under tmp_path."""
    data = yaml.safe_load((EXAMPLES / example).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / Path(example).name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def lf_output_dir(run_dir: Path, where: Path) -> Path:
    """What ``launcher train --from-llamafactory`` leaves in LF's output_dir: links to the run's final model."""
    assert link_final_model(run_dir / "model", where) == []
    return where


def test_run_dir_is_found_from_the_run_its_model_or_the_links(lora_run, tmp_path):
    assert run_dir_of(lora_run) == lora_run and run_dir_of(lora_run / "model") == lora_run
    assert run_dir_of(lf_output_dir(lora_run, tmp_path / "saves" / "sft")) == lora_run
    assert run_dir_of(tmp_path) is None


def test_llamafactorys_predict_file_predicts_and_links_into_output_dir(lora_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lf_output_dir(lora_run, tmp_path / "saves" / "llama3-8b" / "lora" / "sft")  # LF's adapter_name_or_path
    path = lf_file(tmp_path, "extras/nlg_eval/llama3_lora_predict.yaml",
                   model_name_or_path=str(lora_run / "base_model"), eval_dataset="tasks_eval",
                   dataset_dir=str(REPO / "data"), template="chatml", max_samples=2, max_new_tokens=4)
    assert command_for(yaml.safe_load(path.read_text())) == "predict"
    # train dispatches a do_predict file to predict, as llamafactory-cli train runs it
    assert cli_main(["train", "--from-llamafactory", str(path), "--dry-run", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "do_predict: true -> launcher predict" in captured.err
    command = captured.out.split("# equivalent command:\n")[1].splitlines()[0]
    assert command.startswith(f"launcher predict {lora_run} ")
    for part in ("--dataset tasks_eval", "--limit 2", "--batch-size 1", "--max-new-tokens 4", "data.template=chatml",
                 f"data.dataset_dir={REPO / 'data'}", f"--link-to {tmp_path / 'saves/llama3-8b/lora/predict'}"):
        assert part in command, part
    assert "built in here" in captured.err and "predict_with_generate" in captured.err
    assert cli_main(["predict", "--from-llamafactory", str(path), "--no-progress"]) == 0
    out = tmp_path / "saves" / "llama3-8b" / "lora" / "predict"  # LF's output_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 2 and (out / "predictions.jsonl").is_symlink()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2


def test_llamafactorys_merge_files_export_lora_and_full_runs(lora_run, full_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lf_output_dir(lora_run, tmp_path / "saves" / "qwen3-4b" / "lora" / "sft")
    path = lf_file(tmp_path, "merge_lora/qwen3_lora_sft.yaml", model_name_or_path=str(lora_run / "base_model"))
    assert cli_main(["export", "--from-llamafactory", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"launcher export {lora_run} --out {tmp_path / 'saves/qwen3_sft_merged'} --max-shard-size 5GB" in printed
    merged = tmp_path / "saves" / "qwen3_sft_merged"
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()

    lf_output_dir(full_run, tmp_path / "saves" / "qwen3-4b" / "full" / "sft")
    path = lf_file(tmp_path, "merge_lora/qwen3_full_sft.yaml", export_dir="saves/full_merged")
    assert cli_main(["export", "--from-llamafactory", str(path)]) == 0
    assert json.loads((tmp_path / "saves/full_merged/export_info.json").read_text())["run_dir"] == str(full_run)


def test_llamafactorys_inference_files_chat_and_serve(lora_run, tiny_hf_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lf_output_dir(lora_run, tmp_path / "saves" / "qwen3-4b" / "lora" / "sft")
    path = lf_file(tmp_path, "inference/qwen3_lora_sft.yaml", model_name_or_path=str(lora_run / "base_model"))
    for command in ("chat", "serve"):
        assert cli_main([command, "--from-llamafactory", str(path), "--dry-run"]) == 0
        captured = capsys.readouterr()
        assert f"launcher {command} {lora_run}\n" in captured.out and "nothing was run" in captured.out
        assert "template: 'qwen3_nothink' -> the run's" in captured.err
    # a plain model folder: serve takes it, chat (which works on a run) refuses in one line
    path = lf_file(tmp_path, "inference/qwen3.yaml", model_name_or_path=str(tiny_hf_model))
    assert cli_main(["serve", "--from-llamafactory", str(path), "--dry-run", "--port", "8123"]) == 0
    assert f"launcher serve {tiny_hf_model} --port 8123" in capsys.readouterr().out
    assert cli_main(["chat", "--from-llamafactory", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model_name_or_path" in err[0] and "launcher serve" in err[0]


def test_llamafactorys_inference_file_chats(lora_run, tmp_path, repo_env):
    """`launcher chat --from-llamafactory` runs the chat (a scripted turn on standard input) with the file's
    generation keys."""
    import subprocess
    import sys

    lf_output_dir(lora_run, tmp_path / "saves" / "qwen3-4b" / "lora" / "sft")
    path = lf_file(tmp_path, "inference/qwen3_lora_sft.yaml", model_name_or_path=str(lora_run / "base_model"),
                   max_new_tokens=3)
    log = tmp_path / "chat.jsonl"
    proc = subprocess.run([sys.executable, "-m", "launcher", "chat", "--from-llamafactory", str(path), "--log", str(log)],
                          input="Add the two numbers.\n/exit\n", capture_output=True, text=True, env=repo_env,
                          cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"launcher chat {lora_run} --max-new-tokens 3 --log {log}" in proc.stdout
    assert proc.stdout.count("Assistant: ") == 1
    turns = [json.loads(line) for line in log.read_text().splitlines() if json.loads(line)["event"] == "turn"]
    assert [t["user"] for t in turns] == ["Add the two numbers."]


@pytest.mark.parametrize("example, command, changes, refusal", [
    ("merge_lora/qwen3_gptq.yaml", "export", {}, "export_quantization_bit: not supported: GPTQ"),
    ("inference/qwen3_lora_sft.yaml", "serve", {"infer_backend": "vllm"}, "infer_backend: 'vllm' is not supported"),
    ("inference/qwen3_lora_sft.yaml", "chat", {"top_k": 5}, "top_k: not supported"),
    ("inference/qwen3_lora_sft.yaml", "serve", {"temperature": 0.3}, "temperature: not supported by launcher serve"),
    ("inference/qwen3_lora_sft.yaml", "chat", {"model_name_or_path": "Qwen/Qwen3-4B-Instruct-2507"},
     "model_name_or_path: 'Qwen/Qwen3-4B-Instruct-2507', but the adapter at saves/qwen3-4b/lora/sft was trained on"),
    ("inference/qwen3_lora_sft.yaml", "chat", {"adapter_name_or_path": "saves/elsewhere"},
     "adapter_name_or_path: "),
    ("inference/qwen3_lora_sft.yaml", "chat", {"lora_rank": 8}, "lora_rank: not a key launcher chat"),
    ("extras/nlg_eval/llama3_lora_predict.yaml", "predict", {"do_train": True}, "do_train: training and prediction"),
    ("extras/nlg_eval/llama3_lora_predict.yaml", "chat", {}, "do_predict: a prediction key"),
])
def test_keys_we_cannot_honour_are_refused_naming_the_key(lora_run, tmp_path, monkeypatch, example, command,
                                                         changes, refusal):
    monkeypatch.chdir(tmp_path)
    lf_output_dir(lora_run, tmp_path / "saves" / "qwen3-4b" / "lora" / "sft")
    lf_output_dir(lora_run, tmp_path / "saves" / "llama3-8b" / "lora" / "sft")
    (tmp_path / "saves" / "elsewhere").mkdir()
    lf = yaml.safe_load((EXAMPLES / example).read_text())
    lf.update({"model_name_or_path": str(lora_run / "base_model"), **changes})
    if "gptq" in example:
        lf["adapter_name_or_path"] = "saves/qwen3-4b/lora/sft"
    with pytest.raises(ConfigError) as err:
        translate_after(lf, command, source=example, cwd=tmp_path)
    lines = str(err.value).splitlines()
    assert any(refusal in line for line in lines), lines
    assert all(line.startswith(example) for line in lines)  # each names the file (and line when known)
