"""Saved arguments: a YAML file of ``launcher train`` overrides, as the web UI's Save writes it and as
``launcher train --args-file FILE.yaml`` and the UI's Load read it (LlamaBoard's "save arguments").

The file holds Hydra overrides, not a config: composing them gives the same resolved config as the form (or
the command line) that wrote them, and a later change of conf/ defaults reaches the saved file as it reaches
a typed command. ::

    # launcher saved arguments: launcher train --args-file THIS.yaml [more overrides]
    launcher_args: 1
    name: journey             # --name (optional)
    overrides:                # as typed after launcher train
    - method=lora
    - method.lr=0.0001
    sweep: []                 # comma lists (a=1,2): non-empty means a grid (-m)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from launcher.errors import ConfigError

FORMAT_KEY = "launcher_args"
FORMAT_VERSION = 1
HEADER = "# launcher saved arguments: launcher train --args-file THIS.yaml [more overrides]\n"


@dataclass
class SavedArgs:
    overrides: list
    """Hydra overrides, in the order given (later ones win)."""
    name: Optional[str] = None
    """The run (or sweep) name, as ``--name``."""
    sweep: list = field(default_factory=list)
    """Grid overrides (``a=1,2``); non-empty: the CLI runs them as ``-m``."""


def _strings(value, path: Path, key: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: '{key}' must be a list of override strings (key=value), got {value!r}")
    return list(value)


def read_args_file(path) -> SavedArgs:
    """The saved arguments of ``path``; ConfigError naming the file and what to do when it is not one."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (a saved-arguments YAML, as the web UI's Save writes)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict) or FORMAT_KEY not in data:
        hint = ""
        if isinstance(data, dict) and {"stage", "model_name_or_path"} & set(data):
            hint = f"; it looks like a LLaMA-Factory config: use --from-llamafactory {path}"
        raise ConfigError(f"{path}: not a saved-arguments file (no '{FORMAT_KEY}: {FORMAT_VERSION}' key){hint}")
    if data[FORMAT_KEY] != FORMAT_VERSION:
        raise ConfigError(f"{path}: {FORMAT_KEY}: {data[FORMAT_KEY]!r} is not a version this launcher reads"
                          f" ({FORMAT_VERSION})")
    unknown = set(data) - {FORMAT_KEY, "name", "overrides", "sweep"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (allowed: name, overrides, sweep)")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{path}: 'name' must be a string, got {name!r}")
    return SavedArgs(_strings(data.get("overrides"), path, "overrides"), name or None,
                     _strings(data.get("sweep"), path, "sweep"))


def is_args_file(path) -> bool:
    """Whether ``path`` is a saved-arguments file (what Save may overwrite)."""
    try:
        read_args_file(path)
        return True
    except ConfigError:
        return False


def args_file_text(overrides: Sequence[str], name: Optional[str] = None, sweep: Sequence[str] = ()) -> str:
    import yaml

    body = {FORMAT_KEY: FORMAT_VERSION, "name": name or None, "overrides": list(overrides), "sweep": list(sweep)}
    return HEADER + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def write_args_file(path, overrides: Sequence[str], name: Optional[str] = None, sweep: Sequence[str] = ()) -> Path:
    """Write the saved arguments; an existing file is replaced only when it is itself a saved-arguments file
    (anything else there is the user's and is refused)."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{path}: a saved-arguments file ends in .yaml")
    if path.exists() and not is_args_file(path):
        raise ConfigError(f"{path}: exists and is not a saved-arguments file; pick another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(args_file_text(overrides, name, sweep), encoding="utf-8")
    tmp.replace(path)
    return path
