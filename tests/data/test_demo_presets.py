"""The LLaMA-Factory demo presets run on a fresh clone: they read the shipped data/llamafactory (byte-for-byte
copies of LF's files) unless LLAMAFACTORY_DATA points at LF's own data folder; and every data= / experiment=
option the README names exists."""
import json
import re
from pathlib import Path

import pytest

from launcher.config.compose import compose_config, conf_dir
from launcher.data import resolve_dataset_dir
from launcher.paths import SHIPPED_LF_DATA
from tests.conftest import SHARED_DEMO

REPO = Path(__file__).resolve().parents[2]
SHIPPED_PRESETS = {"alpaca_demo": "alpaca_en_demo", "kto_demo": "kto_en_demo", "c4_demo": "c4_demo",
                   "mllm_demo": "mllm_demo"}


@pytest.mark.parametrize("preset", sorted(SHIPPED_PRESETS))
def test_preset_reads_the_shipped_folder_or_llamafactory_data(preset, monkeypatch):
    monkeypatch.delenv("LLAMAFACTORY_DATA", raising=False)
    cfg = compose_config([f"data={preset}"], check=False)
    assert resolve_dataset_dir(cfg.data).resolve() == SHIPPED_LF_DATA.resolve()
    assert [entry.name for entry in cfg.data.datasets] == [SHIPPED_PRESETS[preset]]
    monkeypatch.setenv("LLAMAFACTORY_DATA", "/opt/LLaMA-Factory/data")
    assert compose_config([f"data={preset}"], check=False).data.dataset_dir == "/opt/LLaMA-Factory/data"


def test_shipped_files_are_llamafactorys_own():
    info = json.loads((SHIPPED_LF_DATA / "dataset_info.json").read_text())
    assert set(info) == set(SHIPPED_PRESETS.values())
    assert (SHIPPED_LF_DATA / "LICENSE.LLaMA-Factory").read_text().count("Apache License") >= 1
    files = [entry["file_name"] for entry in info.values()]
    for row in json.loads((SHIPPED_LF_DATA / "mllm_demo.json").read_text()):
        files += row["images"]
    total = 0
    for name in files:
        path = SHIPPED_LF_DATA / name
        assert path.is_file(), name
        total += path.stat().st_size
        if SHARED_DEMO.is_dir():
            assert path.read_bytes() == (SHARED_DEMO / name).read_bytes(), name
    assert total < 3_000_000  # small only: the rest stays in LLaMA-Factory's folder (LLAMAFACTORY_DATA)
    if SHARED_DEMO.is_dir():
        lf_info = json.loads((SHARED_DEMO / "dataset_info.json").read_text())
        assert all(lf_info[name] == entry for name, entry in info.items())


def test_every_group_option_the_readme_names_exists():
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"(?<![.\w])(data|experiment|model|method|parallelism|cluster|logger)=([a-z][a-z0-9_]*)(?![.\w])", readme))
    assert ("data", "alpaca_demo") in named and ("experiment", "vl_demo") in named
    missing = [f"{group}={option}" for group, option in sorted(named)
               if not (conf_dir() / group / f"{option}.yaml").is_file()]
    # the error example names an option that does not exist, on purpose
    assert missing == ["experiment=vl_dem"], missing
