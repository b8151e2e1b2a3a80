"""OFT (method=oft), LLaMA-Pro (method=llama_pro), the gradient-checkpointing options and QLoRA's double
quantization.

OFT: peft's orthogonal adapters start as the identity, only they train, the saved adapter reloads (and merges)
with the trained logits; on the tiny Qwen2-VL only the language model is adapted; sharded strategies are refused
at the dry run. LLaMA-Pro: the expanded model's logits equal the original's; training changes only the new blocks;
the saved model loads with AutoModelForCausalLM and has the new layer count.
"""
from __future__ import annotations

import json

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from tests.recipe_runs import assert_reload_gives_same_logits, run_recipe

FAST = ["train.max_steps=6", "train.micro_batch_size=4", "train.log_every=1", "train.eval_every=0",
        "train.warmup_ratio=0", "data.max_samples=48", "train.exact_match_samples=0", "logger=none",
        "data.val_size=4", "train.eval_max_batches=1"]


def run_sft(output_root, overrides):
    from recipes.sft import SFTRecipe

    torch.manual_seed(0)
    return run_recipe(SFTRecipe, output_root, [*FAST, *overrides])


def probe(recipe):
    return recipe.data.collate(recipe.data.eval[:3])


def test_oft_trains_only_its_blocks_saves_an_adapter_that_reloads_and_merges(output_root):
    from launcher.inference.trained import load_run_model

    recipe, run_dir, _ = run_sft(output_root, ["method=oft", "method.lr=5e-3"])
    trainable = [n for n, p in recipe.model.named_parameters() if p.requires_grad]
    assert trainable and all(".oft_" in n for n in trainable), trainable[:5]
    adapter = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "OFT" and adapter["oft_block_size"] == 32
    batch = probe(recipe)
    reloaded, _ = assert_reload_gives_same_logits(recipe, run_dir, batch)
    merged, _, _, _ = load_run_model(run_dir, merge=True)  # what export writes
    with torch.no_grad():
        got = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        want = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with reloaded.disable_adapter():
            base = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert (want - base).abs().max() > 1e-3  # the adapter moved the model


def test_oft_on_the_tiny_qwen2_vl_adapts_the_language_model_only():
    from launcher.engines.model_build import apply_oft
    from tests.vl.helpers import tiny_model

    model = tiny_model("tiny_qwen2_vl")
    ids = torch.randint(0, 100, (1, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    cfg = compose_config(["method=oft", "method.oft.block_size=16"])
    peft_model = apply_oft(model, cfg.method.oft)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and not any("visual" in n for n in trainable)
    assert any("language_model" in n for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, before)  # identity at init


@pytest.mark.parametrize("overrides,match", [
    (["method=oft", "parallelism=fsdp"], "method.finetuning: oft's orthogonal blocks .* use parallelism=ddp or zero2"),
    (["method=oft", "method.oft.r=4"], "method.oft: set r \\(4\\) or block_size \\(32\\), not both"),
    (["method=oft", "method.oft.module_dropout=1.5"], "method.oft.module_dropout"),
    (["method=lora", "method.lora.double_quantization=false"], "applies to 4-bit QLoRA only"),
    (["train.gradient_checkpointing=true", "+train.gradient_checkpointing_kwargs.reentrant=true"],
     "reentrant is not an option of torch.utils.checkpoint"),
    (["method=llama_pro", "method.freeze.llama_pro=false"], "method=llama_pro trains the expanded blocks"),
    (["method=lora", "method.llama_pro.expand=2"], "use method=llama_pro"),
])
def test_bad_combinations_are_refused_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        compose_config(overrides)


def test_oft_block_size_peft_adjusts_is_said_and_zero2_passes_the_dry_run(output_root, caplog):
    import logging

    from launcher.cli import main
    from launcher.engines.model_build import apply_oft
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config(["method=oft", "method.oft.block_size=48"])  # 128 and 384 inputs: 128 is no multiple
    model = build_base_model(cfg, load_tokenizer(cfg.model), "sdpa", torch.float32)
    with caplog.at_level(logging.WARNING, logger="launcher.engines.model_build"):
        apply_oft(model, cfg.method.oft)
    assert "method.oft: peft adjusted the blocks" in caplog.text and "Adjusted `oft_block_size` to" in caplog.text
    assert main(["train", "--dry-run", f"run.output_root={output_root}", "method=oft", "parallelism=zero2"]) == 0


def test_expanded_model_gives_the_original_logits():
    from launcher.models.build import build_base_model
    from launcher.models.llama_pro import expand_blocks, expanded_layer_ids
    from launcher.models.tokenizers import load_tokenizer

    for arch in ("qwen2", "llama"):
        cfg = compose_config([f"model.arch={arch}"])
        model = build_base_model(cfg, load_tokenizer(cfg.model), "sdpa", torch.float32).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():  # random biases/norms, so that a copy that is not the identity would show
                if "norm" in name or "bias" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        ids = torch.randint(0, 60, (2, 10))
        mask = torch.ones_like(ids)
        mask[1, :3] = 0
        with torch.no_grad():
            before = model(input_ids=ids, attention_mask=mask).logits
        added = expand_blocks(model, 2)
        assert added == list(expanded_layer_ids(6, 2)) == [2, 5]
        assert model.config.num_hidden_layers == 6 == len(model.model.layers)
        assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
        with torch.no_grad():
            after = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="6 layers do not divide by 4"):
        expand_blocks(model, 4)


def test_llama_pro_trains_only_the_new_blocks_and_saves_a_model_transformers_loads(output_root):
    from transformers import AutoModelForCausalLM

    from launcher.engines.model_build import build_model

    recipe, run_dir, _ = run_sft(output_root, ["method=llama_pro", "method.llama_pro.expand=2", "method.lr=5e-3"])
    model = recipe.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("model.layers.2.", "model.layers.5."))}
    saved = json.loads((run_dir / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 6
    loaded = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert len(loaded.model.layers) == 6
    assert_reload_gives_same_logits(recipe, run_dir, probe(recipe))
    # the original layers are the starting ones; the new blocks moved
    torch.manual_seed(recipe.cfg.train.seed)
    fresh = dict(build_model(recipe.cfg, recipe.tokenizer, recipe.dist, recipe.attn_impl,
                             recipe.precision).named_parameters())
    for name, param in loaded.named_parameters():
        if name in trainable and name.endswith(("o_proj.weight", "down_proj.weight")):
            assert not torch.equal(param, fresh[name]), name
        elif name not in trainable and name in fresh:
            assert torch.equal(param, fresh[name]), name


def test_reentrant_checkpointing_gives_the_plain_gradients():
    from launcher.engines.distributed import init_distributed
    from launcher.engines.model_build import build_model
    from launcher.engines.precision import resolve_precision
    from launcher.models.tokenizers import load_tokenizer

    grads = []
    for extra in ([], ["train.gradient_checkpointing=true", "+train.gradient_checkpointing_kwargs.use_reentrant=true"]):
        cfg = compose_config(["method=freeze", *extra])
        tok = load_tokenizer(cfg.model)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, tok, init_distributed(), "sdpa", resolve_precision(cfg.model.dtype, torch.device("cpu")))
        model.train()
        if extra:
            layer = model.model.layers[0]
            assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords["use_reentrant"] is True
        ids = torch.randint(0, 60, (2, 12), generator=torch.Generator().manual_seed(1))
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


def test_double_quantization_reaches_bitsandbytes_config():
    from launcher.models.quantize import quantization_config

    assert quantization_config("4bit").bnb_4bit_use_double_quant is True
    assert quantization_config("4bit", False).bnb_4bit_use_double_quant is False
    cfg = compose_config(["model=hf", "model.name_or_path=/nonexistent", "method=lora", "method.lora.quantize=4bit",
                          "method.lora.double_quantization=false"])
    assert cfg.method.lora.double_quantization is False
