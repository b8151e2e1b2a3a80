"""Which datasets exist: LLaMA-Factory's ``dataset_info.json`` in a dataset dir, read unchanged.

A ``dataset_info.yaml`` next to it (same schema) is merged over it, so a project can add entries without
editing a file it copied from LLaMA-Factory.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from launcher.errors import DataError

# Columns and tags as LLaMA-Factory defaults them (data/README.md there).
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": None,
                  "system": None, "tools": None, "images": None, "videos": None, "audios": None,
                  "chosen": None, "rejected": None, "kto_tag": None}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": None, "tools": None, "images": None,
                    "videos": None, "audios": None, "chosen": None, "rejected": None, "kto_tag": None}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


@dataclass
class DatasetSpec:
    name: str
    file_name: Optional[str] = None
    hf_hub_url: Optional[str] = None
    ms_hub_url: Optional[str] = None
    om_hub_url: Optional[str] = None
    script_url: Optional[str] = None
    cloud_file_name: Optional[str] = None
    formatting: str = "alpaca"
    ranking: bool = False
    columns: dict = field(default_factory=dict)
    """Column names, merged over the format's defaults by ``resolved_columns``."""
    tags: dict = field(default_factory=dict)
    split: str = "train"
    subset: Optional[str] = None
    folder: Optional[str] = None
    num_samples: Optional[int] = None
    dataset_dir: Optional[Path] = None

    def resolved_columns(self) -> dict:
        base = SHAREGPT_COLUMNS if self.formatting == "sharegpt" else ALPACA_COLUMNS
        return {**base, **self.columns}

    def resolved_tags(self) -> dict:
        return {**SHAREGPT_TAGS, **self.tags}

    def is_text(self) -> bool:
        """Pretraining text: an alpaca entry that names only a text column (``columns: {prompt: text}``)."""
        named = set(self.columns)
        return self.formatting == "alpaca" and not self.ranking and named == {"prompt"}

    def is_feedback(self) -> bool:
        """KTO data: each answer carries a thumbs-up/down ``kto_tag`` column (LLaMA-Factory's kto_en_demo)."""
        return bool(self.resolved_columns().get("kto_tag")) and not self.ranking

    def source(self) -> Path:
        """The local file or folder of this dataset."""
        assert self.file_name and self.dataset_dir is not None
        return Path(self.dataset_dir) / self.file_name


def _read_info_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc.strerror}); check the file's permissions") from None
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); fix the file") from None
    else:
        import yaml

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: malformed YAML ({' '.join(str(exc).split())}); fix the file") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping from dataset name to entry")
    return raw


def parse_entry(name: str, entry: dict, dataset_dir: Path, where: Path) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: entry '{name}' must be a mapping (file_name, formatting, columns, ...)")
    known = {f.name for f in fields(DatasetSpec)} - {"name", "dataset_dir"}
    spec = DatasetSpec(name=name, dataset_dir=Path(dataset_dir))
    for key, value in entry.items():
        if key in known:
            setattr(spec, key, value)
        # Other keys (e.g. LLaMA-Factory's load_from) are ignored, as LLaMA-Factory ignores unknown ones.
    if spec.formatting not in ("alpaca", "sharegpt"):
        raise DataError(f"{where}: entry '{name}': formatting '{spec.formatting}' is not alpaca or sharegpt")
    if not isinstance(spec.columns, dict) or not isinstance(spec.tags, dict):
        raise DataError(f"{where}: entry '{name}': columns and tags must be mappings")
    return spec


class Registry(Mapping):
    """Dataset name -> DatasetSpec, each entry parsed when it is first looked up.

    As in LLaMA-Factory, which reads only the entries a run uses, one broken entry that the run does not use
    does not block it; a broken entry that it uses raises its DataError at the lookup.
    """

    def __init__(self, raw: dict[str, tuple], dataset_dir: Path) -> None:
        self._raw = raw  # name -> (entry, file it came from)
        self._dataset_dir = dataset_dir
        self._parsed: dict[str, DatasetSpec] = {}

    def __getitem__(self, name: str) -> DatasetSpec:
        if name not in self._parsed:
            entry, where = self._raw[name]
            self._parsed[name] = parse_entry(name, entry, self._dataset_dir, where)
        return self._parsed[name]

    def __iter__(self):
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def load_registry(dataset_dir: Path) -> Registry:
    dataset_dir = Path(dataset_dir)
    paths = [p for p in (dataset_dir / "dataset_info.json", dataset_dir / "dataset_info.yaml") if p.is_file()]
    if not paths:
        raise DataError(missing_info_file(dataset_dir))
    raw: dict[str, tuple] = {}
    for path in paths:
        for name, entry in _read_info_file(path).items():
            raw[str(name)] = (entry, path)
    return Registry(raw, dataset_dir)


def is_lf_data_default(dataset_dir: Path) -> bool:
    """Whether ``dataset_dir`` is where the LLaMA-Factory demo presets look: $LLAMAFACTORY_DATA, or its fallback
    beside the checkout."""
    from launcher.paths import LF_DATA_BESIDE_CHECKOUT, LF_DATA_ENV

    places = [LF_DATA_BESIDE_CHECKOUT] + ([Path(os.environ[LF_DATA_ENV])] if os.environ.get(LF_DATA_ENV) else [])
    return any(Path(dataset_dir).resolve() == Path(place).resolve() for place in places)


def missing_info_file(dataset_dir: Path) -> str:
    """The message for a data.dataset_dir without dataset_info.json: for the LLaMA-Factory demo presets, which
    folder to point LLAMAFACTORY_DATA at and where LLaMA-Factory keeps it."""
    from launcher.paths import LF_DATA_ENV, LF_DATA_SOURCE

    if is_lf_data_default(dataset_dir):
        state = f"{LF_DATA_ENV}={os.environ[LF_DATA_ENV]}" if os.environ.get(LF_DATA_ENV) else f"{LF_DATA_ENV} unset"
        return (f"{dataset_dir}: no dataset_info.json ({state}); the LLaMA-Factory demo presets read LLaMA-Factory's"
                f" data folder: set {LF_DATA_ENV}=/path/to/LLaMA-Factory/data ({LF_DATA_SOURCE}) or"
                " data.dataset_dir=DIR")
    return f"{dataset_dir}: no dataset_info.json in data.dataset_dir; point data.dataset_dir at the folder that has it"


def unknown_dataset(name: str, where: Path, specs: Mapping) -> str:
    """The message for a dataset name that ``where``/dataset_info.json lacks."""
    known = ", ".join(sorted(specs)) or "(none)"
    return f"unknown dataset '{name}' in {where}/dataset_info.json; datasets there: {known}"


def lookup(specs: Mapping, name: str, where: Path) -> DatasetSpec:
    if name not in specs:
        raise DataError(unknown_dataset(name, where, specs))
    return specs[name]
