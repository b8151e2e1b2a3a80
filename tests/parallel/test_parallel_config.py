"""Pure checks, no processes: presets compose, impossible combinations are refused, the DeepSpeed config is
consistent with our batch and accumulation, and the memory estimate shards what each strategy shards."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.config.compose import compose_config
from launcher.config.parallelism import PRESETS as PARALLELISM_PRESETS
from launcher.config.schema import resolve_grad_accum
from launcher.errors import ConfigError
from launcher.engines.deepspeed import build_deepspeed_config

REPO = Path(__file__).resolve().parents[2]

PRESETS = {name: (row.strategy, row.zero_stage, row.offload) for name, row in PARALLELISM_PRESETS.items()}


def test_every_preset_file_is_a_row_of_the_table():
    """conf/parallelism/NAME.yaml and launcher.config.parallelism.PRESETS say the same, file for row."""
    files = {path.stem: yaml.safe_load(path.read_text()) for path in (REPO / "conf" / "parallelism").glob("*.yaml")}
    assert sorted(files) == sorted(PARALLELISM_PRESETS)
    from launcher.config.schema import ParallelismConfig

    schema = ParallelismConfig()  # a conf file sets only what differs from the schema's default
    for name, keys in files.items():
        keys = keys or {}
        assert keys.get("name", schema.name) == name
        got = {k: keys.get(k, getattr(schema, k)) for k in ("strategy", "zero_stage", "offload")}
        assert got == PARALLELISM_PRESETS[name].keys(), name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_compose(name):
    p = compose_config([f"parallelism={name}"]).parallelism
    assert (p.name, (p.strategy, p.zero_stage, p.offload)) == (name, PRESETS[name])


@pytest.mark.parametrize("overrides, key", [
    (["parallelism=fsdp", "parallelism.zero_stage=3"], "parallelism.zero_stage"),
    (["parallelism=ddp", "parallelism.offload=true"], "parallelism.offload"),
    (["parallelism=zero2", "parallelism.zero_stage=0"], "parallelism.zero_stage"),
    (["parallelism=fsdp", "+parallelism.deepspeed.bf16.enabled=true"], "parallelism.deepspeed"),
])
def test_impossible_combinations_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_config(overrides)


def test_deepspeed_config_matches_our_batch_and_clipping():
    cfg = compose_config(["parallelism=zero3_offload", "train.micro_batch_size=4", "train.global_batch_size=32",
                          "train.grad_accum=null", "cluster.nproc_per_node=2", "train.max_grad_norm=0.5",
                          "+parallelism.deepspeed.zero_optimization.reduce_bucket_size=1000"])
    accum = resolve_grad_accum(cfg, 2)
    ds = build_deepspeed_config(cfg, 2, accum, on_gpu=False, bf16=False)
    assert accum == 4
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2 == ds["train_batch_size"] == 32
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"]
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
    assert zero["reduce_bucket_size"] == 1000  # user extras merge over the generated config
    assert ds["zero_force_ds_cpu_optimizer"] is False  # our torch AdamW: no cpu_adam JIT build
    gpu = build_deepspeed_config(compose_config(["parallelism=zero2"]), 8, 1, on_gpu=True, bf16=True)
    assert gpu["bf16"]["enabled"] and "offload_optimizer" not in gpu["zero_optimization"]
