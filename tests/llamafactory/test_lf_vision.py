"""launcher train --from-llamafactory with a Qwen2-VL SFT file in LLaMA-Factory's documented shape
(examples/train_full/qwen2_5vl_full_sft.yaml): the VL keys translate, and the dry run composes and passes the
preflight on a tiny Qwen2-VL folder with the repo's coloured-shapes images."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cli import main as cli_main
from launcher.config.llamafactory import translate

REPO_ROOT = Path(__file__).resolve().parents[2]

# examples/train_full/qwen2_5vl_full_sft.yaml's shape (model and data swapped for local ones; no DeepSpeed)
QWEN2_VL_SFT = {
    "model_name_or_path": None, "image_max_pixels": 262144, "video_max_pixels": 16384, "trust_remote_code": True,
    "stage": "sft", "do_train": True, "finetuning_type": "full", "freeze_vision_tower": True,
    "freeze_multi_modal_projector": True, "freeze_language_model": False,
    "dataset": "vl_shapes", "dataset_dir": None, "template": "qwen2_vl", "cutoff_len": 2048, "max_samples": 1000,
    "overwrite_cache": True, "preprocessing_num_workers": 16, "dataloader_num_workers": 4,
    "output_dir": None, "logging_steps": 10, "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True,
    "save_only_model": False, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "learning_rate": 1.0e-5,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
}


def filled(model: Path, out: Path, **extra) -> dict:
    return {**QWEN2_VL_SFT, "model_name_or_path": str(model), "dataset_dir": str(REPO_ROOT / "data"),
            "output_dir": str(out / "saves" / "qwen2_vl-2b" / "full" / "sft"), **extra}


def test_vl_keys_translate(tmp_path):
    t = translate(filled(Path("/models/Qwen2-VL-2B-Instruct"), tmp_path, freeze_vision_tower=False,
                         image_min_pixels=1024), cwd=tmp_path)
    o = t.overrides
    for expected in ("data.image_max_pixels=262144", "data.image_min_pixels=1024", "model.freeze_vision_tower=false",
                     "model.freeze_projector=true", "model.freeze_language_model=false", "data.template=qwen2_vl",
                     "method=sft_full"):
        assert expected in o, (expected, o)
    assert "data.video_max_pixels=16384" in o  # LF's video keys carry over (videos are trained)


@pytest.fixture(scope="module")
def tiny_vl_folder(tmp_path_factory) -> Path:
    """A tiny random-init Qwen2-VL saved as a Hugging Face folder (weights, tokenizer, processor files)."""
    from tests.vl.helpers import save_tiny_vl_folder

    return save_tiny_vl_folder(tmp_path_factory.mktemp("hf") / "tiny-qwen2-vl")


def test_qwen2_vl_sft_file_dry_run(tmp_path, tiny_vl_folder, capsys):
    path = tmp_path / "qwen2_vl_full_sft.yaml"
    path.write_text(yaml.safe_dump(filled(tiny_vl_folder, tmp_path), sort_keys=False))
    assert cli_main(["train", "--from-llamafactory", str(path), "model.dtype=float32", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "preflight passed" in out, out[-3000:]
    cfg = yaml.safe_load(out.split("# resolved config\n", 1)[1].split("\n# ", 1)[0])
    assert cfg["data"]["image_max_pixels"] == 262144 and cfg["data"]["template"] == "qwen2_vl"
    assert cfg["model"]["freeze_vision_tower"] is True and cfg["model"]["freeze_projector"] is True
    assert cfg["model"]["freeze_language_model"] is False
