"""The benchmarks' 200k-row alpaca set: LLaMA-Factory's alpaca_en_demo repeated. No launcher import, so that
LLaMA-Factory's own environment can build the same set (bench_data_lf.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "alpaca_big"


def demo_dir() -> Path | None:
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "llamafactory-demo"
    path = Path(os.environ.get("LAUNCHER_LF_DEMO_DIR", default))
    return path if (path / "dataset_info.json").is_file() else None


def write_big_set(folder: Path, rows: int) -> None:
    """``rows`` alpaca rows in ``folder/alpaca_big.json`` with its dataset_info.json entry."""
    demo = json.loads((demo_dir() / "alpaca_en_demo.json").read_text())
    big = [demo[i % len(demo)] for i in range(rows)]
    (folder / f"{NAME}.json").write_text(json.dumps(big, ensure_ascii=False))
    (folder / "dataset_info.json").write_text(json.dumps({NAME: {"file_name": f"{NAME}.json"}}))
