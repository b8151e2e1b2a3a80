"""Tokenized data on disk, memory-mapped: every rank on a node maps the same pages.

A store is a folder:
- ``input_ids.bin`` / ``labels.bin``: int32, every token row end to end, in the order the datasets were read;
- ``row_offsets.npy``: int64 [rows + 1], where each token row starts;
- ``<split>.items.npy`` / ``<split>.item_offsets.npy``: a split (train, eval) as groups of records; a record is
  one token row, or for preference data two (chosen, rejected). An unpacked row is one record, a packed row
  the records packing put together, in the order they are concatenated;
- ``<name>.npy``: numeric per-record columns, one value per record (``columns.json`` lists them):
  ``prompt_len`` (int32; preference and KTO data), ``kto_tag`` (int8, 1 = desirable; KTO data). The reader
  maps them and puts each record's value into the row dicts it makes (unpacked layouts);
- images (VL data only): ``image_offsets.npy`` int64 [records + 1] (record r's images are
  [image_offsets[r], image_offsets[r + 1])), ``image_grid_thw.npy`` int32 [images, 3] (the processor's grid,
  which fixed the image's token count), ``image_paths.bin`` (UTF-8 paths end to end) with
  ``image_path_offsets.npy`` int64 [images + 1]. A rank maps them like the tokens and decodes only the paths of
  the rows it reads; pixels are made per batch in the data-loader (launcher/data/vision.py says why);
- videos (VL data with videos only): the same four files with ``video_`` in place of ``image_`` (a path is a
  video file, a frame folder, or frame paths joined by a newline), and ``video_second_per_grid.npy`` float64
  [videos] (seconds per temporal patch: Qwen2.5-VL's mRoPE time step);
- audios (audio models only): the same four files with ``audio_`` (``audio_grid_thw.npy`` holds each audio's
  [samples at 16 kHz, feature frames, audio tokens]: launcher/data/audio.py);
- ``meta.json``: counts, kind, statistics and the held-out samples (small).

Why numpy memmaps and not an Arrow table: a row is a slice of two flat int32 files, which is Arrow's own
layout of a list column (values + offsets) without a per-row decode, and ``np.memmap`` needs no schema or
table object per process. A rank only faults in the pages of the rows it reads, so its RSS grows with the
batches it touches, and the page cache is shared by all ranks of a node.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

TOKEN_DTYPE = np.int32
META_FILE = "meta.json"
COLUMNS_FILE = "columns.json"


class StoreWriter:
    """Appends token rows to the flat files; ``close`` writes the offsets."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ids = open(self.folder / "input_ids.bin", "wb")
        self._labels = open(self.folder / "labels.bin", "wb")
        self._lengths: list[np.ndarray] = []
        self._columns: dict[str, list[np.ndarray]] = {}
        self.trained: list[np.ndarray] = []
        """Trained tokens per record (for the statistics; not written)."""
        self.rows = 0
        self._media = {"image": _MediaParts(), "video": _MediaParts(), "audio": _MediaParts()}

    def add(self, input_ids: np.ndarray, labels: np.ndarray, row_lengths: np.ndarray,
            columns: Optional[dict[str, np.ndarray]] = None, images: Optional["ImageRefs"] = None,
            videos: Optional["ImageRefs"] = None, audios: Optional["ImageRefs"] = None) -> int:
        """Append token rows (flat ids/labels, one length per row); returns the first new row's number.
        ``columns``: numeric per-record values (one per record, not per token row: a preference record is two
        rows), saved at ``close`` as ``<name>.npy``; give the same names with every call.
        ``images`` / ``videos``: the records' image and video references (VL data: given with every call, empty
        where none)."""
        first = self.rows
        for kind, refs in (("image", images), ("video", videos), ("audio", audios)):
            if refs is not None:
                self._media[kind].add(refs, self.folder, kind)
        self._ids.write(np.ascontiguousarray(input_ids, dtype=TOKEN_DTYPE).tobytes())
        self._labels.write(np.ascontiguousarray(labels, dtype=TOKEN_DTYPE).tobytes())
        self._lengths.append(np.asarray(row_lengths, dtype=np.int64))
        for name, values in (columns or {}).items():
            self._columns.setdefault(name, []).append(np.asarray(values))
        self.rows += len(row_lengths)
        return first

    def row_lengths(self) -> np.ndarray:
        return np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)

    def close(self) -> None:
        self._ids.close()
        self._labels.close()
        lengths = self.row_lengths()
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(self.folder / "row_offsets.npy", offsets)
        for name, parts in self._columns.items():
            np.save(self.folder / f"{name}.npy", np.concatenate(parts))
        (self.folder / COLUMNS_FILE).write_text(json.dumps(sorted(self._columns)))
        self._media["image"].close(self.folder, "image", always=True)
        self._media["video"].close(self.folder, "video", always=False)
        self._media["audio"].close(self.folder, "audio", always=False)


class _MediaParts:
    """One kind of media's references: paths streamed to ``<kind>_paths.bin``, the rest gathered until the
    store is closed."""

    def __init__(self):
        self.counts, self.grids, self.path_lens, self.seconds = [], [], [], []
        self.file = None

    def add(self, refs: "ImageRefs", folder: Path, kind: str) -> None:
        if self.file is None:
            self.file = open(folder / f"{kind}_paths.bin", "wb")
        self.file.write(refs.paths)
        self.counts.append(np.asarray(refs.counts, np.int64))
        self.grids.append(np.asarray(refs.grids, np.int32).reshape(-1, 3))
        self.path_lens.append(np.asarray(refs.path_lens, np.int64))
        if refs.seconds is not None:
            self.seconds.append(np.asarray(refs.seconds, np.float64))

    def close(self, folder: Path, kind: str, always: bool) -> None:
        """Writes the files (images: whenever references were given; videos: only when there is a video)."""
        if self.file is None:
            return
        self.file.close()
        if not always and not sum(int(c.sum()) for c in self.counts):
            (folder / f"{kind}_paths.bin").unlink()
            return
        np.save(folder / f"{kind}_offsets.npy", _offsets(np.concatenate(self.counts)))
        np.save(folder / f"{kind}_grid_thw.npy", np.concatenate(self.grids))
        np.save(folder / f"{kind}_path_offsets.npy", _offsets(np.concatenate(self.path_lens)))
        if self.seconds:
            np.save(folder / f"{kind}_second_per_grid.npy", np.concatenate(self.seconds))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


class ImageRefs:
    """Image references of a batch of records, flat: ``counts`` per record, ``grids`` [images, 3],
    ``paths`` UTF-8 bytes end to end with ``path_lens`` (cheap to send from a worker: no object per path).
    Videos use the same, ``with_seconds``: each video's seconds per temporal patch beside its grid."""

    def __init__(self, with_seconds: bool = False):
        from array import array

        self.counts, self.grids, self.path_lens = array("q"), array("i"), array("q")
        self.paths = bytearray()
        self.seconds = array("d") if with_seconds else None

    def append(self, paths: Sequence[str], grids: Sequence, seconds: Sequence[float] = ()) -> None:
        self.counts.append(len(paths))
        for path, grid in zip(paths, grids):
            data = str(path).encode("utf-8")
            self.paths += data
            self.path_lens.append(len(data))
            self.grids.extend(int(g) for g in grid)
        if self.seconds is not None:
            self.seconds.extend(float(x) for x in seconds)

    def take(self, n_records: int) -> "ImageRefs":
        """The first ``n_records`` records' references."""
        out = ImageRefs(self.seconds is not None)
        counts = list(self.counts[:n_records])
        n_images = sum(counts)
        out.counts.extend(counts)
        out.grids.extend(self.grids[: 3 * n_images])
        out.path_lens.extend(self.path_lens[:n_images])
        out.paths += self.paths[: sum(self.path_lens[:n_images])]
        if self.seconds is not None:
            out.seconds.extend(self.seconds[:n_images])
        return out


def add_column(folder: Path, name: str, values: np.ndarray) -> None:
    """Add a per-record column to a closed store (one value per record)."""
    folder = Path(folder)
    np.save(folder / f"{name}.npy", np.asarray(values))
    listed = folder / COLUMNS_FILE
    names = set(json.loads(listed.read_text())) if listed.is_file() else set()
    listed.write_text(json.dumps(sorted(names | {name})))


def write_split(folder: Path, split: str, groups_flat: np.ndarray, group_offsets: np.ndarray) -> None:
    np.save(Path(folder) / f"{split}.items.npy", np.asarray(groups_flat, np.int64))
    np.save(Path(folder) / f"{split}.item_offsets.npy", np.asarray(group_offsets, np.int64))


def write_meta(folder: Path, meta: dict) -> None:
    (Path(folder) / META_FILE).write_text(json.dumps(meta, ensure_ascii=False))


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / META_FILE).read_text())


def _mmap(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class Tokens:
    """The flat token files of a store, memory-mapped."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        self.input_ids = _mmap(folder / "input_ids.bin", TOKEN_DTYPE)
        self.labels = _mmap(folder / "labels.bin", TOKEN_DTYPE)
        self.row_offsets = np.load(folder / "row_offsets.npy", mmap_mode="r")
        listed = folder / COLUMNS_FILE
        names = json.loads(listed.read_text()) if listed.is_file() else []
        self.columns: dict[str, np.ndarray] = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
        """Per-record numeric columns by name, memory-mapped."""
        self.has_images = (folder / "image_offsets.npy").is_file()
        if self.has_images:
            self.image_offsets = np.load(folder / "image_offsets.npy", mmap_mode="r")
            self.image_grid_thw = np.load(folder / "image_grid_thw.npy", mmap_mode="r")
            self.image_paths = _mmap(folder / "image_paths.bin", np.uint8)
            self.image_path_offsets = np.load(folder / "image_path_offsets.npy", mmap_mode="r")
        self.has_videos = (folder / "video_offsets.npy").is_file()
        if self.has_videos:
            self.video_offsets = np.load(folder / "video_offsets.npy", mmap_mode="r")
            self.video_grid_thw = np.load(folder / "video_grid_thw.npy", mmap_mode="r")
            self.video_paths = _mmap(folder / "video_paths.bin", np.uint8)
            self.video_path_offsets = np.load(folder / "video_path_offsets.npy", mmap_mode="r")
            self.video_second_per_grid = np.load(folder / "video_second_per_grid.npy", mmap_mode="r")
        self.has_audios = (folder / "audio_offsets.npy").is_file()
        if self.has_audios:
            self.audio_offsets = np.load(folder / "audio_offsets.npy", mmap_mode="r")
            self.audio_grid = np.load(folder / "audio_grid_thw.npy", mmap_mode="r")
            self.audio_paths = _mmap(folder / "audio_paths.bin", np.uint8)
            self.audio_path_offsets = np.load(folder / "audio_path_offsets.npy", mmap_mode="r")

    def images(self, record: int) -> tuple[list[str], list[list[int]]]:
        """(paths, grids) of a record's images, in placeholder order."""
        a, b = int(self.image_offsets[record]), int(self.image_offsets[record + 1])
        bounds = self.image_path_offsets[a: b + 1]
        paths = [bytes(self.image_paths[int(bounds[k]): int(bounds[k + 1])]).decode("utf-8") for k in range(b - a)]
        return paths, self.image_grid_thw[a:b].tolist()

    def videos(self, record: int) -> dict:
        """A record's videos: {videos, video_grid_thw, video_second_per_grid} (empty lists without videos)."""
        if not self.has_videos:
            return {"videos": [], "video_grid_thw": [], "video_second_per_grid": []}
        a, b = int(self.video_offsets[record]), int(self.video_offsets[record + 1])
        bounds = self.video_path_offsets[a: b + 1]
        paths = [bytes(self.video_paths[int(bounds[k]): int(bounds[k + 1])]).decode("utf-8") for k in range(b - a)]
        return {"videos": paths, "video_grid_thw": self.video_grid_thw[a:b].tolist(),
                "video_second_per_grid": self.video_second_per_grid[a:b].tolist()}

    def audios(self, record: int) -> dict:
        """A record's audios: {audios, audio_grid} ([samples, frames, tokens] each)."""
        a, b = int(self.audio_offsets[record]), int(self.audio_offsets[record + 1])
        bounds = self.audio_path_offsets[a: b + 1]
        paths = [bytes(self.audio_paths[int(bounds[k]): int(bounds[k + 1])]).decode("utf-8") for k in range(b - a)]
        return {"audios": paths, "audio_grid": self.audio_grid[a:b].tolist()}

    def media(self, record: int) -> dict:
        """A record's images and (where the store has any) videos and audios, as row keys."""
        out = {}
        if self.has_images:
            paths, grids = self.images(record)
            out = {"images": paths, "image_grid_thw": grids}
        if self.has_videos:
            out.update(self.videos(record))
        if self.has_audios:
            out.update(self.audios(record))
        return out

    def record_columns(self, record: int) -> dict:
        return {name: values[record].item() for name, values in self.columns.items()}

    def row(self, r: int) -> tuple[list, list]:
        a, b = int(self.row_offsets[r]), int(self.row_offsets[r + 1])
        return self.input_ids[a:b].tolist(), self.labels[a:b].tolist()


class TokenRows(Sequence):
    """A split of a store as the rows the trainer reads: ``rows[i]`` is a dict of lists, as before.

    layout: ``rows`` ({input_ids, labels} + the store's per-record columns), ``packed`` (+ position_ids,
    segment_lengths) or ``preference`` ({chosen,rejected}_{input_ids,labels} + the columns: prompt_len).
    A store with images adds ``images`` (paths) and ``image_grid_thw`` to every row (a pair's sides share them),
    and ``segment_images`` (images per sample, in order) to packed rows.
    """

    def __init__(self, tokens: Tokens, items: np.ndarray, item_offsets: np.ndarray, layout: str):
        self.tokens, self.items, self.item_offsets, self.layout = tokens, items, item_offsets, layout

    @classmethod
    def open(cls, folder: Path, split: str, layout: str, tokens: Optional[Tokens] = None) -> "TokenRows":
        folder = Path(folder)
        return cls(tokens or Tokens(folder), np.load(folder / f"{split}.items.npy", mmap_mode="r"),
                   np.load(folder / f"{split}.item_offsets.npy", mmap_mode="r"), layout)

    def __len__(self) -> int:
        return len(self.item_offsets) - 1

    def column(self, name: str) -> np.ndarray:
        """A per-record column's value for every row of this split (unpacked layouts: one record per row)."""
        if self.layout == "packed":
            raise ValueError("a packed row holds several records; read their columns per record")
        return np.asarray(self.tokens.columns[name])[np.asarray(self.items)]

    def _records(self, i: int) -> np.ndarray:
        return self.items[int(self.item_offsets[i]): int(self.item_offsets[i + 1])]

    def _row(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        records = self._records(i)
        if self.layout == "preference":
            r = int(records[0])
            chosen, rejected = self.tokens.row(2 * r), self.tokens.row(2 * r + 1)
            row = {"chosen_input_ids": chosen[0], "chosen_labels": chosen[1], "rejected_input_ids": rejected[0],
                   "rejected_labels": rejected[1], **self.tokens.record_columns(r)}
            if self.tokens.has_images or self.tokens.has_audios:
                row.update(self.tokens.media(r))
            return row
        if self.layout == "rows":
            r = int(records[0])
            ids, labels = self.tokens.row(r)
            row = {"input_ids": ids, "labels": labels, **self.tokens.record_columns(r)}
            if "kl_record" in row:  # KTO: the record whose answer makes this row's mismatched KL row
                kl = int(row.pop("kl_record"))
                row["kl_input_ids"] = self.tokens.row(kl)[0]
                row["kl_prompt_len"] = int(self.tokens.columns["prompt_len"][kl])
            if self.tokens.has_images or self.tokens.has_audios:
                row.update(self.tokens.media(r))
            return row
        input_ids, labels, position_ids, lengths = [], [], [], []
        images, grids, per_segment = [], [], []
        videos: dict = {"videos": [], "video_grid_thw": [], "video_second_per_grid": [], "segment_videos": []}
        audios: dict = {"audios": [], "audio_grid": [], "segment_audios": []}
        for r in records:
            ids, labs = self.tokens.row(int(r))
            input_ids += ids
            labels += labs
            position_ids += range(len(ids))
            lengths.append(len(ids))
            if self.tokens.has_images:
                paths, thw = self.tokens.images(int(r))
                images += paths
                grids += thw
                per_segment.append(len(paths))
            if self.tokens.has_videos:
                record_videos = self.tokens.videos(int(r))
                for key, value in record_videos.items():
                    videos[key] += value
                videos["segment_videos"].append(len(record_videos["videos"]))
            if self.tokens.has_audios:
                record_audios = self.tokens.audios(int(r))
                for key, value in record_audios.items():
                    audios[key] += value
                audios["segment_audios"].append(len(record_audios["audios"]))
        row = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "segment_lengths": lengths}
        if self.tokens.has_images:  # images in order, with how many belong to each sample (its own 3-D positions)
            row.update(images=images, image_grid_thw=grids, segment_images=per_segment)
        if self.tokens.has_videos:
            row.update(videos)
        if self.tokens.has_audios:  # in order; each audio's features replace its own <|AUDIO|> tokens
            row.update(audios)
        return row

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(len(self)))]
        return self._row(int(i))

    def __iter__(self) -> Iterator[dict]:
        for k in range(len(self)):
            yield self._row(k)

    def __eq__(self, other) -> bool:
        if not isinstance(other, (TokenRows, list)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"TokenRows({len(self)} {self.layout} rows)"
