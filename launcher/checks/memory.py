"""The memory check: training state per GPU against cluster.gpu_memory_gb, and the loading peak against GPU
memory and host RAM per node (cluster.mem_gb); refused with the overrides under which both fit. The
arithmetic is ``launcher.checks.memory_estimate`` (pure); this module reads the model's shape and words it.

Cheap: nothing is read when the cluster states no memory to check against (a local CPU run).
"""
from __future__ import annotations

from typing import Optional

from launcher.checks.model import read_model_config
from launcher.checks.problems import Problems
from launcher.config.schema import Config, world_size
from launcher.errors import PreflightError


def model_shape_of(cfg: Config, problems: Optional[Problems] = None):
    """The model's shape for the memory estimates, or None (unknown config; a warning says so)."""
    from launcher.checks.memory_estimate import ModelShape

    hf = read_model_config(cfg)
    if hf is None:
        return None
    try:
        return ModelShape.from_hf_config(hf)
    except (TypeError, ValueError):
        if problems is not None:
            problems.warnings.append("memory check skipped: the model config has no hidden_size/num_hidden_layers")
        return None


def check_memory(problems: Problems, cfg: Config) -> None:
    """Training state per GPU (cluster.gpu_memory_gb) and the loading peak: host RAM per node (cluster.mem_gb)
    and GPU memory at load; refused with the overrides under which both fit."""
    from launcher.checks.memory_estimate import estimate_load_memory, estimate_memory_per_gpu, suggest_fits

    c = cfg.cluster
    gpu_limit = c.gpu_memory_gb if c.gpus_per_node > 0 else None
    if gpu_limit is None and c.mem_gb is None:
        return
    shape = model_shape_of(cfg, problems)
    if shape is None:
        return
    load = estimate_load_memory(cfg, shape)
    refusals = []
    if gpu_limit is not None:
        estimate = estimate_memory_per_gpu(cfg, shape)
        if estimate.total_gb > gpu_limit:
            refusals.append(
                f"cluster.gpu_memory_gb: the run needs about {estimate.total_gb:.0f} GB per GPU but the GPUs have"
                f" {gpu_limit:.0f} GB ({estimate.params / 1e9:.2f}B params, method={cfg.method.name},"
                f" parallelism={cfg.parallelism.name}, world size {world_size(cfg)}: {estimate.breakdown()})")
        elif estimate.total_gb > 0.9 * gpu_limit:
            problems.warnings.append(
                f"memory: about {estimate.total_gb:.0f} of {gpu_limit:.0f} GB per GPU: close to the limit")
        if load.gpu_gb > gpu_limit:
            refusals.append(f"cluster.gpu_memory_gb: {load.describe()}, more than the {gpu_limit:.0f} GB a GPU has")
    if c.mem_gb is not None and load.host_gb_per_node > c.mem_gb:
        refusals.append(f"cluster.mem_gb: {load.describe()}, more than the {c.mem_gb:.0f} GB a node has")
    if not refusals:
        return
    fits = suggest_fits(cfg, shape, gpu_limit if gpu_limit is not None else float("inf"))
    hint = f"try {' or '.join(fits)}" if fits else (
        "no single change fits: add nodes (cluster.nodes), lower train.micro_batch_size or data.cutoff_len")
    raise PreflightError(f"{'; '.join(refusals)}; {hint}")


def memory_summary(cfg: Config) -> Optional[str]:
    """The dry run's memory lines: training state per GPU and the loading peak; None when the shape is unknown
    or the cluster states no memory to check against (a local CPU run: reading the model's config would import
    transformers, which a dry run of that kind never does)."""
    from launcher.checks.memory_estimate import estimate_load_memory, estimate_memory_per_gpu

    c = cfg.cluster
    if not ((c.gpus_per_node > 0 and c.gpu_memory_gb is not None) or c.mem_gb is not None):
        return None
    shape = model_shape_of(cfg)
    if shape is None:
        return None
    train = estimate_memory_per_gpu(cfg, shape)
    return (f"# memory estimate ({shape.num_params() / 1e9:.1f}B params, world size {world_size(cfg)}):\n"
            f"#   training: {train.breakdown()} per GPU\n#   {estimate_load_memory(cfg, shape).describe()}")
