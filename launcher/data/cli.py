"""``launcher data preview|dump``: see what training will see, before it waits in a queue.

preview: N samples as the model gets them, trained spans marked (green on a terminal, ``[[...]]`` otherwise),
then the counts (samples, dropped, tokens, trained tokens, packing fill). For a VL model each image's span is
listed (token positions, image tokens, grid) and a run of image tokens prints as ``<|image_pad|>*N``.
dump: every row as JSON Lines (input_ids, labels, and position_ids/segment_lengths for packed rows).

Both take the same Hydra overrides as ``launcher train`` (``data=alpaca_demo data.cutoff_len=512``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Optional, Sequence

from launcher.errors import LauncherError

GREEN, DIM, RESET = "\033[32m", "\033[2m", "\033[0m"


def load_tokenizer(model_cfg):
    from launcher.models.tokenizers import load_tokenizer as load

    return load(model_cfg)


def split_segments(row: dict) -> list[dict]:
    """A packed row back into its samples (an unpacked row is one segment)."""
    if "chosen_input_ids" in row:
        return [{"input_ids": row[f"{s}_input_ids"], "labels": row[f"{s}_labels"], "side": s} for s in ("chosen", "rejected")]
    out, offset, image = [], 0, 0
    lengths = row.get("segment_lengths", [len(row["input_ids"])])
    per_segment = row.get("segment_images", [len(row.get("images") or [])])
    for n, k in zip(lengths, per_segment):
        out.append({"input_ids": row["input_ids"][offset: offset + n], "labels": row["labels"][offset: offset + n],
                    "images": (row.get("images") or [])[image: image + k],
                    "image_grid_thw": (row.get("image_grid_thw") or [])[image: image + k]})
        offset += n
        image += k
    return out


def image_lines(seg: dict, vision) -> list[str]:
    """Where each image's tokens sit in the sample, how many there are, and the grid they come from."""
    from launcher.data.vision import describe_positions

    lines = []
    for k, span in enumerate(describe_positions(seg, vision)):
        grid = seg["image_grid_thw"][k] if k < len(seg.get("image_grid_thw") or []) else None
        path = seg["images"][k] if k < len(seg.get("images") or []) else "?"
        lines.append(f"    image {k}: tokens [{span['start']}, {span['end']}) = vision_start + {span['image_tokens']}"
                     f" image tokens + vision_end, grid {'x'.join(map(str, grid or []))}, {path}")
    return lines


def compress_image_runs(text: str) -> str:
    return re.sub(r"(?:<\|image_pad\|>)+", lambda m: f"<|image_pad|>*{m.group(0).count('<|image_pad|>')}", text)


def render_marked(tokenizer, input_ids: list, labels: list, color: bool) -> str:
    """Decoded text with trained runs marked: colours on a terminal, [[...]] in a file or pipe."""
    runs: list[tuple[bool, list]] = []
    for tok, lab in zip(input_ids, labels):
        trained = lab != -100
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(tok)
        else:
            runs.append((trained, [tok]))
    parts = []
    for trained, ids in runs:
        text = compress_image_runs(tokenizer.decode(ids, skip_special_tokens=False))
        if color:
            parts.append(f"{GREEN if trained else DIM}{text}{RESET}")
        else:
            parts.append(f"[[{text}]]" if trained else text)
    return "".join(parts)


def format_stats(stats: dict) -> str:
    keys = ("samples", "dropped", "rows", "tokens", "trained_tokens", "images", "image_tokens", "dropped_image_cut",
            "packing_fill", "eval_samples", "template", "cache_hit")
    line = "  ".join(f"{k}={stats[k]}" for k in keys if k in stats)
    note = f"\nnote: {stats['template_note']}" if stats.get("template_note") else ""
    return line + note


def preview(bundle, tokenizer, n: int, color: bool) -> str:
    blocks = []
    for row in bundle.train:
        for seg in split_segments(row):
            if len(blocks) >= n:
                break
            head = f"--- sample {len(blocks)}" + (f" ({seg['side']})" if "side" in seg else "")
            head += f": {len(seg['input_ids'])} tokens, {sum(l != -100 for l in seg['labels'])} trained"
            if bundle.vision is not None and seg.get("images"):
                head += f", {len(seg['images'])} image(s)\n" + "\n".join(image_lines(seg, bundle.vision))
            blocks.append(head + "\n" + render_marked(tokenizer, seg["input_ids"], seg["labels"], color))
        if len(blocks) >= n:
            break
    legend = "trained text in green" if color else "trained text in [[...]]"
    return "\n".join(blocks + [f"--- {legend}", format_stats(bundle.stats)])


def dump(bundle, path: str, split: str) -> int:
    rows = bundle.train if split == "train" else (bundle.eval or [])
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return len(rows)


def data_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="launcher data", description="Inspect the training data.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_preview = sub.add_parser("preview", help="show N formatted samples with trained spans marked, and counts")
    p_preview.add_argument("-n", "--num", type=int, default=3)
    p_preview.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p_dump = sub.add_parser("dump", help="write the tokenized rows as JSON Lines")
    p_dump.add_argument("--out", required=True)
    p_dump.add_argument("--split", choices=("train", "eval"), default="train")
    for p in (p_preview, p_dump):
        p.add_argument("overrides", nargs="*", help="Hydra overrides, as for launcher train")
    args = parser.parse_args(list(argv))
    try:
        from launcher.config.compose import compose_config
        from launcher.data import build_datasets

        cfg = compose_config(args.overrides)
        tokenizer = load_tokenizer(cfg.model)
        bundle = build_datasets(cfg, tokenizer)
        if args.command == "preview":
            color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
            print(preview(bundle, tokenizer, args.num, color))
        else:
            count = dump(bundle, args.out, args.split)
            print(f"wrote {count} {args.split} rows to {args.out}")
            print(format_stats(bundle.stats))
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return data_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
