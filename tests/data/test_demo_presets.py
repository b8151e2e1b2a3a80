"""The LLaMA-Factory demo presets read the user's LLaMA-Factory data folder (LLAMAFACTORY_DATA, else
../shared/datasets/llamafactory-demo beside the checkout); where there is none, the dry run says in one line what
to set and where LLaMA-Factory keeps it. The README shows the variable where it shows the demo commands, and
every data= / experiment= option it names exists."""
import re
from pathlib import Path

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config, conf_dir
from launcher.data import resolve_dataset_dir
from launcher.data.registry import missing_info_file
from launcher.paths import LF_DATA_BESIDE_CHECKOUT, LF_DATA_ENV
from tests.conftest import SHARED_DEMO

REPO = Path(__file__).resolve().parents[2]
LF_PRESETS = {"alpaca_demo": "alpaca_en_demo", "kto_demo": "kto_en_demo", "c4_demo": "c4_demo",
              "mllm_demo": "mllm_demo", "wiki_demo": "wiki_demo"}


@pytest.mark.parametrize("preset", sorted(LF_PRESETS))
def test_preset_reads_llamafactory_data_or_the_folder_beside_the_checkout(preset, monkeypatch, tmp_path):
    monkeypatch.delenv(LF_DATA_ENV, raising=False)
    cfg = compose_config([f"data={preset}"], check=False)
    assert resolve_dataset_dir(cfg.data).resolve() == LF_DATA_BESIDE_CHECKOUT.resolve()
    assert [entry.name for entry in cfg.data.datasets] == [LF_PRESETS[preset]]
    monkeypatch.setenv(LF_DATA_ENV, str(tmp_path))
    assert resolve_dataset_dir(compose_config([f"data={preset}"], check=False).data) == tmp_path


def test_the_preset_files_name_no_folder_of_the_repository():
    for preset in LF_PRESETS:
        text = (conf_dir() / "data" / f"{preset}.yaml").read_text()
        assert f"${{oc.env:{LF_DATA_ENV},../shared/datasets/llamafactory-demo}}" in text, preset
    assert not (REPO / "data" / "llamafactory").exists()  # LF's files are not copied into the repository


def test_no_data_folder_is_one_line_naming_the_variable_and_where_llamafactory_keeps_it(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(LF_DATA_ENV, raising=False)
    line = missing_info_file(LF_DATA_BESIDE_CHECKOUT)  # a fresh clone with nothing beside it
    assert "\n" not in line and f"{LF_DATA_ENV} unset" in line
    assert f"set {LF_DATA_ENV}=/path/to/LLaMA-Factory/data" in line and "github.com/hiyouga/LLaMA-Factory" in line
    assert "LLaMA-Factory/data" in line
    monkeypatch.setenv(LF_DATA_ENV, str(tmp_path / "nowhere"))
    assert cli_main(["train", "data=alpaca_demo", "--dry-run"]) != 0
    err = capsys.readouterr().err
    lines = [text for text in err.splitlines() if LF_DATA_ENV in text]
    assert len(lines) == 1 and f"{LF_DATA_ENV}={tmp_path / 'nowhere'}" in lines[0], err
    assert "git clone https://github.com/hiyouga/LLaMA-Factory" in lines[0]
    # a folder of the user's own keeps the plain message
    assert LF_DATA_ENV not in missing_info_file(tmp_path / "mine")


@pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason=f"no LLaMA-Factory demo data at {SHARED_DEMO}")
def test_readme_demo_commands_pass_the_dry_run_with_the_variable_it_shows(monkeypatch, capsys):
    """Each README command of the form ``launcher train ... data=<LF preset>`` (tiny model, no VL) passes the dry run
    with LLAMAFACTORY_DATA set as the README shows it (here: pointing at LF's demo folder)."""
    readme = (REPO / "README.md").read_text()
    first_use = min(m.start() for m in re.finditer(rf"^(launcher|    ).*data=({'|'.join(LF_PRESETS)})\b", readme, re.M))
    assert f"export {LF_DATA_ENV}=/path/to/LLaMA-Factory/data" in readme[:first_use]
    monkeypatch.setenv(LF_DATA_ENV, str(SHARED_DEMO))
    commands = [line.split("#")[0].split() for line in readme.splitlines()
                if line.startswith("launcher train ") and re.search(r"data=(kto|c4|alpaca)_demo\b", line)]
    assert len(commands) >= 2
    for command in commands:
        assert cli_main([*command[1:], "--dry-run"]) == 0, command
        assert "preflight passed" in capsys.readouterr().out


def test_every_group_option_the_readme_names_exists():
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"(?<![.\w])(data|experiment|model|method|parallelism|cluster|logger)=([a-z][a-z0-9_]*)(?![.\w])", readme))
    assert ("data", "alpaca_demo") in named and ("experiment", "vl_demo") in named
    missing = [f"{group}={option}" for group, option in sorted(named)
               if not (conf_dir() / group / f"{option}.yaml").is_file()]
    # the error example names an option that does not exist, on purpose
    assert missing == ["experiment=vl_dem"], missing
