"""GPU check of sharded loading (issue 16, item 1), one GPU, one rank (NCCL, world size 1): peak GPU memory and
host RSS while a ~7B-shaped model loads through the fsdp path and the zero3 path, against plain loads.

    PYTHONPATH=. python tests/gpu/gpu_load_check.py                 # Qwen2-7B shape, ~3 min on one H200
    PYTHONPATH=. python tests/gpu/gpu_load_check.py --layers 8      # smaller and faster
    PYTHONPATH=. python tests/gpu/gpu_load_check.py --paths fsdp,zero3 --folder /tmp/launcher-gpu-model

Step 1 writes a random Qwen2-shaped model in bf16 safetensors to --folder (on the GPU, one tensor at a time;
skipped when the folder is there). Then each path runs in its own process (so its CUDA peak and host peak are
its own) and prints one line:
- plain-fp32: ``from_pretrained(dtype=float32).cuda()`` (what every rank did before: fp32 on the host, whole);
- plain-bf16: ``from_pretrained(dtype=bfloat16).cuda()``;
- fsdp: launcher's build_model on the meta device + FSDPEngine (fully_shard, then each rank reads its rows):
  fp32 shards = the whole fp32 model at world size 1, but never a host copy;
- zero3: launcher's build_model under ZeRO-3 (HfDeepSpeedConfig + from_pretrained: partitioned as it loads,
  bf16 partitions in DeepSpeed's bf16 mode); the optimizer is not built (that is training state, not load).
Every path also prints the max |logit diff| of a probe row against plain-fp32 (bf16 compute: ~1e-2 is normal).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CPU_SMOKE = os.environ.get("LAUNCHER_GPU_CHECK_ON_CPU") == "1"
"""Run the same code on the CPU (gloo, fp32, no GPU figures): a smoke test of this script where no GPU is."""
DEVICE = "cpu" if CPU_SMOKE else "cuda"
PROBE = [[11, 523, 87, 9, 3001, 77, 15, 4096]]


def peak_host_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def write_folder(args) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from launcher.engines.streaming import ShardedSafetensorsWriter

    folder = Path(args.folder)
    if (folder / "config.json").is_file():
        print(f"model folder: {folder} (exists)", flush=True)
        return
    t0 = time.time()
    config = AutoConfig.for_model("qwen2", hidden_size=args.hidden, intermediate_size=args.intermediate,
                                  num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                  num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                                  max_position_embeddings=4096, tie_word_embeddings=False)
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        shapes = {n: p.shape for n, p in AutoModelForCausalLM.from_config(config).named_parameters()}
    tmp = folder.with_name(folder.name + ".tmp")
    writer = ShardedSafetensorsWriter(tmp, max_shard_bytes=4 << 30)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    for name, shape in shapes.items():
        t = torch.empty(shape, dtype=torch.bfloat16, device=DEVICE)
        if name.endswith("norm.weight"):
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        writer.add(name, t.cpu())
    writer.close()
    config.save_pretrained(tmp)
    tmp.rename(folder)
    n = sum(s.numel() for s in shapes.values())
    print(f"model folder: {folder}: {n / 1e9:.2f}B parameters, {2 * n / 2**30:.1f} GiB bf16, written in"
          f" {time.time() - t0:.0f} s", flush=True)


def gpu_peak() -> float:
    import torch

    if CPU_SMOKE:
        return 0.0
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def one_rank_env() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")


def run_path(path: str, folder: str, out: Path) -> None:
    """One path in this process; writes its figures to ``out`` (JSON)."""
    import torch

    if not CPU_SMOKE:
        torch.cuda.set_device(0)
    result: dict = {"path": path}
    t0 = time.time()
    if path.startswith("plain"):
        from transformers import AutoModelForCausalLM

        dtype = torch.float32 if path == "plain-fp32" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(DEVICE)
        result["load_s"] = time.time() - t0
        result["gpu_peak_gib"] = gpu_peak()
        forward = model
        context = torch.autocast(DEVICE, dtype=torch.bfloat16) if dtype == torch.float32 else torch.no_grad()
    else:
        import torch.distributed as dist

        from launcher.config.compose import compose_config
        from launcher.engines.base import build_engine
        from launcher.engines.model_build import build_model
        from launcher.engines.distributed import DistInfo
        from launcher.engines.precision import resolve_precision
        from launcher.models.tokenizers import load_tokenizer

        one_rank_env()
        dist.init_process_group("gloo" if CPU_SMOKE else "nccl", rank=0, world_size=1)
        cfg = compose_config(["model=hf", f"model.name_or_path={folder}", "model.tokenizer=builtin:chars",
                              "model.dtype=bfloat16", "model.attn_implementation=sdpa", f"parallelism={path}",
                              "train.gradient_checkpointing=false"])
        info = DistInfo(0, 1, 0, torch.device("cpu") if CPU_SMOKE else torch.device("cuda", 0))
        precision = resolve_precision(cfg.model.dtype, info.device)
        model = build_model(cfg, load_tokenizer(cfg.model), info, "sdpa", precision)

        class Holder(torch.nn.Module):
            def __init__(self, m, _cfg):
                super().__init__()
                self.model = m

        if path == "fsdp":
            engine = build_engine(cfg, model, info, 1, loss_module=Holder, precision=precision)
            report = engine.report()
            forward, context = engine.model, engine.inference_context()
        else:
            import deepspeed

            report = {"zero3_partitioned": sum(1 for p in model.parameters() if hasattr(p, "ds_tensor")),
                      "param_dtype": str(next(model.parameters()).dtype)}
            # Without deepspeed.initialize no hooks gather the partitions in forward: gather them all for the
            # probe (after the load figures are taken).
            forward, context = model, deepspeed.zero.GatheredParameters(list(model.parameters()))
        result["load_s"] = time.time() - t0
        result["gpu_peak_gib"] = gpu_peak()
        result["report"] = report
    result["host_peak_gib"] = peak_host_gib()
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(folder).vocab_size
    with torch.no_grad(), context:
        logits = forward(input_ids=torch.tensor([[t % vocab for t in PROBE[0]]], device=DEVICE)).logits.float().cpu()
    torch.save(logits, out.with_suffix(".pt"))
    out.write_text(json.dumps(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="/tmp/launcher-gpu-load-model")
    parser.add_argument("--paths", default="plain-fp32,plain-bf16,fsdp,zero3")
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--intermediate", type=int, default=18944)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--timeout", type=int, default=170, help="seconds per path")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_path(args.one, args.folder, Path(args.result))
        return 0

    import torch

    if not torch.cuda.is_available() and not CPU_SMOKE:
        print("needs a CUDA GPU (LAUNCHER_GPU_CHECK_ON_CPU=1 runs it on the CPU as a smoke test)")
        return 2
    t_start = time.time()
    write_folder(args)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TOKENIZERS_PARALLELISM="false")
    results, reference = {}, None
    for path in args.paths.split(","):
        out = Path(args.folder).with_name(f"gpu-load-{path}.json")
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--folder", args.folder, "--one", path, "--result", str(out)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{path}: timed out after {args.timeout} s", flush=True)
            continue
        if proc.returncode != 0 or not out.is_file():
            print(f"{path}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(out.read_text())
        logits = torch.load(out.with_suffix(".pt"))
        if reference is None and path == "plain-fp32":
            reference = logits
        diff = (logits - reference).abs().max().item() if reference is not None else float("nan")
        results[path] = r
        print(f"{path:10s} peak GPU {r['gpu_peak_gib']:6.1f} GiB, peak host RSS {r['host_peak_gib']:6.1f} GiB,"
              f" load {r['load_s']:5.1f} s, max |logit diff| vs plain-fp32 {diff:.2e}"
              f"{'  ' + json.dumps(r['report']) if 'report' in r else ''}", flush=True)
    print(f"total {time.time() - t_start:.0f} s")
    return 0 if len(results) == len(args.paths.split(",")) else 1


if __name__ == "__main__":
    sys.exit(main())
