"""What the sharded-loading test and benchmark share: a random Qwen2-shaped HF folder saved in bf16, a run of
``load_worker.py`` on 2 gloo ranks, and the per-rank memory bound derived from how launcher.engines.loading and
ZeRO-3 load (printed beside the measured peak).

The bound, per rank, in bytes above the RSS held just before the model is built (P parameters, N ranks, M
numel of the largest parameter, U of the largest FSDP unit or ZeRO-3 module, T the trainable parameters):
- loading, FSDP: the fp32 shard 4P/N + the file pages of its own rows 2P/N (bf16, memory-mapped) + one full
  fp32 temporary 4M (initializing buffers/missing tensors, a gathered module);
- loading, ZeRO-3: the fp32 partition 4P/N + the whole file's pages 2P (transformers reads every tensor on
  every rank, from the memory map: the node's page cache holds one copy, each rank's RSS counts it) + 4U (a
  module gathered while its tensors are copied in);
- the first step adds gradients and AdamW state of this rank's share of the trainable parameters 12T/N, and
  for the two units in flight (the one computing and the one prefetched) four fp32 buffers of a unit's size
  each (all-gather output, unsharded parameters, unsharded gradient, reduce-scatter input): 32U; activations
  of the tiny batch are in ``SLACK``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
LOAD_WORKER = Path(__file__).with_name("load_worker.py")
NPROC = 2
SLACK = 96 << 20
"""Allocator slack, activations of one 2 x 32-token micro-batch, gloo buffers."""
PROBE = [5, 17, 42, 7, 99, 3, 250, 11]

# CI: ~69M parameters, affordable on 2 cores and large enough that a full fp32 copy per rank would not fit
# under the bound. Benchmark: ~0.35B (Qwen2-shaped, hidden 1024, 24 layers, 32k vocabulary).
SMALL = dict(hidden_size=640, intermediate_size=2560, num_hidden_layers=10, num_attention_heads=10,
             num_key_value_heads=2, vocab_size=16000)
BENCH = dict(hidden_size=1024, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=16,
             num_key_value_heads=2, vocab_size=32000)


def make_model_folder(folder: Path, shape: dict) -> Path:
    """A random-init Qwen2 model with tied embeddings, saved in bf16 as HF safetensors (once per folder)."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen2", max_position_embeddings=512, tie_word_embeddings=True, **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)
    return folder


@dataclass
class Shape:
    params: int
    largest_param: int
    largest_unit: int


def model_shape(folder: Path) -> Shape:
    """P, M and U of the saved model, from its config on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    params = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    layer = max(sum(p.numel() for p in layer.parameters()) for layer in model.model.layers)
    root = params - sum(p.numel() for layer in model.model.layers for p in layer.parameters())
    return Shape(params, largest, max(layer, root))


def bound(shape: Shape, strategy: str, lora: bool, phase: str, nproc: int = NPROC) -> int:
    """The per-rank peak RSS above the pre-model RSS that item 1 promises (see the module docstring)."""
    p, m, u = shape.params, shape.largest_param, shape.largest_unit
    if strategy == "fsdp":
        load = 4 * p // nproc + 2 * p // nproc + 4 * m
    else:
        load = 4 * p // nproc + 2 * p + 4 * u
    if phase == "load":
        return load + SLACK
    trainable = 0 if lora else p  # LoRA's adapters are a few MB: inside the slack
    return load + 12 * trainable // nproc + 32 * u + SLACK


def run_load(root: Path, name: str, folder: Path, overrides: list[str]) -> tuple[Path, list[dict]]:
    """Set up and train one step on NPROC gloo ranks; the run dir and each rank's measurements."""
    from launcher.config.compose import compose_config
    from launcher.rundir import make_run_dir, write_run_config

    cfg = compose_config([f"run.output_root={root}", "model=hf", f"model.name_or_path={folder}",
                          "model.tokenizer=builtin:chars", "train.max_steps=1", "train.micro_batch_size=2",
                          "train.grad_accum=1", "data.max_samples=64", "data.cutoff_len=32",
                          "train.exact_match_samples=0", "train.eval_every=0", "train.save_model=false",
                          "train.save_every=0", "train.warmup_ratio=0", *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}",
           str(LOAD_WORKER), "--run-dir", str(run_dir), "--probe", ",".join(map(str, PROBE))]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError(f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}")
    ranks = [json.loads((run_dir / f"load_rank{r}.json").read_text()) for r in range(NPROC)]
    for r in ranks:
        r["wall_s"] = round(time.time() - t0, 1)
    return run_dir, ranks


def plain_logits(folder: Path) -> torch.Tensor:
    """The probe's logits from a plain single-process fp32 load (what the sharded ranks must reproduce)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([PROBE])).logits.float()


def figures(name: str, shape: Shape, strategy: str, lora: bool, ranks: list[dict]) -> list[str]:
    """One line per rank and phase: measured peak above the pre-model RSS vs the bound, in MiB."""
    out = []
    for rank, r in enumerate(ranks):
        for phase in ("load", "step"):
            measured = (r[f"peak_{phase}_kib"] - r["rss_before_model_kib"]) * 1024
            out.append(f"{name} rank {rank} {phase}: peak +{measured / 2**20:.0f} MiB, bound"
                       f" {bound(shape, strategy, lora, phase) / 2**20:.0f} MiB (model fp32 {4 * shape.params / 2**20:.0f}"
                       f" MiB, file bf16 {2 * shape.params / 2**20:.0f} MiB)")
    return out
