"""The data pipeline: registry -> raw rows -> canonical samples -> token rows -> (packed) rows -> batches.

``build_datasets`` is what a recipe calls; ``DataBundle`` is what it gets back. Modules, one job each:
registry (dataset_info.json), readers (file types, hub; streaming), formats (alpaca/sharegpt -> canonical
samples), mixing (caps, mix, held-out split), templates (chat rendering split into turns), tokenize (label
masks, truncation), workers (formatting and tokenizing in ``data.num_proc`` processes), store (token rows
on disk, memory-mapped), packing (best-fit-decreasing), collate (batches and attention masks), cache
(preprocess once), validate (whole-file checks for preflight).

At scale: every dataset is tokenized once into a store in read order; caps, ``num_samples``, the mix and
the held-out split then pick sample ids (the same seeded functions as on samples, so the same rows in the
same order), and the train/eval rows are index arrays into the store. No sample list is ever held whole.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from launcher.config.schema import Config, DataConfig
from launcher.disk_full import disk_full_guard, written_so_far
from launcher.errors import DataError
from launcher.paths import REPO_ROOT
from launcher.data.cache import cache_key, cached, file_fingerprint, sigterm_exits, tokenizer_fingerprint
from launcher.data.formats import row_to_sample
from launcher.data.mixing import mix, resample, split_eval, take
from launcher.data.packing import plan_packs_flat
from launcher.data.readers import parse_json_line, read_spec_items, read_spec_rows
from launcher.data.store import StoreWriter, Tokens, TokenRows, add_column, read_meta, write_meta, write_split
from launcher.data.workers import EncodedDataset, EncodeOptions, Encoder, default_num_proc
from launcher.data.registry import DatasetSpec, load_registry, lookup
from launcher.data.templates import choose_renderer



@dataclass
class DataBundle:
    train: Sequence
    """Token rows: {input_ids, labels} (+ position_ids, segment_lengths when packed), or preference rows;
    a ``store.TokenRows`` (memory-mapped; ``train[i]`` is a dict of lists)."""
    eval: Optional[Sequence]
    eval_samples: Optional[list]
    """Canonical held-out samples (messages), for generation checks."""
    collate: Callable[[list], dict]
    stats: dict = field(default_factory=dict)
    kind: str = "sft"
    """sft, pt (pretraining text only), preference (rows with chosen_*/rejected_*; collate gives 2B rows) or kto
    (rows with kto_tag and prompt_len; collate gives 2B rows: the rows, then their mismatched KL rows)."""
    packed: bool = False
    attn_implementation: str = "sdpa"
    """What ``collate`` builds masks for."""
    pad_token_id: int = 0
    vision: Optional[object] = None
    """VL models: the VisionData (image processor, limits, vision token ids) the rows were made with."""
    rope_index: Optional[Callable] = None
    """VL models: the model's own get_rope_index (launcher.models.vision.rope_index_for)."""
    cutoff_len: Optional[int] = None
    """KTO: where ``collate``'s mismatched KL rows are cut."""
    audio: Optional[object] = None
    """Audio models: the AudioData (feature extractor, audio token ids) the rows were made with."""

    def collate_for(self, attn_implementation: str, dummy_image: bool = True) -> Callable[[list], dict]:
        """dummy_image (VL): batches without images carry a zero-weight dummy image (sharded engines)."""
        from launcher.data.collate import make_collate

        return make_collate(self.kind, self.pad_token_id, attn_implementation, self.vision, self.rope_index,
                            dummy_image, cutoff_len=self.cutoff_len, audio=self.audio)

PACKABLE_KINDS = ("sft", "pt")
"""Kinds whose rows are packed with data.packing (a preference or KTO row is scored as a whole sequence)."""


def resolve_dataset_dir(data: DataConfig) -> Path:
    """data.dataset_dir (where dataset_info.json is); a relative one is under the checkout."""
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
    feedback = {s.is_feedback() for s in specs}
    if len(feedback) > 1:
        names = ", ".join(f"{s.name} (kto_tag={'yes' if s.is_feedback() else 'no'})" for s in specs)
        raise DataError(f"data.datasets: KTO (kto_tag) and other datasets cannot be mixed: {names}")
    if feedback == {True}:
        return "kto"
    return "pt" if all(s.is_text() for s in specs) else "sft"


def resolve_num_proc(data: DataConfig) -> int:
    return int(data.num_proc) if data.num_proc else default_num_proc()


def sample_records(enc: EncodedDataset, samples: np.ndarray) -> np.ndarray:
    """The records (token rows, or pairs) of the given samples, in their order."""
    counts = enc.count[samples]
    starts = np.repeat(enc.first[samples] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return starts + np.arange(int(counts.sum()), dtype=np.int64)


def encode_entries(encoder: Encoder, writer: StoreWriter, data: DataConfig, entries: list, specs: list,
                   seed: int, preference: bool, offset: int) -> tuple[list[EncodedDataset], list[list[int]]]:
    """Encode each entry's dataset (reading no further than its caps need); its samples as global ids, after
    ``num_samples`` and the caps, exactly as ``load_samples`` picks them."""
    encoded, groups = [], []
    for entry, spec in zip(entries, specs):
        caps = [entry.max_samples, data.max_samples]
        cap = min((c for c in caps if c is not None), default=None)
        enc = encoder.encode(spec, read_spec_items(spec), cap if spec.num_samples is None else None, writer,
                             preference, f"tokenize {spec.name}")
        picked = take(resample(list(range(len(enc.first))), spec.num_samples, seed), caps)
        groups.append([offset + i for i in picked])
        offset += len(enc.first)
        encoded.append(enc)
    return encoded, groups


def read_samples_at(specs: list[DatasetSpec], encoded: list[EncodedDataset], ids: list[int]) -> list[dict]:
    """Canonical samples by global id, read again from the files (only the held-out ones are ever needed)."""
    bounds = np.cumsum([0] + [len(e.first) for e in encoded])
    wanted: dict[int, dict[int, None]] = {}
    for g in ids:
        d = int(np.searchsorted(bounds, g, side="right")) - 1
        wanted.setdefault(d, {})[int(encoded[d].raw_pos[g - bounds[d]])] = None
    found: dict[tuple[int, int], dict] = {}
    for d, positions in wanted.items():
        last = max(positions)
        for pos, (where, payload, raw) in enumerate(read_spec_items(specs[d])):
            if pos in positions:
                found[d, pos] = row_to_sample(parse_json_line(payload, where) if raw else payload, specs[d], where)
            if pos >= last:
                break
    out = []
    for g in ids:
        d = int(np.searchsorted(bounds, g, side="right")) - 1
        out.append(found[d, int(encoded[d].raw_pos[g - bounds[d]])])
    return out


def split_rows(records: np.ndarray, record_len: np.ndarray, pack: bool, cutoff_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(items, item offsets): one record per row, or packing's groups of records."""
    if not pack:
        return records, np.arange(len(records) + 1, dtype=np.int64)
    order, offsets = plan_packs_flat(record_len[records], cutoff_len)
    return records[order], offsets


def image_stats(folder: Path, records: np.ndarray, merge_size: int) -> dict:
    """Images and image tokens of the given records (from the store's image columns)."""
    tokens = Tokens(folder)
    if not tokens.has_images or not len(records):
        return {"images": 0, "image_tokens": 0}
    offsets = np.asarray(tokens.image_offsets)
    per_image = np.asarray(tokens.image_grid_thw, np.int64).prod(axis=1) // (merge_size ** 2)
    cum = np.concatenate([[0], np.cumsum(per_image)])
    per_record = cum[offsets[1:]] - cum[offsets[:-1]]
    out = {"images": int(np.diff(offsets)[records].sum()), "image_tokens": int(per_record[records].sum())}
    if tokens.has_videos:
        offsets = np.asarray(tokens.video_offsets)
        per_video = np.asarray(tokens.video_grid_thw, np.int64).prod(axis=1) // (merge_size ** 2)
        cum = np.concatenate([[0], np.cumsum(per_video)])
        per_record = cum[offsets[1:]] - cum[offsets[:-1]]
        out.update(videos=int(np.diff(offsets)[records].sum()), video_tokens=int(per_record[records].sum()))
    return out


LF_PREPROCESSING_BATCH = 1000
"""LLaMA-Factory's preprocessing_batch_size (its default): the blocks within which it rotates KTO's answers."""


def kl_partner_records(source_sizes: list, block: int = LF_PREPROCESSING_BATCH) -> np.ndarray:
    """KTO's mismatched pairs as LLaMA-Factory 0.9.5 makes them when it preprocesses (FeedbackDatasetProcessor):
    within each block of ``block`` samples of the merged training (or held-out) data, in file order, sample i
    takes sample i-1's answer and the first takes the last's. Per record, the record whose answer it takes; the
    collate uses it when a micro-batch of one row has no other row to rotate (launcher.data.collate)."""
    out, start = [], 0
    for n in source_sizes:
        for b0 in range(0, n, block):
            out.append(start + np.roll(np.arange(b0, min(b0 + block, n)), 1))
        start += n
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def preprocess(cfg: Config, tokenizer, renderer, kind: str, train_specs, eval_specs, progress: bool,
               folder: Path, vision=None, audio=None) -> None:
    """Everything the cache stores, written into ``folder``: the token store, the train/eval rows (packed or
    not) as indices into it, the held-out samples and the counts."""
    data, seed = cfg.data, cfg.train.seed
    preference, pack = kind == "preference", data.packing and kind in PACKABLE_KINDS
    writer = StoreWriter(folder)
    options = EncodeOptions(tokenizer, renderer, data.cutoff_len, data.train_on_prompt, data.mask_history, data.lenient,
                            vision, cfg.model.name_or_path or cfg.model.name, audio)
    encoder = Encoder(options, resolve_num_proc(data), data.preprocess_batch_size, progress)
    try:
        encoded, groups = encode_entries(encoder, writer, data, data.datasets, train_specs, seed, preference, 0)
        train_ids = mix(groups, [e.weight for e in data.datasets], data.mix_strategy, seed)
        all_specs = list(train_specs)
        if eval_specs:
            offset = sum(len(e.first) for e in encoded)
            eval_enc, eval_groups = encode_entries(encoder, writer, data, data.eval_datasets, eval_specs, seed,
                                                   preference, offset)
            encoded += eval_enc
            all_specs += list(eval_specs)
            eval_ids = mix(eval_groups, [e.weight for e in data.eval_datasets], data.mix_strategy, seed)
        else:
            train_ids, eval_ids = split_eval(train_ids, data.val_size, seed)
    finally:
        encoder.close()
        writer.close()
    if kind == "kto":
        n_train = sum(int(e.count.sum()) for e in encoded[: len(train_specs)])
        n_eval = sum(int(e.count.sum()) for e in encoded[len(train_specs):])
        add_column(folder, "kl_record", kl_partner_records([n_train, n_eval]))
    whole = EncodedDataset(np.concatenate([e.first for e in encoded]), np.concatenate([e.count for e in encoded]),
                           np.concatenate([e.dropped for e in encoded]), np.zeros(0, np.int64))
    train_ids, eval_ids = np.asarray(train_ids, np.int64), np.asarray(eval_ids, np.int64)
    train_records, eval_records = sample_records(whole, train_ids), sample_records(whole, eval_ids)
    if len(train_records) == 0:
        raise DataError("data.datasets: no training rows left after preprocessing; check the data and data.cutoff_len")
    row_len = writer.row_lengths()
    record_len = row_len.reshape(-1, 2).sum(axis=1) if preference else row_len
    trained = np.concatenate(writer.trained) if writer.trained else np.zeros(0, np.int64)
    for split, records in (("train", train_records), ("eval", eval_records)):
        items, offsets = split_rows(records, record_len, pack, data.cutoff_len)
        write_split(folder, split, items, offsets)
        if split == "train":
            n_rows = len(offsets) - 1
    stats = {
        "samples": len(train_ids),
        "dropped": int(whole.dropped[train_ids].sum()),
        "rows": n_rows,
        "tokens": int(record_len[train_records].sum()),
        "trained_tokens": int(trained[train_records].sum()),
    }
    if pack:
        stats["packed_rows"] = n_rows
        stats["packing_fill"] = round(stats["tokens"] / (n_rows * data.cutoff_len), 4)
    stats["eval_samples"] = len(eval_ids)
    stats["eval_dropped"] = int(whole.dropped[eval_ids].sum())
    skipped = sum(e.skipped for e in encoded)
    if skipped:
        stats["skipped_invalid"] = skipped
    if vision is not None:
        stats.update(image_stats(folder, train_records, vision.merge_size))
        stats["dropped_image_cut"] = sum(e.image_cut for e in encoded)
    if audio is not None:
        stats.update(audio_stats(folder, train_records))
    eval_samples = read_samples_at(all_specs, encoded, eval_ids.tolist()) if len(eval_ids) else None
    write_meta(folder, {"stats": stats, "eval_samples": eval_samples,
                        "layout": "preference" if preference else ("packed" if pack else "rows")})


def preprocess_key(cfg: Config, tokenizer, renderer, train_specs, eval_specs, vision=None, audio=None) -> str:
    data = cfg.data
    files = {s.name: file_fingerprint(s.source()) if s.file_name else s.hf_hub_url for s in train_specs + eval_specs}
    specs = {s.name: {k: str(v) for k, v in vars(s).items()} for s in train_specs + eval_specs}
    options = {k: getattr(data, k) for k in ("cutoff_len", "train_on_prompt", "mask_history", "packing", "lenient",
                                             "max_samples", "mix_strategy", "val_size", "template")}
    if vision is not None:  # the image files are hashed by the data files' paths only; sizes decide the tokens
        options["vision"] = vision.fingerprint()
    if audio is not None:
        options["audio"] = audio.fingerprint()
    entries = [vars(e) for e in data.datasets] + [{"eval": vars(e)} for e in data.eval_datasets]
    return cache_key({"files": files, "specs": specs, "options": options, "entries": entries, "seed": cfg.train.seed,
                      "tokenizer": tokenizer_fingerprint(tokenizer), "renderer": renderer.name})


def open_store(folder: Path) -> tuple[TokenRows, Optional[TokenRows], dict]:
    meta = read_meta(folder)
    tokens = Tokens(folder)
    train = TokenRows.open(folder, "train", meta["layout"], tokens)
    eval_rows = TokenRows.open(folder, "eval", meta["layout"], tokens)
    return train, (eval_rows if len(eval_rows) else None), meta


def template_request(data, kind: str, info, tokenizer) -> Optional[str]:
    """The template training asks ``choose_renderer`` for (the preflight asks the same): data.template when it
    names one; unset or ``auto``: plain for pretraining text when the tokenizer has no chat template,
    LLaMA-Factory's template of a VL model's family, else None (the tokenizer's own, or its fallback)."""
    named = None if data.template in (None, "auto") else data.template
    if named is None and kind == "pt" and not getattr(tokenizer, "chat_template", None):
        return "plain"  # plain text needs no chat format
    if named is None and info is not None:
        return info.template
    return named


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
    audio, audio_model = audio_data(cfg, tokenizer)
    if vision is not None and audio is not None and data.packing:
        raise DataError("data.packing: packed rows are not supported for the Qwen2.5-Omni thinker (it computes its"
                        " positions per row); set data.packing=false")
    info = info or audio_model
    renderer, note = choose_renderer(tokenizer, template_request(data, kind, info, tokenizer))
    if progress is None:
        progress = sys.stderr.isatty() and int(__import__("os").environ.get("RANK", "0")) == 0

    if data.use_cache:
        key = preprocess_key(cfg, tokenizer, renderer, train_specs, eval_specs, vision, audio)
        folder, hit = cached(resolve_cache_dir(data), key,
                             lambda tmp: preprocess(cfg, tokenizer, renderer, kind, train_specs, eval_specs, progress, tmp, vision,
                                                    audio))
        train, eval_rows, meta = open_store(folder)
    else:
        # Built in a scratch folder on the cache's disk (not /tmp, which may be RAM), mapped, then deleted:
        # the mappings keep the files alive until the rows are dropped.
        cache_dir = resolve_cache_dir(data)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key, hit = None, False
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix="uncached-") as tmp, sigterm_exits(), \
                disk_full_guard(cache_dir, "the tokenized data (data.use_cache=false)", lambda: written_so_far(tmp)):
            preprocess(cfg, tokenizer, renderer, kind, train_specs, eval_specs, progress, Path(tmp), vision, audio)
            train, eval_rows, meta = open_store(Path(tmp))
    stats = dict(meta["stats"], template=renderer.name, template_note=note, cache_hit=hit, cache_key=key)
    from launcher.data.collate import make_collate, resolve_attn_implementation  # torch: only when batches are made

    attn = resolve_attn_implementation(attn_implementation or cfg.model.attn_implementation)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rope_index = None
    if vision is not None and audio is None:  # (the Omni thinker computes its positions in its forward)
        from launcher.models.vision import model_config, rope_index_for

        rope_index = rope_index_for(model_config(cfg.model))
    return DataBundle(train, eval_rows, meta["eval_samples"],
                      # VL: a batch without images runs a zero-weight dummy image, so that every rank runs the
                      # vision tower (ZeRO-3/FSDP gather in forward, DDP expects the same used parameters)
                      make_collate(kind, pad_id, attn, vision, rope_index,
                                   dummy_image=vision is not None and audio is None,
                                   cutoff_len=data.cutoff_len, audio=audio),
                      stats, kind=kind, packed=data.packing and kind in PACKABLE_KINDS, attn_implementation=attn,
                      pad_token_id=pad_id, vision=vision, rope_index=rope_index,
                      cutoff_len=data.cutoff_len, audio=audio)


def audio_data(cfg: Config, tokenizer):
    """(AudioData, AudioModelInfo) for a Qwen2-Audio model, (None, None) for others."""
    from launcher.data.audio import AudioData
    from launcher.models.audio import audio_info, build_feature_extractor

    info = audio_info(cfg.model)
    if info is None:
        return None, None
    extractor = build_feature_extractor(info)
    if cfg.data.use_audio_in_video and info.family != "qwen2_5_omni_thinker":
        raise DataError(f"data.use_audio_in_video: only the Qwen2.5-Omni thinker takes a video with its audio;"
                        f" model '{cfg.model.name_or_path or cfg.model.name}' is {info.family}: set it to false")
    audio = AudioData(extractor, extractor.sampling_rate, use_audio_in_video=cfg.data.use_audio_in_video)
    return audio.with_tokenizer(tokenizer), info


def audio_stats(folder: Path, records: np.ndarray) -> dict:
    """Audios, their audio tokens and seconds, of the given records (from the store's audio columns)."""
    tokens = Tokens(folder)
    if not tokens.has_audios or not len(records):
        return {"audios": 0, "audio_tokens": 0, "audio_seconds": 0.0}
    offsets = np.asarray(tokens.audio_offsets)
    grid = np.asarray(tokens.audio_grid, np.int64).reshape(-1, 3)
    out = {"audios": int(np.diff(offsets)[records].sum())}
    for name, column, scale in (("audio_tokens", 2, 1), ("audio_seconds", 0, 16000)):
        cum = np.concatenate([[0], np.cumsum(grid[:, column])])
        out[name] = (cum[offsets[1:]] - cum[offsets[:-1]])[records].sum() / scale
    out["audio_tokens"], out["audio_seconds"] = int(out["audio_tokens"]), round(float(out["audio_seconds"]), 2)
    return out


def vision_data(cfg: Config, tokenizer):
    """(VisionData, VisionModelInfo) for a Qwen-VL model, (None, None) for a text model."""
    from launcher.data.vision import VisionData
    from launcher.models.vision import build_image_processor, vision_info

    info = vision_info(cfg.model)
    if info is None:
        from launcher.models.omni import TOKENS, omni_vision_info

        info = omni_vision_info(cfg.model)
        if info is None:
            return None, None
        vision = VisionData(build_image_processor(info), cfg.data.image_max_pixels, cfg.data.image_min_pixels,
                            vision_start=TOKENS["vision_start"], vision_end=TOKENS["vision_end"],
                            image_pad=TOKENS["image_pad"], video_pad=TOKENS["video_pad"],
                            video=video_settings(cfg, info))
        return vision.with_tokenizer(tokenizer), info
    if cfg.data.image_min_pixels > cfg.data.image_max_pixels:
        raise DataError(f"data.image_min_pixels ({cfg.data.image_min_pixels}) is above data.image_max_pixels"
                        f" ({cfg.data.image_max_pixels}); lower it")
    vision = VisionData(build_image_processor(info), cfg.data.image_max_pixels, cfg.data.image_min_pixels,
                        video=video_settings(cfg, info))
    return vision.with_tokenizer(tokenizer), info


def video_settings(cfg: Config, info):
    """The VideoSettings of a VL model: data.video_* and the model's video processor values."""
    from launcher.models.vision import build_video_settings

    data = cfg.data
    if data.video_min_pixels > data.video_max_pixels:
        raise DataError(f"data.video_min_pixels ({data.video_min_pixels}) is above data.video_max_pixels"
                        f" ({data.video_max_pixels}); lower it")
    if data.video_fps <= 0 or data.video_maxlen < 1:
        raise DataError(f"data.video_fps ({data.video_fps}) must be above 0 and data.video_maxlen"
                        f" ({data.video_maxlen}) at least 1")
    return build_video_settings(info, data.video_max_pixels, data.video_min_pixels, data.video_fps, data.video_maxlen)


def build_supervised_datasets(cfg: Config, tokenizer, **kwargs) -> DataBundle:
    """``build_datasets`` for SFT: refuses KTO feedback data, whose undesirable answers SFT would learn as good."""
    bundle = build_datasets(cfg, tokenizer, **kwargs)
    if bundle.kind == "kto":
        names = ", ".join(e.name for e in cfg.data.datasets)
        raise DataError(f"data.datasets: {names} is KTO feedback data (a kto_tag column marks answers good or bad);"
                        f" SFT would train on the bad answers too: use method=kto (or method=kto_lora)")
    return bundle


def build_text_datasets(cfg: Config, tokenizer, **kwargs) -> DataBundle:
    """``build_datasets`` for pretraining: plain text only (every token trained), packed."""
    bundle = build_datasets(cfg, tokenizer, **kwargs)
    if bundle.kind != "pt":
        names = ", ".join(e.name for e in cfg.data.datasets)
        raise DataError(f"data.datasets: method=pretrain trains on plain text, and {names} is {bundle.kind} data;"
                        " use datasets whose dataset_info.json entry maps only a text column"
                        " (columns: {prompt: text}, e.g. c4_demo, wiki_demo), or method=sft_full")
    return bundle


def build_feedback_datasets(cfg: Config, tokenizer, **kwargs) -> DataBundle:
    """``build_datasets`` for KTO: refuses data without a kto_tag column."""
    bundle = build_datasets(cfg, tokenizer, **kwargs)
    if bundle.kind != "kto":
        names = ", ".join(e.name for e in cfg.data.datasets)
        raise DataError(f"data.datasets: method=kto needs feedback data, and {names} has no kto_tag column (a"
                        " dataset_info.json entry that maps kto_tag, e.g. data.datasets=[kto_en_demo])")
    return bundle


def build_preference_datasets(cfg: Config, tokenizer, **kwargs) -> DataBundle:
    """``build_datasets`` for DPO and reward models: refuses datasets that are not ``ranking: true``."""
    bundle = build_datasets(cfg, tokenizer, **kwargs)
    if bundle.kind != "preference":
        raise DataError(f"method={cfg.method.name} needs preference data: datasets marked ranking: true in"
                        " dataset_info.json (e.g. data.datasets=[dpo_en_demo])")
    return bundle


__all__ = ["DataBundle", "build_datasets", "build_feedback_datasets", "build_preference_datasets", "build_supervised_datasets",
           "build_text_datasets"]
