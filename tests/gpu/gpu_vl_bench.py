"""GPU benchmark: a ~2B-shaped Qwen2-VL (random init, bf16, sdpa) trains a few packed steps on generated images.

Prints trained tokens/s, images/s, peak GPU memory and MFU. MFU counts FLOPs as launcher/training/flops.py does
(the language model's matmuls and causal attention within each sample, the LM head only at trained positions,
x3 for forward + backward) against the GPU's dense bf16 peak; the vision tower's FLOPs are printed beside it
as an estimate, not counted in MFU (as in training runs' metrics).

Standalone on purpose: it needs torch, transformers, numpy and PIL only (no Hydra, no data cache), so it runs
on a bare GPU machine. Positions and pixels are made here the way the training path makes them: 3-D mrope
positions per sample (Qwen2-VL's rule: text positions run on, an image's tokens take (t, row, col) offsets
from the position before it), text positions restarting per packed sample, a block-diagonal causal mask (sdpa;
no flash-attn package needed), and the Qwen2-VL image processor's patch layout (14 px patches, 2x2 merge,
the frame repeated for the temporal patch of 2).

    PYTHONPATH=. python tests/gpu/gpu_vl_bench.py                      # ~2B shape, 8 steps, ~1 min
    PYTHONPATH=. python tests/gpu/gpu_vl_bench.py --layers 4 --steps 4  # smaller
    PYTHONPATH=. python tests/gpu/gpu_vl_bench.py --device cpu --dtype float32 --tiny   # smoke test on CPU
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from launcher.training.flops import causal_pairs, gpu_peak_flops, training_flops  # noqa: E402

IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151655, 151656, 151652, 151653
IM_START, IM_END, NEWLINE = 151644, 151645, 198
VOCAB = 151936
PATCH, MERGE, TEMPORAL = 14, 2, 2
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Qwen2-VL-2B-Instruct's shape
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=8960)
    p.add_argument("--vision-depth", type=int, default=32)
    p.add_argument("--vision-dim", type=int, default=1280)
    p.add_argument("--vision-heads", type=int, default=16)
    p.add_argument("--image-side", type=int, default=448, help="square images, pixels (448: 256 image tokens)")
    p.add_argument("--seq-len", type=int, default=4096, help="packed row length")
    p.add_argument("--micro-batch", type=int, default=1, help="packed rows per step")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--train-vision", action="store_true", help="train the vision tower too (default: frozen, LF's default)")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--max-seconds", type=float, default=75.0, help="stop timing steps after this much wall time")
    p.add_argument("--tiny", action="store_true", help="a tiny model and short rows (a CPU smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tiny:
        args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate = 128, 2, 4, 2, 256
        args.vision_depth, args.vision_dim, args.vision_heads, args.image_side = 1, 64, 2, 56
        args.seq_len, args.steps, args.warmup = 256, 2, 1
    return args


def build_model(args, device, dtype):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    head_dim = args.hidden // args.heads
    quarter = head_dim // 16  # mrope sections split the rotary half 2:3:3 (16/24/24 for head_dim 128)
    config = Qwen2VLConfig(
        text_config=dict(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=VOCAB,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                          "mrope_section": [quarter * 2, quarter * 3, head_dim // 2 - quarter * 5]}),
        vision_config=dict(depth=args.vision_depth, embed_dim=args.vision_dim, hidden_size=args.hidden,
                           num_heads=args.vision_heads, mlp_ratio=4, patch_size=PATCH, spatial_merge_size=MERGE,
                           temporal_patch_size=TEMPORAL),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.train()
    if not args.train_vision:
        for name, p in model.named_parameters():
            if name.startswith("model.visual.") and not name.startswith("model.visual.merger."):
                p.requires_grad_(False)  # LF's default: tower frozen, projector (merger) and LM trained
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def shape_image(rng: random.Random, side: int):
    """One large coloured shape on white (the demo's kind of picture), as RGB float [H, W, 3] in [0, 1]."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    size = rng.randint(side // 2, side - 4)
    x, y = rng.randint(0, side - size), rng.randint(0, side - size)
    colour = tuple(rng.randrange(256) for _ in range(3))
    [pen.ellipse, pen.rectangle][rng.randrange(2)]([x, y, x + size, y + size], fill=colour)
    return np.asarray(image, np.float32) / 255.0


def patchify(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Qwen2-VL's image processor layout: [patches, C*T*P*P] and the (t, h, w) grid (side a multiple of 28)."""
    h, w = image.shape[:2]
    x = ((image - MEAN) / STD).transpose(2, 0, 1)[None].repeat(TEMPORAL, axis=0)  # [T, C, H, W]
    gh, gw = h // PATCH, w // PATCH
    x = x.reshape(1, TEMPORAL, 3, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gh * gw, 3 * TEMPORAL * PATCH * PATCH), (1, gh, gw)


def make_sample(rng: random.Random, side: int) -> dict:
    """A user turn with one image and a question, an answer that is trained: ids, labels, 3-D positions."""
    grid = (1, side // PATCH, side // PATCH)
    n_image = grid[1] * grid[2] // MERGE ** 2
    text = lambda n: [rng.randrange(1000, 150000) for _ in range(n)]  # noqa: E731
    prompt_head = [IM_START] + text(3) + [NEWLINE, IM_START] + text(2) + [NEWLINE, VISION_START]
    prompt_tail = [VISION_END] + text(rng.randint(8, 24)) + [IM_END, NEWLINE, IM_START] + text(2) + [NEWLINE]
    answer = text(rng.randint(8, 40)) + [IM_END]
    ids = prompt_head + [IMAGE_TOKEN] * n_image + prompt_tail + answer
    labels = [-100] * (len(ids) - len(answer)) + answer
    # Qwen2-VL's rope index: text runs on; the image's tokens take (0, row, col) + the position after the text
    # before it; the text after resumes at the image's largest position + 1.
    a = len(prompt_head)
    pos = np.zeros((3, len(ids)), np.int64)
    pos[:, :a] = np.arange(a)
    gh, gw = grid[1] // MERGE, grid[2] // MERGE
    rows, cols = np.divmod(np.arange(n_image), gw)
    pos[0, a: a + n_image] = a
    pos[1, a: a + n_image] = a + rows
    pos[2, a: a + n_image] = a + cols
    start = a + max(gh, gw)
    rest = len(ids) - a - n_image
    pos[:, a + n_image:] = start + np.arange(rest)
    return {"ids": ids, "labels": labels, "pos": pos, "image": shape_image(rng, side)}


def packed_batch(rng: random.Random, args, device) -> dict:
    """micro_batch rows of samples packed up to seq_len (best effort, first fit), right-padded."""
    rows = []
    for _ in range(args.micro_batch):
        samples, used = [], 0
        while True:
            s = make_sample(rng, args.image_side)
            if used + len(s["ids"]) > args.seq_len:
                break
            samples.append(s)
            used += len(s["ids"])
        if not samples:
            raise SystemExit(f"--seq-len {args.seq_len} is shorter than one sample; raise it or lower --image-side")
        rows.append(samples)
    T = args.seq_len
    B = len(rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    pos = torch.zeros(4, B, T, dtype=torch.long)
    segment = torch.full((B, T), -1, dtype=torch.long)
    pixels, grids, lengths, images = [], [], [], 0
    for b, samples in enumerate(rows):
        off = 0
        for k, s in enumerate(samples):
            n = len(s["ids"])
            ids[b, off: off + n] = torch.tensor(s["ids"])
            labels[b, off: off + n] = torch.tensor(s["labels"])
            pos[0, b, off: off + n] = torch.arange(n)  # text positions restart per sample
            pos[1:, b, off: off + n] = torch.from_numpy(s["pos"])
            segment[b, off: off + n] = k
            patches, grid = patchify(s["image"])
            pixels.append(patches)
            grids.append(grid)
            lengths.append(n)
            images += 1
            off += n
        segment[b, off:] = len(samples)  # padding: its own block
        pos[:, b, off:] = torch.arange(T - off)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = ((segment[:, :, None] == segment[:, None, :]) & causal)[:, None]
    return {"input_ids": ids.to(device), "labels": labels.to(device), "position_ids": pos.to(device),
            "attention_mask": mask.to(device), "pixel_values": torch.from_numpy(np.concatenate(pixels)).to(device),
            "image_grid_thw": torch.tensor(grids, dtype=torch.long, device=device),
            "mm_token_type_ids": (ids == IMAGE_TOKEN).long().to(device),
            "segment_lengths": lengths, "images": images, "tokens": sum(lengths)}


def train_step(model, batch, optimizer, dtype) -> float:
    """Loss as the repo computes it: the backbone's hidden states, the LM head only at trained positions."""
    out = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], pixel_values=batch["pixel_values"].to(dtype),
                      image_grid_thw=batch["image_grid_thw"], mm_token_type_ids=batch["mm_token_type_ids"],
                      use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    target = batch["labels"][:, 1:]
    trained = target != -100
    logits = model.lm_head(hidden[trained]).float()
    loss = torch.nn.functional.cross_entropy(logits, target[trained])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def vision_forward_flops(args, patches: int, images: int) -> float:
    """Estimate: the tower's matmuls per patch (qkv, proj, 2-layer MLP), attention within each image, merger."""
    d = args.vision_dim
    per_patch = args.vision_depth * 2 * (4 * d * d + 2 * d * 4 * d) + 2 * 3 * TEMPORAL * PATCH * PATCH * d
    per_image_patches = patches // max(images, 1)
    attention = args.vision_depth * 2 * 2 * d * per_image_patches ** 2 * images
    merged = patches // MERGE ** 2
    merger = 2 * merged * ((d * MERGE ** 2) ** 2 + d * MERGE ** 2 * args.hidden)
    return float(per_patch * patches + attention + merger)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = build_model(args, device, dtype)
    total = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    build_s = time.time() - started
    rng = random.Random(args.seed)
    print(f"model: Qwen2-VL shape, {total / 1e9:.2f}B parameters ({sum(p.numel() for p in trainable) / 1e9:.2f}B"
          f" trainable), {args.dtype}, sdpa, built in {build_s:.1f} s on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first_step = None
    for step in range(args.warmup):
        batch = packed_batch(rng, args, device)
        t = time.time()
        train_step(model, batch, optimizer, dtype)
        sync()
        first_step = first_step or time.time() - t
    tokens = images = 0
    flops = vision_flops = 0.0
    timed = 0.0
    losses = []
    for step in range(args.steps):
        if time.time() - started > args.max_seconds:
            print(f"stopping after {step} timed steps: --max-seconds {args.max_seconds} reached")
            break
        batch = packed_batch(rng, args, device)  # made outside the timed span (the data-loader's work)
        sync()
        t = time.time()
        losses.append(train_step(model, batch, optimizer, dtype))
        sync()
        timed += time.time() - t
        tokens += batch["tokens"]
        images += batch["images"]
        trained = int((batch["labels"][:, 1:] != -100).sum())
        flops += training_flops(model.config, batch["tokens"], trained, causal_pairs(batch["segment_lengths"]))
        passes = 3 if args.train_vision else 1  # a frozen tower (pixels need no gradient) runs forward only
        vision_flops += passes * vision_forward_flops(args, batch["pixel_values"].shape[0], batch["images"])
    if not timed:
        print("no timed step: raise --max-seconds or lower the model size")
        return 1
    peak = gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    print(f"rows: {args.micro_batch} x {args.seq_len} tokens packed, {args.image_side}px images"
          f" ({(args.image_side // PATCH) ** 2 // MERGE ** 2} image tokens each)")
    print(f"timed steps: {len(losses)} in {timed:.2f} s (after {args.warmup} warm-up; first step {first_step or 0:.2f} s);"
          f" loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"tokens/s: {tokens / timed:,.0f}   images/s: {images / timed:,.1f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB allocated,"
              f" {torch.cuda.max_memory_reserved(device) / 2**30:.1f} GiB reserved")
    achieved = flops / timed
    print(f"language-model TFLOP/s: {achieved / 1e12:.1f}"
          + (f"   MFU: {100 * achieved / peak:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16 dense" if peak else "   MFU: n/a (no known peak)"))
    print(f"vision tower, estimated: {vision_flops / timed / 1e12:.1f} TFLOP/s more"
          + (f" (MFU with it: {100 * (flops + vision_flops) / timed / peak:.1f}%)" if peak else ""))
    print(f"wall: {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
