"""The data pipeline: registry -> raw rows -> canonical samples -> token rows -> (packed) rows -> batches.

``build_datasets`` is what a recipe calls; ``DataBundle`` is what it gets back. Modules, one job each:
registry (dataset_info.json), readers (file types, hub), formats (alpaca/sharegpt -> canonical samples),
mixing (caps, mix, held-out split), templates (chat rendering split into turns), tokenize (label masks,
truncation), packing (best-fit-decreasing), collate (batches and attention masks), cache (preprocess once).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from launcher.config.schema import Config, DataConfig
from launcher.errors import DataError
from launcher.paths import REPO_ROOT
from launcher.data.cache import cache_key, cached, file_fingerprint, tokenizer_fingerprint
from launcher.data.formats import row_to_sample
from launcher.data.mixing import mix, resample, split_eval, take
from launcher.data.packing import pack_rows, packing_fill, plan_packs
from launcher.data.readers import read_spec_rows
from launcher.data.registry import DatasetSpec, load_registry, lookup
from launcher.data.templates import choose_renderer
from launcher.data.tokenize import check_trainable, row_length, row_trained, tokenize_sample
from launcher.data.vision import check_media



@dataclass
class DataBundle:
    train: list
    """Token rows: {input_ids, labels} (+ position_ids, segment_lengths when packed), or preference rows."""
    eval: Optional[list]
    eval_samples: Optional[list]
    """Canonical held-out samples (messages), for generation checks."""
    collate: Callable[[list], dict]
    stats: dict = field(default_factory=dict)
    kind: str = "sft"
    """sft, pt (pretraining text only) or preference (rows with chosen_*/rejected_*; collate gives 2B rows)."""
    packed: bool = False
    attn_implementation: str = "sdpa"
    """What ``collate`` builds masks for."""
    pad_token_id: int = 0
    vision: Optional[object] = None
    """VL models: the VisionData (image processor, limits, vision token ids) the rows were made with."""
    rope_index: Optional[Callable] = None
    """VL models: the model's own get_rope_index (launcher.models.vision.rope_index_for)."""

    def collate_for(self, attn_implementation: str, dummy_image: bool = True) -> Callable[[list], dict]:
        """dummy_image (VL): batches without images carry a zero-weight dummy image (sharded engines)."""
        from launcher.data.collate import make_collate

        return make_collate(self.kind, self.pad_token_id, attn_implementation, self.vision, self.rope_index,
                            dummy_image)

def resolve_dataset_dir(data: DataConfig) -> Path:
    path = Path(data.dataset_dir)
    return path if path.is_absolute() else (REPO_ROOT / path)


def resolve_cache_dir(data: DataConfig) -> Path:
    path = Path(data.cache_dir) if data.cache_dir else REPO_ROOT / ".cache" / "launcher" / "data"
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_specs(data: DataConfig) -> tuple[list[DatasetSpec], list[DatasetSpec]]:
    dataset_dir = resolve_dataset_dir(data)
    registry = load_registry(dataset_dir)
    train = [lookup(registry, e.name, dataset_dir) for e in data.datasets]
    evals = [lookup(registry, e.name, dataset_dir) for e in data.eval_datasets]
    return train, evals


def load_samples(spec: DatasetSpec, caps: list[Optional[int]], seed: int) -> list[dict]:
    """Canonical samples of one dataset, reading no further than the caps need."""
    cap = min((c for c in caps if c is not None), default=None)
    samples = []
    for where, row in read_spec_rows(spec):
        if cap is not None and spec.num_samples is None and len(samples) >= cap:
            break
        samples.append(row_to_sample(row, spec, where))
        samples[-1]["where"] = where
    return take(resample(samples, spec.num_samples, seed), caps)


def load_mix(data: DataConfig, entries: list, specs: list[DatasetSpec], seed: int) -> list[dict]:
    groups = [load_samples(spec, [e.max_samples, data.max_samples], seed) for e, spec in zip(entries, specs)]
    return mix(groups, [e.weight for e in entries], data.mix_strategy, seed)


def data_kind(specs: list[DatasetSpec]) -> str:
    ranking = {s.ranking for s in specs}
    if len(ranking) > 1:
        names = ", ".join(f"{s.name} (ranking={s.ranking})" for s in specs)
        raise DataError(f"data.datasets: preference (ranking) and non-preference datasets cannot be mixed: {names}")
    if ranking == {True}:
        return "preference"
    return "pt" if all(s.is_text() for s in specs) else "sft"


def tokenize_vision_sample(tokenizer, renderer, sample: dict, data: DataConfig, vision, where: str) -> list[dict]:
    """``tokenize_sample`` for a sample with images: placeholders expanded to vision spans before rendering;
    rows whose truncation cut a span are None (the caller drops or refuses them); labels off vision tokens."""
    from launcher.data.vision import expand_placeholders, image_token_count, mask_vision_labels, sample_grids, spans_intact

    grids = sample_grids(sample, vision, data.cutoff_len, where)
    counts = [image_token_count(g, vision.merge_size) for g in grids]
    expanded = dict(sample, messages=expand_placeholders(sample["messages"], counts, vision))
    used = sum(m["content"].count("<image>") for m in sample["messages"])
    for key in ("chosen", "rejected"):
        if key in sample:
            expanded[key] = expand_placeholders([sample[key]], counts[used:], vision)[0]
    rows = []
    for row in tokenize_sample(tokenizer, renderer, expanded, data.cutoff_len, data.train_on_prompt,
                               data.mask_history, where):
        sides = ("chosen_", "rejected_") if "chosen_input_ids" in row else ("",)
        if not all(spans_intact(row[f"{s}input_ids"], counts, vision) for s in sides):
            rows.append(None)
            continue
        for s in sides:
            row[f"{s}labels"] = mask_vision_labels(row[f"{s}labels"], row[f"{s}input_ids"], vision)
        row["images"] = list(sample["images"])
        row["image_grid_thw"] = [list(g) for g in grids]
        rows.append(row)
    return rows


def tokenize_all(samples: list[dict], tokenizer, renderer, data: DataConfig, stats: dict, progress: bool,
                 desc: str, vision=None, model_name: str = "") -> list[dict]:
    from tqdm import tqdm

    rows = []
    for sample in tqdm(samples, desc=desc, unit="sample", disable=not progress, file=sys.stderr, leave=False):
        where = sample.get("where", "sample")
        check_media(sample, renderer.name, getattr(renderer, "image_slot", True), vision is not None, model_name,
                    where)
        if sample.get("images"):
            made = tokenize_vision_sample(tokenizer, renderer, sample, data, vision, where)
        else:
            made = tokenize_sample(tokenizer, renderer, sample, data.cutoff_len, data.train_on_prompt,
                                   data.mask_history, where)
        for row in made:
            if row is None:  # data.cutoff_len cut an image's span: the model would fail on it (LF#5964)
                if not data.lenient:
                    raise DataError(f"{where}: data.cutoff_len={data.cutoff_len} cuts through an image's tokens;"
                                    " raise data.cutoff_len, lower data.image_max_pixels, or set data.lenient=true"
                                    " to drop such rows")
                stats["dropped_image_cut"] = stats.get("dropped_image_cut", 0) + 1
                stats["dropped"] += 1
            elif check_trainable(row, where, data.lenient) is None:
                stats["dropped"] += 1
            else:
                rows.append(row)
    return rows


def summarize(rows: list[dict], samples: int, dropped: int, packed: Optional[list], cutoff_len: int) -> dict:
    stats = {
        "samples": samples,
        "dropped": dropped,
        "rows": len(packed) if packed is not None else len(rows),
        "tokens": sum(row_length(r) for r in rows),
        "trained_tokens": sum(row_trained(r) for r in rows),
    }
    if packed is not None:
        stats["packed_rows"] = len(packed)
        stats["packing_fill"] = round(packing_fill(packed, cutoff_len), 4)
    return stats


def preprocess(cfg: Config, tokenizer, renderer, kind: str, train_specs, eval_specs, progress: bool,
               vision=None) -> dict:
    """Everything the cache stores: rows, held-out samples and counts."""
    data, seed = cfg.data, cfg.train.seed
    samples = load_mix(data, data.datasets, train_specs, seed)
    if eval_specs:
        eval_samples = load_mix(data, data.eval_datasets, eval_specs, seed)
    else:
        samples, eval_samples = split_eval(samples, data.val_size, seed)
    train_counts, eval_counts = {"dropped": 0}, {"dropped": 0}
    name = cfg.model.name_or_path or cfg.model.name
    train_rows = tokenize_all(samples, tokenizer, renderer, data, train_counts, progress, "tokenize train", vision, name)
    eval_rows = tokenize_all(eval_samples, tokenizer, renderer, data, eval_counts, progress, "tokenize eval", vision, name)
    if not train_rows:
        raise DataError("data.datasets: no training rows left after preprocessing; check the data and data.cutoff_len")
    pack = data.packing and kind != "preference"
    packed_train = pack_rows(train_rows, plan_packs([len(r["input_ids"]) for r in train_rows], data.cutoff_len)) if pack else None
    packed_eval = pack_rows(eval_rows, plan_packs([len(r["input_ids"]) for r in eval_rows], data.cutoff_len)) if pack else None
    stats = summarize(train_rows, len(samples), train_counts["dropped"], packed_train, data.cutoff_len)
    stats["eval_samples"] = len(eval_samples)
    stats["eval_dropped"] = eval_counts["dropped"]
    if vision is not None:
        stats["images"] = sum(len(r.get("images") or []) for r in train_rows)
        stats["image_tokens"] = sum(r["input_ids"].count(vision.ids["image_pad"]) for r in train_rows
                                    if "input_ids" in r)
        stats["dropped_image_cut"] = train_counts.get("dropped_image_cut", 0)
    for s in samples + eval_samples:
        s.pop("where", None)
    return {
        "train": packed_train if pack else train_rows,
        "eval": (packed_eval if pack else eval_rows) or None,
        "eval_samples": eval_samples or None,
        "stats": stats,
    }


def preprocess_key(cfg: Config, tokenizer, renderer, train_specs, eval_specs, vision=None) -> str:
    data = cfg.data
    files = {s.name: file_fingerprint(s.source()) if s.file_name else s.hf_hub_url for s in train_specs + eval_specs}
    specs = {s.name: {k: str(v) for k, v in vars(s).items()} for s in train_specs + eval_specs}
    options = {k: getattr(data, k) for k in ("cutoff_len", "train_on_prompt", "mask_history", "packing", "lenient",
                                             "max_samples", "mix_strategy", "val_size", "template")}
    if vision is not None:  # the image files are hashed by the data files' paths only; sizes decide the tokens
        options["vision"] = vision.fingerprint()
    entries = [vars(e) for e in data.datasets] + [{"eval": vars(e)} for e in data.eval_datasets]
    return cache_key({"files": files, "specs": specs, "options": options, "entries": entries, "seed": cfg.train.seed,
                      "tokenizer": tokenizer_fingerprint(tokenizer), "renderer": renderer.name})


def build_datasets(cfg: Config, tokenizer, *, attn_implementation: Optional[str] = None,
                   progress: Optional[bool] = None) -> DataBundle:
    """Tokenized (and packed) train/eval rows plus their collate function, from the cache when it has them.

    attn_implementation: what the model runs (sdpa, eager, flash_attention_2); decides the attention mask of
    packed batches. Default: ``cfg.model.attn_implementation``, with auto read as sdpa.
    progress: show a progress bar (default: when stderr is a terminal and this is rank 0).
    """
    data = cfg.data
    train_specs, eval_specs = resolve_specs(data)
    kind = data_kind(train_specs + eval_specs)
    vision, info = vision_data(cfg, tokenizer)
    if kind == "pt" and not data.template and not getattr(tokenizer, "chat_template", None):
        renderer, note = choose_renderer(tokenizer, "plain")  # plain text needs no chat format
    elif info is not None and not data.template:
        renderer, note = choose_renderer(tokenizer, info.template)  # LLaMA-Factory's template for the family
    else:
        renderer, note = choose_renderer(tokenizer, data.template)
    if progress is None:
        progress = sys.stderr.isatty() and int(__import__("os").environ.get("RANK", "0")) == 0

    def build() -> dict:
        return preprocess(cfg, tokenizer, renderer, kind, train_specs, eval_specs, progress, vision)

    if data.use_cache:
        key = preprocess_key(cfg, tokenizer, renderer, train_specs, eval_specs, vision)
        result, hit = cached(resolve_cache_dir(data), key, build)
    else:
        key, result, hit = None, build(), False
    stats = dict(result["stats"], template=renderer.name, template_note=note, cache_hit=hit, cache_key=key)
    from launcher.data.collate import make_collate, resolve_attn_implementation  # torch: only when batches are made

    attn = resolve_attn_implementation(attn_implementation or cfg.model.attn_implementation)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rope_index = None
    if vision is not None:
        from launcher.models.vision import model_config, rope_index_for

        rope_index = rope_index_for(model_config(cfg.model))
    return DataBundle(result["train"], result["eval"], result["eval_samples"],
                      # VL: a batch without images runs a zero-weight dummy image, so that every rank runs the
                      # vision tower (ZeRO-3/FSDP gather in forward, DDP expects the same used parameters)
                      make_collate(kind, pad_id, attn, vision, rope_index, dummy_image=vision is not None),
                      stats, kind=kind, packed=data.packing and kind != "preference", attn_implementation=attn,
                      pad_token_id=pad_id, vision=vision, rope_index=rope_index)


def vision_data(cfg: Config, tokenizer):
    """(VisionData, VisionModelInfo) for a Qwen-VL model, (None, None) for a text model."""
    from launcher.data.vision import VisionData
    from launcher.models.vision import build_image_processor, vision_info

    info = vision_info(cfg.model)
    if info is None:
        return None, None
    if cfg.data.image_min_pixels > cfg.data.image_max_pixels:
        raise DataError(f"data.image_min_pixels ({cfg.data.image_min_pixels}) is above data.image_max_pixels"
                        f" ({cfg.data.image_max_pixels}); lower it")
    vision = VisionData(build_image_processor(info), cfg.data.image_max_pixels, cfg.data.image_min_pixels)
    return vision.with_tokenizer(tokenizer), info


def build_preference_datasets(cfg: Config, tokenizer, **kwargs) -> DataBundle:
    """``build_datasets`` for DPO: refuses datasets that are not ``ranking: true``."""
    bundle = build_datasets(cfg, tokenizer, **kwargs)
    if bundle.kind != "preference":
        raise DataError("method=dpo needs preference data: datasets marked ranking: true in dataset_info.json"
                        " (e.g. data.datasets=[dpo_en_demo])")
    return bundle


__all__ = ["DataBundle", "build_datasets", "build_preference_datasets"]
