"""``launcher data preview|dump``: see what training will see, before it waits in a queue.

preview: N samples as the model gets them, trained spans marked (green on a terminal, ``[[...]]`` otherwise),
then the counts (samples, dropped, tokens, trained tokens, packing fill). For a VL model each image's span is
listed (token positions, image tokens, grid) and a run of image tokens prints as ``<|image_pad|>*N``; each
video's frames (sampled, of the stream's), their size, grid and tokens likewise (``<|video_pad|>*N``), and
each audio's seconds, feature frames and tokens (``<|AUDIO|>*N``).
``load_preview`` gives the same as data (``PreviewSample``: the text runs, trained or not, and a sample's
images) for ``launcher ui``'s preview.
dump: every row as JSON Lines (input_ids, labels, and position_ids/segment_lengths for packed rows).

Both take the same Hydra overrides as ``launcher train`` (``data=alpaca_demo data.cutoff_len=512``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from launcher.errors import LauncherError

GREEN, DIM, RESET = "\033[32m", "\033[2m", "\033[0m"


def load_tokenizer(model_cfg):
    from launcher.models.tokenizers import load_tokenizer as load

    return load(model_cfg)


def split_segments(row: dict) -> list[dict]:
    """A packed row back into its samples (an unpacked row is one segment); a VL row's images go with the
    segment whose placeholders they fill (``segment_images``: images per segment)."""
    if "chosen_input_ids" in row:
        return [{"input_ids": row[f"{s}_input_ids"], "labels": row[f"{s}_labels"], "side": s} for s in ("chosen", "rejected")]
    out, offset, image, video, audio = [], 0, 0, 0, 0
    lengths = row.get("segment_lengths", [len(row["input_ids"])])
    per_segment = row.get("segment_images") or (
        [len(row.get("images") or [])] if len(lengths) == 1 else [0] * len(lengths))
    audios_per_segment = row.get("segment_audios") or (
        [len(row.get("audios") or [])] if len(lengths) == 1 else [0] * len(lengths))
    videos_per_segment = row.get("segment_videos") or (
        [len(row.get("videos") or [])] if len(lengths) == 1 else [0] * len(lengths))
    for n, k, v, a in zip(lengths, per_segment, videos_per_segment, audios_per_segment):
        out.append({"input_ids": row["input_ids"][offset: offset + n], "labels": row["labels"][offset: offset + n],
                    "images": (row.get("images") or [])[image: image + k],
                    "image_grid_thw": (row.get("image_grid_thw") or [])[image: image + k],
                    "videos": (row.get("videos") or [])[video: video + v],
                    "video_grid_thw": (row.get("video_grid_thw") or [])[video: video + v],
                    "audios": (row.get("audios") or [])[audio: audio + a],
                    "audio_grid": (row.get("audio_grid") or [])[audio: audio + a]})
        audio += a
        offset += n
        image += k
        video += v
    return out


def compress_image_runs(text: str) -> str:
    """Runs of image (and video) pad tokens as ``<|image_pad|>*N``."""
    for pad in ("<|image_pad|>", "<|video_pad|>", "<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>"):  # (the last two: Omni's)
        text = re.sub(f"(?:{re.escape(pad)})+", lambda m, pad=pad: f"{pad}*{m.group(0).count(pad)}", text)
    return text


def marked_spans(tokenizer, input_ids: list, labels: list) -> list[tuple[str, bool]]:
    """The decoded text as runs of (text, trained): consecutive tokens with the same label mask decode together."""
    runs: list[tuple[bool, list]] = []
    for tok, lab in zip(input_ids, labels):
        trained = lab != -100
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(tok)
        else:
            runs.append((trained, [tok]))
    return [(compress_image_runs(tokenizer.decode(ids, skip_special_tokens=False)), trained) for trained, ids in runs]


def mark(spans: list, color: bool) -> str:
    """(text, trained) runs as one text: colours on a terminal, [[...]] in a file or pipe."""
    if color:
        return "".join(f"{GREEN if trained else DIM}{text}{RESET}" for text, trained in spans)
    return "".join(f"[[{text}]]" if trained else text for text, trained in spans)


def render_marked(tokenizer, input_ids: list, labels: list, color: bool) -> str:
    """Decoded text with trained runs marked."""
    return mark(marked_spans(tokenizer, input_ids, labels), color)


def format_stats(stats: dict) -> str:
    keys = ("samples", "dropped", "rows", "tokens", "trained_tokens", "images", "image_tokens", "videos", "video_tokens",
            "audios", "audio_tokens", "audio_seconds", "dropped_image_cut",
            "packing_fill", "eval_samples", "template", "cache_hit")
    line = "  ".join(f"{k}={stats[k]}" for k in keys if k in stats)
    note = f"\nnote: {stats['template_note']}" if stats.get("template_note") else ""
    return line + note


@dataclass
class PreviewSample:
    """One sample as the model gets it, for a terminal (``preview``) or a page (``launcher ui``)."""

    index: int
    side: Optional[str]
    """chosen / rejected for preference rows."""
    tokens: int
    trained: int
    spans: list
    """[(decoded text, trained)], in order."""
    images: list = field(default_factory=list)
    """The sample's image paths as its row names them (absolute, or relative to the dataset dir)."""
    image_tokens: list = field(default_factory=list)
    """Image tokens per image, where the model has a vision tower (else empty)."""
    image_spans: list = field(default_factory=list)
    """[{start, end, image_tokens}]: where each image's vision span sits in the sample."""
    image_grids: list = field(default_factory=list)
    """Each image's (t, h, w) patch grid, where the rows carry it."""
    videos: list = field(default_factory=list)
    """The sample's videos (a file, a frame folder, or frame paths joined by newlines)."""
    video_grids: list = field(default_factory=list)
    """Each video's (t, h, w) patch grid."""
    video_spans: list = field(default_factory=list)
    """Per video, [{start, end, video_tokens}] of its vision spans (Qwen3-VL: one per temporal patch)."""
    video_frames: list = field(default_factory=list)
    """Per video, {sampled, of, width, height, fps}: frames kept (the temporal patch's copy included), the
    stream's frame count (None for frame folders), the frame size after the video pixel limits."""
    audios: list = field(default_factory=list)
    """The sample's audio files."""
    audio_grids: list = field(default_factory=list)
    """Each audio's [samples at 16 kHz, feature frames, audio tokens]."""
    audio_spans: list = field(default_factory=list)
    """[(start, end)] of each audio's span (audio_bos..audio_eos) in the sample."""


def preview_samples(bundle, tokenizer, n: int) -> list[PreviewSample]:
    """The first ``n`` samples of the train rows (a packed row split back into its samples)."""
    vision = getattr(bundle, "vision", None)
    out: list[PreviewSample] = []
    for row in bundle.train:
        for seg in split_segments(row):
            if len(out) >= n:
                break
            sample = PreviewSample(index=len(out), side=seg.get("side"), tokens=len(seg["input_ids"]),
                                   trained=sum(lab != -100 for lab in seg["labels"]),
                                   spans=marked_spans(tokenizer, seg["input_ids"], seg["labels"]),
                                   images=list(seg.get("images") or []),
                                   image_grids=[list(g) for g in seg.get("image_grid_thw") or []],
                                   videos=list(seg.get("videos") or []),
                                   video_grids=[list(g) for g in seg.get("video_grid_thw") or []],
                                   audios=list(seg.get("audios") or []),
                                   audio_grids=[list(g) for g in seg.get("audio_grid") or []])
            audio = getattr(bundle, "audio", None)
            if audio is not None and sample.audios:
                from launcher.data.audio import audio_spans

                sample.audio_spans = audio_spans(seg["input_ids"], audio)
            if vision is not None and (sample.images or sample.videos):
                from launcher.data.vision import describe_positions  # the VL port's; absent where VL is

                spans = describe_positions(seg, vision)
                sample.image_spans = [span for span in spans if span["image_tokens"]]
                sample.image_tokens = [span["image_tokens"] for span in sample.image_spans]
                add_video_details(sample, [span for span in spans if span["video_tokens"]], vision)
            out.append(sample)
        if len(out) >= n:
            break
    return out


def add_video_details(sample: PreviewSample, spans: list, vision) -> None:
    """Each video's spans and frames (its header read again: what training will decode)."""
    from launcher.data.video import frame_paths, plan_video, probe_file

    for k, (source, grid) in enumerate(zip(sample.videos, sample.video_grids)):
        per_video = grid[0] if vision.video.family == "qwen3_vl" else 1
        sample.video_spans.append(spans[k * per_video: (k + 1) * per_video])
        try:
            plan = plan_video(source, vision.video, "preview")
            total = None if frame_paths(source) is not None else probe_file(source, "preview")[2]
        except LauncherError:  # changed since it was tokenized: the counts from the rows still show
            sample.video_frames.append(None)
            continue
        sample.video_frames.append({"sampled": len(plan.frames) + len(plan.frames) % 2, "of": total,
                                    "width": plan.frame_size[0], "height": plan.frame_size[1],
                                    "seconds_per_patch": round(plan.seconds_per_grid, 3)})


def video_lines(sample: PreviewSample) -> list[str]:
    """Per video: its frames, grid, tokens and where they sit."""
    lines = []
    for k, source in enumerate(sample.videos):
        spans = sample.video_spans[k] if k < len(sample.video_spans) else []
        tokens = sum(s["video_tokens"] for s in spans)
        grid = "x".join(map(str, sample.video_grids[k])) if k < len(sample.video_grids) else "?"
        where = f"tokens [{spans[0]['start']}, {spans[-1]['end']})" if spans else "no tokens"
        frames = sample.video_frames[k] if k < len(sample.video_frames) else None
        seen = (f"{frames['sampled']} frames" + (f" of {frames['of']}" if frames["of"] else "")
                + f" at {frames['width']}x{frames['height']}, {frames['seconds_per_patch']} s per temporal patch"
                if frames else "frames unknown")
        lines.append(f"    video {k}: {seen}, grid {grid}, {tokens} video tokens in {len(spans)} span(s) {where},"
                     f" {source.splitlines()[0]}")
    return lines


def audio_lines(sample: PreviewSample) -> list[str]:
    """Per audio: its seconds (at 16 kHz), feature frames and tokens, and where they sit."""
    lines = []
    for k, source in enumerate(sample.audios):
        samples, frames, tokens = sample.audio_grids[k] if k < len(sample.audio_grids) else ("?", "?", "?")
        seconds = f"{samples / 16000:.2f} s" if isinstance(samples, int) else "? s"
        where = "at tokens [{}, {})".format(*sample.audio_spans[k]) if k < len(sample.audio_spans) else "(cut)"
        lines.append(f"    audio {k}: {seconds}, {frames} frames -> {tokens} tokens {where}, {source}")
    return lines


def image_lines(sample: PreviewSample) -> list[str]:
    """Where each image's tokens sit in the sample, how many there are, and the grid they come from."""
    lines = []
    for k, span in enumerate(sample.image_spans):
        grid = sample.image_grids[k] if k < len(sample.image_grids) else None
        path = sample.images[k] if k < len(sample.images) else "?"
        lines.append(f"    image {k}: tokens [{span['start']}, {span['end']}) = vision_start + {span['image_tokens']}"
                     f" image tokens + vision_end, grid {'x'.join(map(str, grid or []))}, {path}")
    return lines


def preview(bundle, tokenizer, n: int, color: bool) -> str:
    return format_preview(preview_samples(bundle, tokenizer, n), bundle.stats, color)


def format_preview(samples: list, stats: dict, color: bool) -> str:
    """The terminal text of ``launcher data preview``: each sample's counts and marked text, then the counts."""
    blocks = []
    for sample in samples:
        head = f"--- sample {sample.index}" + (f" ({sample.side})" if sample.side else "")
        head += f": {sample.tokens} tokens, {sample.trained} trained"
        if sample.images:
            head += f", {len(sample.images)} image(s)"
            head += "".join("\n" + line for line in image_lines(sample))
        if sample.videos:
            head += f", {len(sample.videos)} video(s)"
            head += "".join("\n" + line for line in video_lines(sample))
        if sample.audios:
            head += f", {len(sample.audios)} audio(s)"
            head += "".join("\n" + line for line in audio_lines(sample))
        blocks.append(head + "\n" + mark(sample.spans, color))
    legend = "trained text in green" if color else "trained text in [[...]]"
    return "\n".join(blocks + [f"--- {legend}", format_stats(stats)])


def load_preview(overrides: Sequence[str], n: int) -> tuple:
    """(config, the first ``n`` samples, the data's counts) for ``launcher train``'s overrides."""
    from launcher.config.compose import compose_config

    cfg = compose_config(list(overrides))
    return (cfg,) + preview_config(cfg, n)


def preview_config(cfg, n: int) -> tuple:
    """(the first ``n`` samples, the data's counts) of a composed config: tokenized and cached exactly as
    training will (``launcher data preview`` and the web UI both call it)."""
    from launcher.data import build_datasets

    tokenizer = load_tokenizer(cfg.model)
    bundle = build_datasets(cfg, tokenizer)
    return preview_samples(bundle, tokenizer, n), dict(bundle.stats)


def build_store(overrides: Sequence[str]) -> str:
    """``launcher data build``: the tokenized store of the config ``overrides`` compose (the training run's own
    cache key: a run with the same overrides maps it and tokenizes nothing). Returns what to print."""
    from launcher.config.compose import compose_config

    return build_store_for(compose_config(list(overrides)))


def build_store_for(cfg) -> str:
    """``build_store`` of a composed config (the SLURM data job passes the run's resolved config)."""
    import time

    from launcher.data import build_datasets, resolve_cache_dir

    if not cfg.data.use_cache:
        raise LauncherError("data.use_cache=false: a build would be thrown away; drop that override to build the cache")
    started = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model)
    bundle = build_datasets(cfg, tokenizer)
    stats = bundle.stats
    folder = resolve_cache_dir(cfg.data) / str(stats["cache_key"])
    verdict = "already built (cache hit)" if stats.get("cache_hit") else f"built in {time.perf_counter() - started:.1f} s"
    return f"data store {verdict}: {folder}\n{format_stats(stats)}"


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
    p_build = sub.add_parser("build", help="tokenize into the cache, on this CPU, exactly as training will (same key)")
    for p in (p_preview, p_dump, p_build):
        p.add_argument("overrides", nargs="*", help="Hydra overrides, as for launcher train")
    args = parser.parse_args(list(argv))
    try:
        from launcher.config.compose import compose_config
        from launcher.data import build_datasets

        if args.command == "build":
            print(build_store(args.overrides))
        elif args.command == "preview":
            color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
            print(format_preview(*load_preview(args.overrides, args.num)[1:], color))
        else:
            cfg = compose_config(args.overrides)
            tokenizer = load_tokenizer(cfg.model)
            bundle = build_datasets(cfg, tokenizer)
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
