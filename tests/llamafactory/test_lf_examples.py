"""Every training config of LLaMA-Factory's examples/ (main, 2026-08-18: the 56 files with ``stage:`` or
``do_train:``, copied with LF's licence into lf_examples/) through ``launcher train --from-llamafactory`` and the
dry run, with a tiny model substituted (a text one, or a Qwen3-VL one for the image configs), LF's own demo data
(its data/ folder) and a temporary output_dir; nothing trains. Each config has its expected outcome in
``EXPECTED``:

- A: the dry run passes, and the translated values are those of the file;
- B: refused before anything runs, with the given substring in the refusal;
- C (passes the dry run, then fails) must not occur: a config expected B that passes, or expected A that is
  refused, fails this test.

``EXPECTED`` is the one place to edit when a feature lands: the B rows marked "for now" name the feature whose
arrival flips them to A (or to the hardware refusal that remains).
``python -m pytest tests/llamafactory/test_lf_examples.py -q -s`` prints the A/B counts and each B's reason.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cli import main as cli_main
from tests.conftest import SHARED_DEMO

EXAMPLES = Path(__file__).with_name("lf_examples")

# config (under examples/) -> (outcome, refusal substring or "", why[, keys standing in for the file's])
EXPECTED = {
    # --- ours: translated and passing
    "train_full/qwen3_full_sft.yaml": ("A", "", "full SFT, ZeRO-3 (LF's stock ds_z3_config.json)"),
    "train_full/qwen3vl_full_sft.yaml": ("A", "", "Qwen3-VL full SFT on mllm_demo, qwen3_vl_nothink template"),
    "train_lora/qwen3vl_lora_sft.yaml": ("A", "", "Qwen3-VL LoRA SFT on mllm_demo"),
    "train_lora/qwen3_lora_sft.yaml": ("A", "", "LoRA SFT"),
    "train_lora/qwen3_lora_sft_ds3.yaml": ("A", "", "LoRA SFT, ZeRO-3"),
    "train_lora/qwen3_lora_dpo.yaml": ("A", "", "LoRA DPO"),
    "train_lora/qwen3_lora_kto.yaml": ("A", "", "LoRA KTO at micro-batch 1 (LF's KL pairing)"),
    "train_lora/qwen3_lora_pretrain.yaml": ("A", "", "LoRA continued pretraining on c4_demo"),
    "train_lora/qwen3_lora_reward.yaml": ("A", "", "LoRA reward model"),
    "train_lora/qwen3_preprocess.yaml": ("A", "", "tokenized_path: our cache is by content hash"),
    "extras/loraplus/llama3_lora_sft.yaml": ("A", "", "LoRA+"),
    "extras/pissa/llama3_lora_sft.yaml": ("A", "", "PiSSA"),
    # the quantization of these lives in the checkpoint (AQLM/AWQ/GPTQ), which the tiny model replaces here
    "train_qlora/llama3_lora_sft_aqlm.yaml": ("A", "", "LoRA on a pre-quantized checkpoint (replaced)"),
    "train_qlora/llama3_lora_sft_awq.yaml": ("A", "", "LoRA on a pre-quantized checkpoint (replaced)"),
    "train_qlora/llama3_lora_sft_gptq.yaml": ("A", "", "LoRA on a pre-quantized checkpoint (replaced)"),
    "extras/nlg_eval/llama3_lora_predict.yaml": ("A", "", "do_predict: launcher predict on the trained adapter"),
    # --- issue 33 items 3 and 4 (optimizers, OFT, LLaMA-Pro, token losses) and issue 32's videos
    "extras/adam_mini/qwen2_full_sft.yaml": ("A", "", "Adam-mini"),
    "extras/apollo/llama3_full_sft.yaml": ("A", "", "APOLLO (layer-wise), pure_bf16"),
    "extras/badam/llama3_full_sft.yaml": ("A", "", "BAdam, layer mode"),
    "extras/galore/llama3_full_sft.yaml": ("A", "", "GaLore (layer-wise), pure_bf16"),
    "extras/muon/qwen2_full_sft.yaml": ("A", "", "Muon"),
    "extras/dft/qwen2_full_sft.yaml": ("A", "", "DFT loss"),
    # ASFT's datasets (med, math) are the user's own, not in LF's data/: one of LF's demo sets stands in
    "extras/asft/llama2_full_asft.yaml": ("A", "", "ASFT loss", {"dataset": "alpaca_en_demo"}),
    "extras/asft/qwen2_full_asft.yaml": ("A", "", "ASFT loss", {"dataset": "alpaca_en_demo"}),
    "extras/eaft/qwen25_05b_eaft_full.yaml": ("A", "", "EAFT loss"),
    # an expanded Llama-3 has 40 layers and trains 8 blocks; the tiny model has 4 layers: 2 blocks of them
    "extras/llama_pro/llama3_freeze_sft.yaml": ("A", "", "LLaMA-Pro (freeze the original blocks)",
                                                {"freeze_trainable_layers": 2}),
    "extras/oft/llama3_oft_sft.yaml": ("A", "", "OFT"),
    "extras/oft/qwen2_5vl_oft_sft.yaml": ("A", "", "OFT on a VL model (the language model)"),
    "extras/qoft/llama3_oft_sft_awq.yaml": ("A", "", "OFT on a pre-quantized checkpoint (replaced)"),
    "extras/qoft/llama3_oft_sft_gptq.yaml": ("A", "", "OFT on a pre-quantized checkpoint (replaced)"),
    "train_full/mossvl_full_sft.yaml": ("A", "", "video SFT (video_fps, video_maxlen), gradient-checkpointing keys"),
    "train_lora/mossvl_lora_sft.yaml": ("A", "", "video LoRA SFT"),
    "extras/mod/llama3_full_sft.yaml": ("B", "mixture_of_depths",
                                        "mixture-of-depths (MoD's own model classes: not a transformers model)"),
    # --- hardware, or an engine we do not run
    "extras/qoft/llama3_oft_sft_bnb_npu.yaml": ("B", "quantized OFT", "OFT on a bitsandbytes 4-bit base: bitsandbytes"
                                                " needs CUDA (and quantized OFT is not wired)"),
    "train_qlora/qwen3_lora_sft_bnb_npu.yaml": ("B", "need a CUDA GPU", "QLoRA: bitsandbytes needs CUDA"),
    "extras/fsdp_qlora/llama3_lora_sft.yaml": ("B", "need a CUDA GPU", "QLoRA: bitsandbytes needs CUDA"),
    "train_qlora/qwen3_lora_sft_otfq.yaml": ("B", "need a CUDA GPU", "QLoRA: bitsandbytes needs CUDA"),
    "extras/fp8/llama3_fp8_deepspeed_sft.yaml": ("B", "fp8", "FP8 training (Hopper GPUs)"),
    "extras/fp8/llama3_fp8_fsdp_sft.yaml": ("B", "fp8", "FP8 training (Hopper GPUs)"),
    "train_lora/qwen3vl_lora_dpo.yaml": ("B", "comes from the hub", "rlhf_v is a hub dataset; offline here"),
    "train_lora/qwen3_lora_sft_ray.yaml": ("B", "ray_num_workers", "Ray"),
    **{f"ascend/{name}.yaml": ("B", "use_v1_kernels", "Ascend NPU kernels (v1)") for name in (
        "qwen3_5_full_sft_fsdp2", "qwen3_5moe_lora_sft_fsdp2", "qwen3_full_sft_fsdp2", "qwen3moe_full_sft_fsdp",
        "qwen3vlmoe_full_sft_fsdp2", "qwen3vlmoe_lora_sft_fsdp")},
    **{f"ktransformers/train_lora/{name}.yaml": ("B", "use_kt", "KTransformers") for name in (
        "deepseek_v2_lora_sft_kt", "deepseek_v3_int8_lora_sft_kt", "deepseek_v3_lora_sft_kt",
        "qwen3_5moe_lora_sft_kt", "qwen3moe_lora_sft_kt", "qwen3vlmoe_lora_sft_kt")},
    "megatron/qwen2_vl_full.yaml": ("B", "tensor_model_parallel_size", "Megatron"),
    "megatron/qwen3_moe_full.yaml": ("B", "tensor_model_parallel_size", "Megatron"),
    "megatron_bridge/llama3_sft.yaml": ("B", "tensor_model_parallel_size", "Megatron"),
}

needs_lf_data = pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason=f"no LLaMA-Factory demo data at {SHARED_DEMO}")


def training_configs() -> list[str]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        text = path.read_text()
        if any(line.startswith(("stage:", "do_train:")) for line in text.splitlines()):
            found.append(str(path.relative_to(EXAMPLES)))
    return found


def test_the_table_covers_every_training_config_and_licence_is_beside_them():
    configs = training_configs()
    assert len(configs) == 56
    assert sorted(EXPECTED) == configs
    assert "Apache License" in (EXAMPLES / "LICENSE").read_text()


@pytest.fixture(scope="module")
def tiny_vl_model(tmp_path_factory) -> Path:
    from tests.vl.helpers import save_tiny_vl_folder

    return save_tiny_vl_folder(tmp_path_factory.mktemp("hf") / "tiny-qwen3-vl", model="tiny_qwen3_vl")


def is_vl(lf: dict) -> bool:
    return "image_max_pixels" in lf or "vl" in str(lf.get("template", ""))


def substituted(lf: dict, model: Path, out: Path) -> dict:
    """LF's file with a tiny local model, LF's data folder and a temporary output_dir."""
    return {**lf, "model_name_or_path": str(model), "dataset_dir": str(SHARED_DEMO),
            "output_dir": str(out / "saves" / "x")}


def resolved_config(out: str) -> dict:
    return yaml.safe_load(out.split("# resolved config\n", 1)[1].split("\n# ", 1)[0])


def check_translated_values(lf: dict, cfg: dict) -> None:
    """What the file says is what the resolved config holds."""
    pairs = [("learning_rate", cfg["method"]["lr"]), ("per_device_train_batch_size", cfg["train"]["micro_batch_size"]),
             ("gradient_accumulation_steps", cfg["train"]["grad_accum"]), ("num_train_epochs", cfg["train"]["epochs"]),
             ("cutoff_len", cfg["data"]["cutoff_len"]), ("max_samples", cfg["data"]["max_samples"]),
             ("warmup_ratio", cfg["train"]["warmup_ratio"]), ("image_max_pixels", cfg["data"].get("image_max_pixels"))]
    for key, ours in pairs:
        if key in lf:
            assert float(lf[key]) == float(ours), (key, lf[key], ours)
    names = [d["name"] if isinstance(d, dict) else d for d in cfg["data"]["datasets"]]
    assert names == [n.strip() for n in str(lf["dataset"]).split(",")]
    assert cfg["method"]["finetuning"] == lf.get("finetuning_type", "lora")
    if lf.get("finetuning_type", "lora") == "lora" and "lora_rank" in lf:
        assert cfg["method"]["lora"]["r"] == lf["lora_rank"]
    if "lr_scheduler_type" in lf:
        assert cfg["train"]["lr_scheduler"] == lf["lr_scheduler_type"]
    assert cfg["model"]["name_or_path"] == lf["model_name_or_path"]


@needs_lf_data
@pytest.mark.parametrize("config", sorted(EXPECTED))
def test_llamafactory_example(config, tiny_hf_model, tiny_vl_model, tmp_path, capsys, request):
    outcome, refusal, why, *standing_in = EXPECTED[config]
    lf = yaml.safe_load((EXAMPLES / config).read_text())
    lf = substituted(lf, tiny_vl_model if is_vl(lf) else tiny_hf_model, tmp_path)
    for replaced in standing_in:  # what the file names that is not here (a user's dataset) or too big for the tiny model
        lf.update(replaced)
    if lf.get("do_predict"):  # LF's predict file reads the adapter its training wrote to output_dir
        run_dir = request.getfixturevalue("lora_run")  # tests/conftest.py's trained adapter
        from launcher.training.model_links import link_final_model

        link_final_model(run_dir / "model", tmp_path / "saves" / "sft")
        lf.update(model_name_or_path=str(run_dir / "base_model"), adapter_name_or_path=str(tmp_path / "saves" / "sft"),
                  template="chatml")
    path = tmp_path / Path(config).name
    path.write_text(yaml.safe_dump(lf, sort_keys=False))
    rc = cli_main(["train", "--from-llamafactory", str(path), "--dry-run"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if not line.startswith(("note:", "warning:"))]
    if outcome == "A":
        assert rc == 0, f"{config} ({why}) expected to pass the dry run:\n" + "\n".join(errors)
        if lf.get("do_predict"):
            assert "dry run: nothing was run (launcher predict)" in captured.out
            return
        assert "preflight passed" in captured.out
        check_translated_values(lf, resolved_config(captured.out))
    else:
        assert rc != 0, f"{config} ({why}) expected to be refused, but it passed the dry run"
        assert any(refusal in line for line in errors), f"{config}: '{refusal}' not in:\n" + "\n".join(errors)
        assert all(line.startswith(("error:", str(path))) for line in errors)  # every line names the file or is the error


def test_counts(capsys):
    """The A/B counts and each B's reason (printed with -s)."""
    counts = {o: sum(1 for v in EXPECTED.values() if v[0] == o) for o in "ABC"}
    with capsys.disabled():
        print(f"\nLLaMA-Factory examples/ (56 training configs): A {counts['A']}, B {counts['B']}, C {counts['C']}")
        for config, (outcome, refusal, why, *_) in sorted(EXPECTED.items()):
            if outcome == "B":
                print(f"  B {config}: {why} ('{refusal}')")
    assert counts["C"] == 0 and counts["A"] + counts["B"] == 56


@pytest.mark.parametrize("config, command", [("merge_lora/qwen3_lora_sft.yaml", "export"),
                                             ("inference/qwen3_lora_sft.yaml", "chat")])
def test_merge_and_inference_files_given_to_train_name_their_command(config, command, capsys):
    assert cli_main(["train", "--from-llamafactory", str(EXAMPLES / config), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"use launcher {command}" in err[0] and f"--from-llamafactory {EXAMPLES / config}" in err[0]


@pytest.mark.parametrize("command", ["predict", "export", "chat", "serve"])
def test_after_training_commands_list_the_flags_and_honour_dry_run(command, capsys):
    with pytest.raises(SystemExit):
        cli_main([command, "--help"])
    assert "--from-llamafactory" in capsys.readouterr().out
    assert cli_main([command, "RUN_DIR", "--dry-run"]) == 0  # the flag without a file: printed, not run
    assert capsys.readouterr().out.endswith(f"launcher {command} RUN_DIR\ndry run: nothing was run (launcher {command})\n")
