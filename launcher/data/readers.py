"""Dataset files -> raw rows, each with a location (``file:line`` or ``file: row N``) for error messages.

json (a list of objects), jsonl, txt (one text per line) are read here; csv, parquet and arrow through
``datasets``. A folder reads every supported file in it, in name order. Hub sources fail fast offline.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Iterator

from launcher.errors import DataError
from launcher.data.registry import DatasetSpec

FILE_TYPES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow",
              ".txt": "text"}
HUB_HOST = ("huggingface.co", 443)


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
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_TYPES)
        if not files:
            raise DataError(f"{path}: folder has no {', '.join(sorted(FILE_TYPES))} files")
        for file in files:
            yield from read_file_rows(file)
        return
    yield from read_file_rows(path)


def read_file_rows(path: Path) -> Iterator[tuple[str, dict]]:
    if not path.exists():
        raise DataError(f"{path}: dataset file not found; check file_name in dataset_info.json and data.dataset_dir")
    kind = FILE_TYPES.get(path.suffix)
    if kind is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(sorted(FILE_TYPES))}")
    if kind in ("csv", "parquet", "arrow"):
        yield from _read_with_datasets(path, kind)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); re-encode the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc.strerror}); check the path and its permissions") from None
    if kind == "text":
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{path}:{lineno}", {"text": line}
    elif kind == "jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or remove the line") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "; this looks like JSON Lines: rename the file to .jsonl" if exc.msg == "Extra data" else "; fix the file"
            raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}){hint}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows, got a JSON {type(data).__name__}")
        for i, row in enumerate(data):
            yield f"{path}: row {i}", row


def _read_with_datasets(path: Path, kind: str) -> Iterator[tuple[str, dict]]:
    import datasets

    try:
        if kind == "csv":
            table = datasets.Dataset.from_csv(str(path), keep_in_memory=True)
        elif kind == "parquet":
            table = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
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


def _read_arrow(path: Path):
    import datasets
    import pyarrow as pa

    try:
        return datasets.Dataset.from_file(str(path), in_memory=True)  # the stream format `datasets` writes
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
