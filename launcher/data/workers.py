"""Raw rows -> token rows on every core: batches of rows go to ``num_proc`` forked worker processes.

A worker parses (JSON Lines), formats, renders and tokenizes a batch and sends back flat int32 arrays, so
the results cost one memcpy to pickle, not a Python object per token. Batches come back in submission
order, so the rows are the same, in the same order, for any ``num_proc``.

Errors: a worker never raises a ``DataError`` for a row; it returns the row's message (file and line) and
goes on. Strict mode stops feeding batches at the first error, lets the batches in flight finish and raises
the first error with a count of the others, so no worker's report is lost and the pool never hangs (a dead
worker surfaces as ``BrokenProcessPool``, not a wait). Lenient mode counts such rows and skips them.

Why our own pool and not ``datasets.map(num_proc=...)``: map shards the dataset into contiguous pieces, so
an error stops one shard while the others run to their end, and its messages carry no file line; and the
formatting step here reads rows of any shape (mixed types across rows), which Arrow's typed columns refuse.
"""
from __future__ import annotations

import gc
import os
import sys
from array import array
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from typing import Any, Iterator, Optional

import numpy as np

from launcher.errors import DataError
from launcher.host import usable_cpus
from launcher.data.formats import row_to_sample
from launcher.data.readers import parse_json_line
from launcher.data.registry import DatasetSpec
from launcher.data.store import ImageRefs
from launcher.data.vision import CutRow, check_media, media_cut_message, shorten_at_cut, tokenize_vision_sample
from launcher.data.tokenize import check_trainable, row_trained, tokenize_sample

COLUMNS = {"prompt_len": np.int32, "kto_tag": np.int8}
"""Numeric per-record values a token row may carry, stored as the store's columns (launcher.data.store)."""
STORED_KEYS = {"input_ids", "labels", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels",
               *COLUMNS, "images", "image_grid_thw", "videos", "video_grid_thw", "video_second_per_grid", "audios",
               "audio_grid"}
"""What a token row may hold; the store writes these (and nothing else) to disk."""

SHOWN_ERRORS = 5
"""Further errors named after the first (with their locations) when strict mode stops."""


@dataclass
class EncodeOptions:
    tokenizer: Any
    renderer: Any
    cutoff_len: int
    train_on_prompt: bool
    mask_history: bool
    lenient: bool
    vision: Any = None
    """VL models: the VisionData (launcher.data.vision); rows then carry image references."""
    model_name: str = ""
    """For the message when a text model gets images."""
    audio: Any = None
    """Audio models: the AudioData (launcher.data.audio); rows then carry audio references."""


_OPTIONS: Optional[EncodeOptions] = None
"""Set in the parent before the workers fork; a worker inherits it (the tokenizer is not pickled)."""


def default_num_proc() -> int:
    """The CPUs this job may use: SLURM's allocation on a node (not the login node's count), else the
    process's affinity mask (what taskset/cgroups allow), else the machine's."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    return max(1, usable_cpus())


def encode_batch(spec: DatasetSpec, items: list, preference: bool, options: Optional[EncodeOptions] = None) -> dict:
    """Rows -> flat token arrays. Per item: records (token rows; 2 per preference pair) or -1 when rejected."""
    opt = options or _OPTIONS
    ids, labels = array("i"), array("i")
    row_lens, trained = array("q"), array("q")
    columns: dict[str, list] = {}
    records, dropped, errors = array("i"), array("i"), []
    images = ImageRefs() if opt.vision is not None else None
    videos = ImageRefs(with_seconds=True) if opt.vision is not None else None
    audios = ImageRefs() if opt.audio is not None else None
    image_cut = 0
    for k, (where, payload, raw) in enumerate(items):
        try:
            row = parse_json_line(payload, where) if raw else payload
            sample = row_to_sample(row, spec, where)
            token_rows, cut = tokenize_with_media(sample, opt, where)
            kept = [r for r in token_rows if r is not None and check_trainable(r, where, opt.lenient) is not None]
        except DataError as exc:
            errors.append((k, str(exc)))
            records.append(-1)
            dropped.append(0)
            continue
        for r in kept:
            if not STORED_KEYS.issuperset(r):
                # fail loudly rather than drop what the store has no column for (e.g. image inputs)
                raise NotImplementedError(f"{where}: the token store has no column for {sorted(set(r) - STORED_KEYS)};"
                                          " add one in launcher/data/store.py and workers.encode_batch")
        records.append(len(kept))
        dropped.append(len(token_rows) - len(kept))
        image_cut += cut
        for r in kept:
            trained.append(row_trained(r))
            for name in COLUMNS:
                if name in r:
                    columns.setdefault(name, []).append(int(r[name]))
            if images is not None:
                images.append(r.get("images") or [], r.get("image_grid_thw") or [])
                videos.append(r.get("videos") or [], r.get("video_grid_thw") or [], r.get("video_second_per_grid") or [])
            if audios is not None:
                audios.append(r.get("audios") or [], r.get("audio_grid") or [])
            if preference:
                for side in ("chosen", "rejected"):
                    ids.extend(r[f"{side}_input_ids"])
                    labels.extend(r[f"{side}_labels"])
                    row_lens.append(len(r[f"{side}_input_ids"]))
            else:
                ids.extend(r["input_ids"])
                labels.extend(r["labels"])
                row_lens.append(len(r["input_ids"]))
    return {"ids": np.frombuffer(ids, np.int32), "labels": np.frombuffer(labels, np.int32),
            "row_lens": np.frombuffer(row_lens, np.int64), "trained": np.frombuffer(trained, np.int64),
            "columns": {name: np.asarray(values, COLUMNS[name]) for name, values in columns.items()},
            "records": np.frombuffer(records, np.int32),
            "dropped": np.frombuffer(dropped, np.int32), "errors": errors, "images": images, "videos": videos,
            "audios": audios, "image_cut": image_cut}


def tokenize_with_media(sample: dict, opt: EncodeOptions, where: str) -> tuple[list, int]:
    """(token rows, rows shortened or dropped because cutoff_len cut an image's or video's span); a row with media the model or
    template cannot take, or a cut span in strict mode, raises a DataError naming the row."""
    if not ("images" in sample or "videos" in sample or "audios" in sample):  # text rows: the common case, first
        return tokenize_sample(opt.tokenizer, opt.renderer, sample, opt.cutoff_len, opt.train_on_prompt,
                               opt.mask_history, where), 0
    if opt.audio is not None and opt.vision is not None:  # the Qwen2.5-Omni thinker: all three in one row
        from launcher.data.omni import tokenize_omni_sample

        return tokenize_omni_sample(opt.tokenizer, opt.renderer, sample, opt.cutoff_len, opt.train_on_prompt,
                                    opt.mask_history, opt.vision, opt.audio, opt.audio.use_audio_in_video,
                                    opt.lenient, where)
    check_media(sample, opt.renderer.name, getattr(opt.renderer, "image_slot", True), opt.vision is not None,
                opt.model_name, where, audio_model=opt.audio is not None)
    if sample.get("audios"):  # an audio model's row (check_media refused audio elsewhere)
        from launcher.data.audio import tokenize_audio_sample

        return tokenize_audio_sample(opt.tokenizer, opt.renderer, sample, opt.cutoff_len, opt.train_on_prompt,
                                     opt.mask_history, opt.audio, opt.lenient, where)
    if not sample.get("images") and not sample.get("videos"):
        return tokenize_sample(opt.tokenizer, opt.renderer, sample, opt.cutoff_len, opt.train_on_prompt,
                               opt.mask_history, where), 0
    rows = tokenize_vision_sample(opt.tokenizer, opt.renderer, sample, opt.cutoff_len, opt.train_on_prompt,
                                  opt.mask_history, opt.vision, where)
    cuts = [r for r in rows if isinstance(r, CutRow)]
    if cuts and not opt.lenient:
        raise DataError(media_cut_message(where, opt.cutoff_len, cuts[0].cut))
    # lenient: shortened before the cut media (check_trainable then drops a row left with nothing trained)
    return [shorten_at_cut(r, opt.vision) if isinstance(r, CutRow) else r for r in rows], len(cuts)


@dataclass
class EncodedDataset:
    """One dataset's samples in the store: sample s owns records [first[s], first[s] + count[s])."""
    first: np.ndarray
    count: np.ndarray
    dropped: np.ndarray
    raw_pos: np.ndarray
    """Each sample's position among the file's rows (malformed rows count), to read it again."""
    skipped: int = 0
    """Rows rejected as malformed and skipped (lenient mode)."""
    image_cut: int = 0
    """Token rows dropped (lenient mode) because data.cutoff_len cut an image's span."""
    errors: list = field(default_factory=list)


def _frozen_after_first(batches: Iterator[list]) -> Iterator[list]:
    """The batches, with the garbage collector told to leave alone what exists once the first is read: a JSON
    list's reader has then parsed the whole file (a million rows are millions of objects, with no reference
    cycles), and every full collection would walk all of them, again and again, while they are handed on.
    They are still freed one by one as they are used; the freeze is undone at the end."""
    first = next(batches, None)
    if first is None:
        return
    gc.freeze()
    try:
        yield first
        yield from batches
    finally:
        gc.unfreeze()


class Encoder:
    """A pool of ``num_proc`` workers (none when 1) that encodes datasets into one store, in order."""

    def __init__(self, options: EncodeOptions, num_proc: int, batch_size: int, progress: bool):
        global _OPTIONS
        self.options, self.num_proc, self.batch_size, self.progress = options, max(1, num_proc), max(1, batch_size), progress
        self.pool = None
        if self.num_proc > 1:
            _OPTIONS = options  # before the fork: the workers inherit it
            # Objects that exist now are left out of the workers' garbage collections, which would otherwise
            # write to (and so copy) every page of the parent's heap they share.
            gc.freeze()
            self.pool = ProcessPoolExecutor(self.num_proc, mp_context=get_context("fork"))
            # Fork the workers now, before any file is read: forked at the first batch, they would inherit the
            # reader's objects (a JSON list is parsed whole), and their garbage collections, walking them, would
            # copy those pages into every worker (memory, and CPU for the page faults).
            for started in [self.pool.submit(os.getpid) for _ in range(self.num_proc)]:
                started.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _results(self, spec: DatasetSpec, batches: Iterator[list], preference: bool, stop: list) -> Iterator[dict]:
        """Batch results in order; at most 2 batches per worker in flight (the reader never runs far ahead)."""
        if self.pool is None:
            for batch in batches:
                if stop:
                    return
                yield encode_batch(spec, batch, preference, self.options)
            return
        pending: deque = deque()
        for batch in batches:
            pending.append(self.pool.submit(encode_batch, spec, batch, preference))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().result()
            if stop:
                break
        while pending:
            yield pending.popleft().result()

    def encode(self, spec: DatasetSpec, items: Iterator[tuple], cap: Optional[int], writer, preference: bool,
               desc: str) -> EncodedDataset:
        """Encode a dataset's rows (up to ``cap`` accepted samples) into ``writer``; raise on bad rows unless
        lenient."""
        from tqdm import tqdm

        width = 2 if preference else 1
        firsts, counts, drops, positions = [], [], [], []
        seen = 0
        skipped, errors, stop, image_cut = 0, [], [], 0
        accepted = 0
        batches = iter(lambda: list(islice(items, self.batch_size)), [])
        bar = tqdm(desc=desc, unit=" rows", disable=not self.progress, file=sys.stderr, leave=False, smoothing=0.1)
        try:
            for result in self._results(spec, batches, preference, stop):
                bar.update(len(result["records"]))
                if cap is not None and accepted >= cap:
                    break
                records = result["records"]
                errs = dict(result["errors"])
                keep_items = len(records)
                for k in range(len(records)):
                    if records[k] >= 0:
                        accepted += 1
                        if cap is not None and accepted >= cap:
                            keep_items = k + 1
                            break
                    elif self.options.lenient:
                        skipped += 1
                    else:
                        errors.append(errs[k])
                        stop.append(True)
                if errors:
                    continue  # nothing more is written once the build has failed; the reports still count
                ok = records[:keep_items] >= 0
                n_records = int(records[:keep_items][ok].sum())
                n_rows = n_records * width
                n_tokens = int(result["row_lens"][:n_rows].sum())
                refs = result["images"].take(n_records) if result["images"] is not None else None
                video_refs = result["videos"].take(n_records) if result["videos"] is not None else None
                audio_refs = result["audios"].take(n_records) if result["audios"] is not None else None
                first = writer.add(result["ids"][:n_tokens], result["labels"][:n_tokens], result["row_lens"][:n_rows],
                                   {name: values[:n_records] for name, values in result["columns"].items()}, refs,
                                   video_refs, audio_refs)
                image_cut += result["image_cut"]
                writer.trained.append(result["trained"][:n_records])
                per = records[:keep_items][ok].astype(np.int64)
                starts = np.zeros(len(per), np.int64)
                np.cumsum(per[:-1], out=starts[1:])
                firsts.append(first // width + starts)
                counts.append(per)
                drops.append(result["dropped"][:keep_items][ok])
                positions.append(seen + np.flatnonzero(ok))
                seen += len(records)
        finally:
            bar.close()
        if errors:
            more = "" if len(errors) == 1 else (
                f"\n  and {len(errors) - 1} more bad row(s) in the batches in flight, e.g.:\n  "
                + "\n  ".join(errors[1: 1 + SHOWN_ERRORS]))
            raise DataError(errors[0] + more)
        cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
        return EncodedDataset(cat(firsts, np.int64), cat(counts, np.int64), cat(drops, np.int64),
                              cat(positions, np.int64), skipped, image_cut=image_cut)
