"""method.optimizer at the dry run: each optimizer refused, with its reason, where it cannot work (a sharding
strategy, several processes, no CUDA, LoRA), and the memory the estimate gives it (pure_bf16: half)."""
from __future__ import annotations

import pytest

from launcher.checks.memory_estimate import ModelShape, estimate_memory_per_gpu
from launcher.checks.problems import Problems
from launcher.checks.resources import check_optimizer_device, check_packages
from launcher.config.compose import compose_config
from launcher.errors import ConfigError


@pytest.mark.parametrize("overrides, words", [
    (["method.optimizer=galore_adamw", "parallelism=zero2"], "GaLore projects each whole weight matrix"),
    (["method.optimizer=apollo_adamw", "parallelism=fsdp"], "APOLLO projects"),
    (["method.optimizer=muon", "parallelism=zero3"], "Muon orthogonalizes each whole 2-D matrix"),
    (["method.optimizer=adam_mini", "parallelism=fsdp"], "Adam-mini"),
    (["method.optimizer=paged_adamw_8bit", "parallelism=zero2"], "bitsandbytes"),
    (["method.optimizer=badam", "cluster.nproc_per_node=2"], "badam runs in one process"),
    (["method.optimizer=galore_adamw", "method=lora"], "trains full weights"),
    (["method.optimizer=badam", "method=freeze"], "overrides method.finetuning=freeze"),
    (["method.optimizer=muon", "method=lora", "method.lora.plus_lr_ratio=16"], "LoRA+"),
    (["method.optimizer=galore_adamw", "method.galore.layerwise=true", "train.grad_accum=2"],
     "cannot accumulate gradients"),
    (["method.optimizer=apollo_adamw", "method.apollo.layerwise=true", "cluster.nproc_per_node=2"],
     "before DDP has averaged"),
    (["method.optimizer=galore_adamw", "method.galore.proj_type=diagonal"], "method.galore.proj_type"),
    (["method.optimizer=badam", "method.badam.switch_mode=sideways"], "method.badam.switch_mode"),
    (["method.pure_bf16=true", "parallelism=zero3"], "method.pure_bf16"),
    (["method.pure_bf16=true", "model.dtype=float16"], "contradicts model.dtype=float16"),
    (["method.optimizer=lion"], "method.optimizer: 'lion' is not one of"),
])
def test_refused_with_the_reason(overrides, words):
    with pytest.raises(ConfigError) as err:
        compose_config(overrides)
    assert words in str(err.value)


@pytest.mark.parametrize("optimizer", ["galore_adamw", "apollo_adamw", "muon", "adam_mini", "adafactor", "badam"])
def test_each_runs_with_ddp(optimizer):
    compose_config([f"method.optimizer={optimizer}"])
    if optimizer != "badam":
        compose_config([f"method.optimizer={optimizer}", "cluster.nproc_per_node=2"])


@pytest.mark.parametrize("optimizer", ["adamw_8bit", "paged_adamw_8bit", "galore_adamw_8bit"])
def test_bitsandbytes_optimizers_need_cuda(optimizer):
    problems = Problems()
    check_optimizer_device(problems, compose_config([f"method.optimizer={optimizer}", "cluster=slurm_local"]))
    assert len(problems.errors) == 1
    assert problems.errors[0].startswith(f"method.optimizer={optimizer}: bitsandbytes") and \
        "cluster.gpus_per_node=0" in problems.errors[0]
    fine = Problems()
    check_optimizer_device(fine, compose_config([f"method.optimizer={optimizer}", "cluster=slurm_local",
                                                 "cluster.gpus_per_node=1", "cluster.gpu_memory_gb=80"]))
    assert not fine.errors


def test_a_missing_optimizer_package_is_named(monkeypatch):
    import launcher.checks.resources as resources

    monkeypatch.setattr(resources, "package_installed", lambda name: name != "galore_torch")
    problems = Problems()
    check_packages(problems, compose_config(["method.optimizer=galore_adamw"]))
    assert problems.errors == ["method.optimizer: method.optimizer=galore_adamw needs the galore_torch package, which"
                               " is not installed in this environment; install galore-torch (pip install -e"
                               " '.[optimizers]'), or choose another"]


SHAPE = ModelShape(hidden=1536, layers=28, intermediate=8960, vocab=151936, heads=12, kv_heads=2, tied=True)
GPU = ["cluster=slurm_local", "cluster.nproc_per_node=1", "cluster.gpus_per_node=1", "cluster.gpu_memory_gb=80",
       "model.dtype=bfloat16"]


def test_memory_estimate_per_optimizer():
    def est(*extra):
        return estimate_memory_per_gpu(compose_config([*GPU, *extra]), SHAPE)

    mixed, pure = est(), est("method.pure_bf16=true")
    state = lambda e: e.weights_gb + e.grads_gb + e.optimizer_gb
    assert pure.weights_gb == mixed.weights_gb and pure.optimizer_gb == pytest.approx(mixed.optimizer_gb / 3)
    assert state(pure) == pytest.approx(state(mixed) / 2)  # 2 + 2 + 4 bytes/param against 2 + 2 + 12
    adamw = mixed.optimizer_gb
    assert est("method.optimizer=adamw_8bit").optimizer_gb == pytest.approx(adamw * 6 / 12)
    assert est("method.optimizer=adam_mini").optimizer_gb == pytest.approx(adamw * 8 / 12)
    assert est("method.optimizer=galore_adamw", "method.galore.rank=128").optimizer_gb < 0.6 * adamw
    assert est("method.optimizer=muon").optimizer_gb < adamw
    badam = est("method.optimizer=badam")
    assert badam.optimizer_gb < adamw / SHAPE.layers and badam.grads_gb < mixed.grads_gb / SHAPE.layers
