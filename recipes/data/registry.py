"""Which datasets exist: LLaMA-Factory's ``dataset_info.json`` in a dataset dir, read unchanged."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from launcher.errors import DataError


@dataclass
class DatasetSpec:
    name: str
    file_name: Optional[str] = None
    hf_hub_url: Optional[str] = None
    formatting: str = "alpaca"
    ranking: bool = False
    columns: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    split: str = "train"
    subset: Optional[str] = None
    folder: Optional[str] = None
    num_samples: Optional[int] = None
    dataset_dir: Optional[Path] = None


def load_registry(dataset_dir: Path) -> dict[str, DatasetSpec]:
    path = Path(dataset_dir) / "dataset_info.json"
    if not path.is_file():
        raise DataError(f"{path}: no dataset_info.json in data.dataset_dir; point data.dataset_dir at the folder that has it")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); fix the file") from None
    specs = {}
    for name, entry in raw.items():
        spec = DatasetSpec(name=name, dataset_dir=Path(dataset_dir))
        for key, value in entry.items():
            if hasattr(spec, key):
                setattr(spec, key, value)
        specs[name] = spec
    return specs


def lookup(specs: dict[str, DatasetSpec], name: str, where: Path) -> DatasetSpec:
    if name not in specs:
        known = ", ".join(sorted(specs)) or "(none)"
        raise DataError(f"unknown dataset '{name}' in {where}/dataset_info.json; datasets there: {known}")
    return specs[name]
