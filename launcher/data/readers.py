"""Dataset files -> raw rows, each with a location (``file:line`` or ``file: row N``) for error messages.

json (a list of objects), jsonl, txt (one text per line) and parquet (by record batches) are read here,
csv and arrow through ``datasets``. Everything streams: a file's rows are never all held as Python objects
twice. A folder reads every supported file in it, in name order. Hub sources fail fast offline.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Iterator

from launcher.errors import DataError
from launcher.data.registry import DatasetSpec

FILE_TYPES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow",
              ".txt": "text"}
HUB_HOST = ("huggingface.co", 443)
EMPTY_FILE = "{path}: the file is empty; fill it (or check file_name in dataset_info.json)"


def read_spec_rows(spec: DatasetSpec) -> Iterator[tuple[str, dict]]:
    """(location, row) for every row of a registry entry."""
    if spec.file_name:
        path = spec.source()
        yield from read_path_rows(path / spec.folder if spec.folder and path.is_dir() else path)
        return
    if spec.hf_hub_url:
        yield from read_hub_rows(spec)
        return
    source = spec.ms_hub_url or spec.om_hub_url or spec.script_url or spec.cloud_file_name
    raise DataError(
        f"dataset '{spec.name}': source {source!r} (ModelScope/Modelers/script/cloud) is not supported;"
        " download it and point file_name at the local file"
    )


def read_path_rows(path: Path) -> Iterator[tuple[str, dict]]:
    for file in _files_of(path):
        yield from read_file_rows(file)


def read_file_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) of one file; JSON Lines are parsed here (``read_file_items`` leaves them raw)."""
    for where, payload, raw in read_file_items(path):
        yield where, (parse_json_line(payload, where) if raw else payload)


def parse_json_line(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: malformed JSON line ({exc.msg}); fix or remove the line") from None


def read_spec_items(spec: DatasetSpec) -> Iterator[tuple[str, Any, bool]]:
    """(location, payload, raw) for every row of a registry entry; raw: payload is a JSON line not yet parsed,
    so that the parsing (and its errors) happens in the worker that formats the row."""
    if spec.file_name:
        path = spec.source()
        path = path / spec.folder if spec.folder and path.is_dir() else path
        for file in _files_of(path):
            yield from read_file_items(file)
        return
    for where, row in read_spec_rows(spec):
        yield where, row, False


def _files_of(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_TYPES)
    if not files:
        raise DataError(f"{path}: folder has no {', '.join(sorted(FILE_TYPES))} files")
    return files


def read_file_items(path: Path) -> Iterator[tuple[str, Any, bool]]:
    """Streams a file: text and JSON Lines line by line, parquet by record batches, arrow memory-mapped; a JSON
    list is parsed row by row from a window of its text (``_json_list_rows``)."""
    if not path.exists():
        raise DataError(f"{path}: dataset file not found; check file_name in dataset_info.json and data.dataset_dir")
    kind = FILE_TYPES.get(path.suffix)
    if kind is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(sorted(FILE_TYPES))}")
    if kind in ("csv", "parquet", "arrow"):
        for where, row in _read_with_datasets(path, kind):
            yield where, row, False
        return
    if kind in ("text", "jsonl"):
        empty = True
        for lineno, line in _lines(path):
            if line.strip():
                empty = False
                yield f"{path}:{lineno}", (line if kind == "jsonl" else {"text": line}), kind == "jsonl"
        if empty:
            raise DataError(EMPTY_FILE.format(path=path))
        return
    for i, row in enumerate(_json_list_rows(path)):
        yield f"{path}: row {i}", row, False


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) as str.splitlines counts them, without reading the file whole."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            lineno = 0
            for chunk in fh:
                for line in chunk.splitlines():  # \r, \x0b, \u2028...: the boundaries splitlines() uses
                    lineno += 1
                    yield lineno, line
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); re-encode the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc.strerror}); check the path and its permissions") from None


class _JsonText:
    """A JSON file's text as a window: read in chunks of bytes, decoded as UTF-8 (a BOM dropped), extended at
    the end when a value runs past it, with what lies before the current row dropped at each extension; the
    lines dropped are counted, for the line numbers of errors."""

    def __init__(self, path: Path, chunk_bytes: int):
        self.path, self.chunk_bytes = path, chunk_bytes
        self.fh = open(path, "rb")
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.lines_before, self.bytes_read, self.eof = "", 0, 0, False

    def more(self, keep: int) -> bool:
        """Drop the text before ``keep``, append the next chunk; False (nothing changed) at the end of the file."""
        if self.eof:
            return False
        chunk = self.fh.read(self.chunk_bytes)
        self.eof = len(chunk) < self.chunk_bytes
        try:
            new = self.decoder.decode(chunk, final=self.eof)
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {self.bytes_read + exc.start});"
                            " re-encode the file as UTF-8") from None
        self.bytes_read += len(chunk)
        self.lines_before += self.text.count("\n", 0, keep)
        self.text = self.text[keep:] + new
        return True

    def ahead(self, pos: int) -> int:
        """Read on while less than half a chunk lies after ``pos``; the position, moved with the window. So a row
        is rarely cut by the window's end: a cut one is parsed again, and the error raised first (its line and
        column counted over the window) costs more than the row."""
        while len(self.text) - pos < self.chunk_bytes // 2 and self.more(pos):
            pos = 0
        return pos

    def skip_space(self, pos: int) -> int:
        """The position of the next non-blank character, reading on as needed (len(text) at the end)."""
        while True:
            pos = _BLANK.match(self.text, pos).end()
            if pos < len(self.text) or not self.more(pos):
                return pos
            pos = 0

    def line_of(self, pos: int) -> int:
        return self.lines_before + self.text.count("\n", 0, pos) + 1

    def close(self) -> None:
        self.fh.close()


_BLANK = re.compile(r"[ \t\n\r]*")
NUMBER_MARGIN = 64
"""Characters a number must leave before the window's end to be taken as whole (more than any number has)."""


def _json_list_rows(path: Path, chunk_bytes: int = 1 << 24) -> Iterator[Any]:
    """The rows of a JSON list, parsed one at a time from a window of the text (about ``chunk_bytes``): the
    file is never held whole, as text or as objects, so memory does not grow with it. Why not ``json.load``:
    it builds every row's objects at once (for 200k alpaca rows about 1 GB in the reading process, 6x the
    file), and a process that encodes beside that heap was measured a third slower per row."""
    scan = json.JSONDecoder().raw_decode
    try:
        src = _JsonText(path, chunk_bytes)
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc.strerror}); check the path and its permissions") from None

    def malformed(exc: json.JSONDecodeError) -> DataError:
        hint = "; this looks like JSON Lines: rename the file to .jsonl" if exc.msg == "Extra data" else "; fix the file"
        return DataError(f"{path}:{src.line_of(exc.pos)}: malformed JSON ({exc.msg}){hint}")

    def decode(pos: int) -> tuple[Any, int]:
        """The value at ``pos`` and the position after it; a value cut by the window's end (it fails to parse,
        or it is a number) is read again with more text. The window may move: positions are fresh."""
        while True:
            try:
                value, end = scan(src.text, pos)
            except json.JSONDecodeError as exc:
                if src.more(pos):
                    pos = 0
                    continue
                raise malformed(exc) from None
            # A number near the window's end may go on past it ("2" of "2.5"): read on first.
            margin = NUMBER_MARGIN if isinstance(value, (int, float)) and not isinstance(value, bool) else 1
            if end + margin <= len(src.text) or not src.more(pos):
                return value, end
            pos = 0

    try:
        pos = src.skip_space(0)
        if pos == len(src.text):
            raise DataError(EMPTY_FILE.format(path=path))
        if src.text[pos] != "[":
            value, end = decode(pos)
            end = src.skip_space(end)
            if end < len(src.text):
                raise malformed(json.JSONDecodeError("Extra data", src.text, end))
            raise DataError(f"{path}: expected a JSON list of rows, got a JSON {type(value).__name__}")
        pos = src.skip_space(pos + 1)
        first = True
        while True:
            if pos == len(src.text):
                raise malformed(json.JSONDecodeError("Expecting value or ']'", src.text, pos))
            if src.text[pos] == "]":
                break
            if not first:
                if src.text[pos] != ",":
                    raise malformed(json.JSONDecodeError("Expecting ',' delimiter", src.text, pos))
                pos = src.skip_space(pos + 1)
            row, pos = decode(src.ahead(pos))
            yield row
            first = False
            pos = src.skip_space(pos)
        end = src.skip_space(pos + 1)
        if end < len(src.text):
            raise malformed(json.JSONDecodeError("Extra data", src.text, end))
    finally:
        src.close()


def _read_with_datasets(path: Path, kind: str) -> Iterator[tuple[str, dict]]:
    import datasets

    if kind == "parquet":
        yield from _read_parquet(path)
        return
    try:
        if kind == "csv":
            table = datasets.Dataset.from_csv(str(path), keep_in_memory=True)
        else:
            table = _read_arrow(path)
    except DataError:
        raise
    except Exception as exc:  # the readers raise many types; the user needs the file and the reason
        raise DataError(f"{path}: unreadable {kind} file ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    # csv rows are counted from 1 after the header line, as a spreadsheet shows them
    first = 1 if kind == "csv" else 0
    for i, row in enumerate(table):
        yield f"{path}: row {i + first}", row


def _read_parquet(path: Path, batch_rows: int = 4096) -> Iterator[tuple[str, dict]]:
    """Record batch by record batch: a parquet file of any size holds one batch of Python rows at a time."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(str(path)).iter_batches(batch_size=batch_rows)
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield f"{path}: row {i}", row
                i += 1
    except Exception as exc:  # pyarrow raises many types; the user needs the file and the reason
        raise DataError(f"{path}: unreadable parquet file ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def _read_arrow(path: Path):
    import datasets
    import pyarrow as pa

    try:
        return datasets.Dataset.from_file(str(path))  # the stream format `datasets` writes, memory-mapped
    except Exception:
        with pa.memory_map(str(path)) as source:  # the IPC file format pyarrow/pandas write
            return datasets.Dataset(pa.ipc.open_file(source).read_all())


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """A fast check, so that an offline cluster node fails in seconds instead of retrying for minutes."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ) not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout_s):
            return True
    except OSError:
        return False


def read_hub_rows(spec: DatasetSpec) -> Iterator[tuple[str, dict]]:
    if not hub_reachable():
        raise DataError(
            f"dataset '{spec.name}': hf_hub_url '{spec.hf_hub_url}' needs the Hugging Face Hub, which is not reachable"
            " (offline or HF_HUB_OFFLINE=1); download it where there is network and point file_name at the file"
        )
    import datasets

    try:
        table = datasets.load_dataset(spec.hf_hub_url, name=spec.subset, split=spec.split, data_dir=spec.folder)
    except Exception as exc:
        raise DataError(f"dataset '{spec.name}': could not load '{spec.hf_hub_url}' from the Hub ({exc})") from None
    for i, row in enumerate(table):
        yield f"{spec.hf_hub_url}: row {i}", row
