"""What the sharded-loading test and benchmark share: a random Qwen2-shaped HF folder saved in bf16, a run of
``load_worker.py`` on 2 gloo ranks, and the per-rank memory bound derived from how launcher.engines.loading and
ZeRO-3 load (printed beside the measured peak).

The bound, per rank, in bytes above the RSS held just before the model is built (P parameters, N ranks, M
numel of the largest parameter, T trainable parameters). Loading is derived from launcher.engines.loading and
launcher.engines.deepspeed.build_zero3_model:
- FSDP (measured after the engine, which shards and fills): the fp32 shard 4P/N + one full fp32 temporary 4M
  (initializing buffers or missing tensors) + the bf16 rows of one tensor being copied in 2M/N;
- ZeRO-3 (measured after the build, which partitions and fills): the fp32 partition 4P/N + one gathered
  tensor 4M + rank 0's bf16 copy of it read from the file 2M, + ``DS_OVERHEAD`` x 4P/N: what DeepSpeed's
  partitioning leaves in the process on CPU beyond the partition (allocator high-water of the full tensors
  it builds and frees, its bookkeeping); measured ~1.3-1.7 x the partition at N=2, not derived.
The checkpoint is read with plain reads (launcher.engines.loading.SafetensorsReader), not a memory map, so
its pages sit in the node's page cache once and in no rank's RSS.
Through the first step, on top of that: gradients and AdamW state of this rank's share of the trainable
parameters 12T/N (DeepSpeed also keeps a separate fp32 master partition and a flat gradient partition, 8T/N),
and a working set W = 4 x 4P that is measured, not derived: on CPU/gloo the first step's gathered layers,
unsharded gradients, collective staging and the probe forward's gathered model took 1.1-2.4 x the fp32 model
at N=2, and ZeRO-3 came within 5% of a 3 x allowance (tests/benchmarks/bench_load.py prints the figures; measured
before the ranks handed freed tensors back to the kernel, launcher.training.host_heap.return_freed_memory).
``SLACK`` covers the allocator and the tiny
batch's activations.
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
WORKING_SET = 4
DS_OVERHEAD = 2
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
    """The per-rank peak RSS above the pre-model RSS (see the module docstring)."""
    p, m = shape.params, shape.largest_param
    if strategy == "fsdp":
        load = 4 * p // nproc + 4 * m + 2 * m // nproc
    else:
        load = (1 + DS_OVERHEAD) * 4 * p // nproc + 4 * m + 2 * m
    if phase == "load":
        return load + SLACK
    trainable = 0 if lora else p  # LoRA's adapters are a few MB: inside the slack
    state = (12 if strategy == "fsdp" else 20) * trainable // nproc
    return load + state + WORKING_SET * 4 * p + SLACK


LOAD_MARK = {"fsdp": "peak_setup_kib", "zero3": "peak_build_kib"}
"""Where each strategy's loading ends: FSDP fills its shards in the engine, ZeRO-3 while the model is built."""


def measured(r: dict, strategy: str, phase: str) -> int:
    """Bytes above the pre-model RSS at the end of ``phase`` (load, step)."""
    mark = LOAD_MARK[strategy] if phase == "load" else "peak_step_kib"
    return (r[mark] - r["rss_before_model_kib"]) * 1024


def run_load(root: Path, name: str, folder: Path, overrides: list[str], checkpoint: bool = False,
             evaluations: bool = False) -> tuple[Path, list[dict]]:
    """Set up and train one step on NPROC gloo ranks; the run dir and each rank's measurements. ``checkpoint``:
    then write a checkpoint of that step (RUN_DIR/checkpoints/step-0000001). ``evaluations``: keep the recipe's
    held-out passes before and after the step (measured as phases)."""
    from launcher.config.compose import compose_config
    from launcher.launch.rundir import make_run_dir, write_run_config

    cfg = compose_config([f"run.output_root={root}", "model=hf", f"model.name_or_path={folder}",
                          "model.tokenizer=builtin:chars", "train.max_steps=1", "train.micro_batch_size=2",
                          "train.grad_accum=1", "data.max_samples=64", "data.cutoff_len=32",
                          "train.exact_match_samples=0", "train.eval_every=0", "train.save_model=false",
                          "train.save_every=0", "train.warmup_ratio=0", *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}",
           str(LOAD_WORKER), "--run-dir", str(run_dir), "--probe", ",".join(map(str, PROBE)),
           *(["--checkpoint-after"] if checkpoint else []), *(["--evaluations"] if evaluations else [])]
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
            out.append(f"{name} rank {rank} {phase}: peak +{measured(r, strategy, phase) / 2**20:.0f} MiB, bound"
                       f" {bound(shape, strategy, lora, phase) / 2**20:.0f} MiB (model fp32 {4 * shape.params / 2**20:.0f}"
                       f" MiB, file bf16 {2 * shape.params / 2**20:.0f} MiB)")
    return out


def phase_lines(r: dict) -> list[str]:
    """Each measured phase of one rank: RSS at its start, its peak and its end, in MiB above the pre-model RSS."""
    base = r["rss_before_model_kib"]
    return [f"  {p['phase']:<15} start +{(p['start_kib'] - base) / 1024:5.0f}"
            f"  peak +{(p['peak_kib'] - base) / 1024:5.0f}  end +{(p['end_kib'] - base) / 1024:5.0f} MiB"
            for p in r["phases"]]


LOADING_PHASES = ("build", "engine")


def breakdown(r: dict, after_loading: bool = False) -> dict[str, int]:
    """Where one rank's peak RSS goes, in bytes (absolute: the parts add up to the peak). ``after_loading``: the
    peak of the phases after the model is loaded (the step's), not of the whole run.

    imports/data: the RSS before the model; weights: this rank's own parameter bytes (its shards, ZeRO-3
    partition, or the whole model under DDP); grads: this rank's share of the trainable parameters' fp32
    gradients (the size of its trainable weights); optimizer state: the bytes of its optimizer's state tensors;
    gathered params + activations/logits: the peak phase's rise above the RSS its step (or pass) started with
    (layers gathered, activations kept for backward, the loss's logits chunks); loading temporaries: when the
    peak is in loading, what it held beyond the weights (a checkpoint read, full tensors); allocator/other: the
    rest (freed memory the heap kept, the loading's leftovers, gloo buffers, DeepSpeed's flat buffers)."""
    rows = r["phases"]
    candidates = [i for i, p in enumerate(rows) if not (after_loading and p["phase"] in LOADING_PHASES)]
    at = max(candidates, key=lambda i: rows[i]["peak_kib"])
    top, start = rows[at], rows[at]["start_kib"]
    peak = top["peak_kib"] * 1024 if after_loading else max(r["peak_step_kib"], top["peak_kib"]) * 1024
    held = r["held"]
    parts = {"imports/data": r["rss_before_model_kib"] * 1024, "weights": held["weights"]}
    if top["phase"] in LOADING_PHASES:
        parts[f"loading temporaries ({top['phase']})"] = peak - sum(parts.values())
        return {"peak": peak, **parts, "phase": top["phase"]}
    if top["phase"] in ("backward", "optimizer step"):  # the step began at its forward
        start = next(p["start_kib"] for p in reversed(rows[:at]) if p["phase"] == "forward")
    parts.update({"grads": held["trainable"], "optimizer state": held.get("optimizer_state", 0),
                  "gathered params + activations/logits": (top["peak_kib"] - start) * 1024})
    parts["allocator/other"] = peak - sum(parts.values())
    return {"peak": peak, **parts, "phase": top["phase"]}


EXPORT_PEAK = r"""
import sys
from pathlib import Path
from launcher.export.hf import ExportArgs, export_run
import deepspeed.utils.zero_to_fp32, torch.distributed.checkpoint, safetensors.torch  # imports are not the export
def status(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
export_run(Path(sys.argv[1]), ExportArgs(out=sys.argv[2], dtype="bfloat16", max_shard_size="64MB"))
print("EXPORT_PEAK_KIB", status("VmHWM") - before)
"""


def export_peak(checkpoint: Path, out: Path) -> int:
    """Bytes the export of ``checkpoint`` (bf16, 64 MB files) added to its process's RSS at its peak."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", EXPORT_PEAK, str(checkpoint), str(out)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    line = [l for l in proc.stdout.splitlines() if l.startswith("EXPORT_PEAK_KIB")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return int(line[0].split()[1]) * 1024
