"""VL models through the Trainer: a few steps of full and LoRA SFT and of LoRA DPO on the shapes demo (tiny
Qwen2-VL); the loss falls, the saved model (with its processor files) reloads with the same logits, export
writes the processor files, and chat answers with --image and /image."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from launcher.inference.trained import load_trained_model
from tests.recipe_runs import run_recipe
from tests.vl.helpers import REPO

FAST = ["experiment=vl_demo", "data.max_samples=32", "train.micro_batch_size=4", "train.grad_accum=1",
        "train.max_steps=8", "train.warmup_steps=0", "train.lr_scheduler=constant", "train.exact_match_samples=2",
        "train.eval_max_batches=1", "train.log_every=1"]


def run(recipe_class, output_root, overrides):
    return run_recipe(recipe_class, output_root, [*FAST, *overrides])


def train_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def logits(model, batch):
    keys = ("input_ids", "attention_mask", "position_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids")
    with torch.no_grad():
        return model(**{k: batch[k] for k in keys}, use_cache=False).logits


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    from recipes.sft import SFTRecipe

    recipe, run_dir, summary = run(SFTRecipe, tmp_path_factory.mktemp("vl") / "outputs", ["method.lr=3e-3"])
    return recipe, run_dir, summary


def test_sft_full_learns_and_reloads(sft_run):
    recipe, run_dir, summary = sft_run
    values = train_losses(run_dir)
    assert len(values) == 8 and values[-1] < values[0] - 1.0, values
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["exact_match_after"] is not None  # the check ran with images
    batch = recipe.data.collate(recipe.data.eval[:2])
    recipe.model.eval()
    reloaded, _ = load_trained_model(run_dir)
    assert type(reloaded).__name__ == "Qwen2VLForConditionalGeneration"
    assert torch.allclose(logits(recipe.model, batch), logits(reloaded.eval(), batch), atol=1e-5)
    saved = json.loads((run_dir / "model" / "preprocessor_config.json").read_text())
    assert saved["patch_size"] == 14 and saved["processor_class"] == "Qwen2VLProcessor"
    assert "<|vision_start|><|image_pad|><|vision_end|>" in (run_dir / "model" / "chat_template.jinja").read_text()


def test_freeze_defaults_keep_the_tower_fixed(output_root):
    """LLaMA-Factory's defaults (tower and projector frozen): their weights do not move, the LM's do."""
    from recipes.sft import SFTRecipe

    recipe, run_dir, _ = run(SFTRecipe, output_root, ["model.freeze_vision_tower=true", "model.freeze_projector=true",
                                                      "train.max_steps=2", "train.exact_match_samples=0"])
    trained, _ = load_trained_model(run_dir)
    from tests.vl.helpers import tiny_model

    start = dict(tiny_model("tiny_qwen2_vl", seed=recipe.cfg.train.seed).named_parameters())
    now = dict(trained.named_parameters())
    assert all(torch.equal(start[n], p) for n, p in now.items() if ".visual." in f".{n}")
    assert any(not torch.equal(start[n], p) for n, p in now.items() if "language_model" in n)


def test_lora_sft_and_dpo_with_images(output_root):
    from recipes.dpo import DPORecipe
    from recipes.sft import SFTRecipe

    _, run_dir, summary = run(SFTRecipe, output_root, ["method=lora", "method.lr=1e-2"])
    values = train_losses(run_dir)
    assert values[-1] < values[0] - 0.5, values
    adapter = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    assert "visual" in str(adapter["target_modules"])  # the exclusion pattern, not a suffix list
    recipe, run_dir, summary = run(DPORecipe, output_root, ["method=dpo_lora", "data.datasets=[vl_shapes_prefs]",
                                                            "data.eval_datasets=[vl_shapes_prefs_eval]",
                                                            "method.lr=1e-2", "method.dpo.probe_pairs=8"])
    rows = recipe.data.train
    assert rows[0]["images"] and rows[0]["chosen_input_ids"][:rows[0]["prompt_len"]] == \
        rows[0]["rejected_input_ids"][:rows[0]["prompt_len"]]
    values = train_losses(run_dir)
    assert values[-1] < values[0], values


def test_export_and_chat_with_images(sft_run, tmp_path):
    _, run_dir, _ = sft_run
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "exported"
    proc = subprocess.run([sys.executable, "-m", "launcher", "export", str(run_dir), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "preprocessor_config.json").is_file() and (out / "chat_template.jinja").is_file()
    image = REPO / "data" / "vl_shapes" / "eval" / "0000.png"
    log = tmp_path / "chat.jsonl"
    script = f"What shape are they?\n/image {image}\nAnd the colour?\n/image missing.png\n/exit\n"
    proc = subprocess.run([sys.executable, "-m", "launcher", "chat", str(run_dir), "--image", str(image),
                           "--max-new-tokens", "3", "--log", str(log)],
                          input=script, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "error: /image: image file not found: missing.png" in proc.stdout
    turns = [json.loads(line) for line in log.read_text().splitlines() if '"turn"' in line]
    assert len(turns) == 2
    # the first turn carries the --image picture, the second keeps it and adds the /image one
    assert turns[0]["prompt"].count("<|vision_start|>") == 1 and turns[1]["prompt"].count("<|vision_start|>") == 2


def test_predict_on_an_image_dataset(sft_run):
    """launcher predict with images: batched (left-padded) answers equal one-by-one answers; scores written."""
    _, run_dir, _ = sft_run
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    outs = []
    for batch_size in ("4", "1"):
        proc = subprocess.run([sys.executable, "-m", "launcher", "predict", str(run_dir), "--dataset", "vl_shapes_eval",
                               "--limit", "4", "--max-new-tokens", "3", "--batch-size", batch_size, "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [json.loads(line) for line in (run_dir / "predict" / "vl_shapes_eval" / "predictions.jsonl")
                .read_text().splitlines()]
        assert len(rows) == 4 and all("<|image_pad|>" in r["prompt"] for r in rows)
        outs.append([r["prediction"] for r in rows])
    assert outs[0] == outs[1]


def test_gguf_export_writes_the_language_model_and_says_so(sft_run, tmp_path, capsys):
    """launcher export RUN_DIR --format gguf on a Qwen2-VL run: a Qwen2 file of the language model, read back by
    transformers with the run's text-only logits; the vision tower's absence is said on stderr."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from launcher.cli import main as cli_main

    _, run_dir, _ = sft_run
    out = tmp_path / "vl.gguf"
    assert cli_main(["export", str(run_dir), "--format", "gguf", "--dtype", "f32", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "qwen2" in captured.out and "not in it, so it answers text, not images" in captured.err
    model, _ = load_trained_model(run_dir)
    text = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32)
    ids = torch.tensor([[151644, 872, 198, 3838, 1894, 374, 432, 30, 151645, 198, 151644, 77091, 198]])
    with torch.no_grad():
        ref = model(input_ids=ids, use_cache=False).logits[0]
        got = text(input_ids=ids).logits[0]
    assert (ref - got).abs().max().item() <= 1e-4 * max(ref.abs().max().item(), 1.0)


def test_gguf_export_refuses_qwen3_vl_naming_what_to_do(tmp_path):
    pytest.importorskip("gguf")
    from launcher.export.gguf import GGUFExportError, write_gguf
    from tests.vl.helpers import tiny_model, tokenizer_for

    with pytest.raises(GGUFExportError, match="Qwen2-VL and Qwen2.5-VL .* 'qwen3_vl'.*launcher export RUN_DIR"):
        write_gguf(tiny_model("tiny_qwen3_vl"), tokenizer_for("tiny_qwen3_vl"), tmp_path / "x.gguf", "f16", "x")
    assert not list(tmp_path.iterdir())
