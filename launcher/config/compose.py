"""Hydra at the edge: compose ``conf/train.yaml`` with the user's overrides, once, in the submitting process.

Everything below this module works on the typed ``Config``; nothing on a rank imports Hydra.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.config.schema import Config, parse_config
from launcher.errors import ConfigError
from launcher.paths import REPO_ROOT


def conf_dir() -> Path:
    """The Hydra config tree: ``$LAUNCHER_CONF_DIR`` or the repo's ``conf/``."""
    return Path(os.environ.get("LAUNCHER_CONF_DIR", REPO_ROOT / "conf")).resolve()


def hydra_error_line(exc: Exception) -> str:
    """A Hydra or OmegaConf error as one line, without the hints that do not name the problem."""
    text = " ".join(str(exc).split())
    # Hydra appends a hint about HYDRA_FULL_ERROR and the full key path; keep what names the problem.
    text = re.sub(r"\s*Set the environment variable HYDRA_FULL_ERROR=1.*$", "", text)
    text = re.sub(r"\s*full_key: .*$", "", text)
    text = re.sub(r"\s*Config search path:.*$", "", text)
    return text


def as_value_override(override: str, groups: set) -> str:
    """``a.b=c`` -> ``++a.b=c``: any schema key may be set even where a YAML file leaves it out.

    A key that is not in the schema is then rejected by ``parse_config`` with the list of known keys,
    instead of by Hydra's "Could not override" message. Group choices (``method=lora``) stay as they are.
    """
    if override.startswith(("+", "~")) or "=" not in override:
        return override
    key = override.split("=", 1)[0]
    if key in groups or "/" in key or "@" in key:
        return override
    return "++" + override


_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./\-]*")
_NON_STRINGS = re.compile(r"(?i)(true|false|null|none|nan|[-+]?inf|[-+]?[0-9._]+(e[-+]?[0-9]+)?)")
_DICT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def hydra_value(value: Any) -> str:
    """A Python value as Hydra's override grammar reads it back unchanged: ``key=`` + this gives ``value``.

    Strings are quoted where Hydra would read them as something else (a number, a bool, null, a list, an
    interpolation, words with spaces); lists and tuples become ``[a,b]``, dicts ``{k:v}``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            # Hydra's grammar has no quoted dict keys, so a key must read back as itself unquoted.
            if not isinstance(key, str) or not _DICT_KEY.fullmatch(key) or _NON_STRINGS.fullmatch(key):
                raise ValueError(f"dict key {key!r} cannot be written as a Hydra override key")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NON_STRINGS.fullmatch(text):
        return text
    # Hydra's quoted string: backslashes are escapes only before a quote or the closing quote, so only those
    # runs are doubled; OmegaConf's \${ keeps a literal ${ uninterpolated.
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def config_groups() -> set:
    return {p.name for p in conf_dir().iterdir() if p.is_dir()}


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _split(override: str) -> tuple[str, Optional[str]]:
    """``++a.b=c`` -> (``a.b``, ``c``); ``~a`` -> (``a``, None)."""
    key, _, value = override.lstrip("+~").partition("=")
    return key, (value if "=" in override else None)


def check_group_options(overrides: Sequence[str], groups: set) -> None:
    """``experiment=vl_demo``: refuse an option that has no file, with the options that do.

    Hydra refuses it for most groups, but an ``optional`` group (experiment) silently drops it, and the
    default job would run instead of the one asked for.
    """
    for override in overrides:
        key, value = _split(override)
        if key not in groups or value is None or override.startswith("~") or value in ("null", ""):
            continue
        options = group_options(key)
        for option in value.split(","):  # a sweep's a,b is checked per option
            if option.strip() not in options:
                raise ConfigError(
                    f"{key}={option.strip()}: conf/{key}/ has no option '{option.strip()}'; options: {', '.join(options)}"
                )


# Keys that name the user's own data: with them, the default data group's other settings would be a surprise.
OWN_DATA_KEYS = ("data.dataset_dir", "data.datasets")
DEFAULT_DATA = "tasks"
OWN_DATA = "custom"


def _experiment_overrides_data(option: str) -> bool:
    import yaml

    path = conf_dir() / "experiment" / f"{option}.yaml"
    try:
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    except (OSError, yaml.YAMLError):
        return False
    # entries look like {"override /data": "alpaca_demo"}
    return any(isinstance(d, dict) and any(str(k).replace("override", "").strip(" /") == "data" for k in d)
               for d in defaults)


def uses_implicit_data_group(overrides: Sequence[str]) -> bool:
    """True when the user names their own data (data.dataset_dir / data.datasets) but chooses no data group.

    The default group (data=tasks) also sets the held-out set, 10 epochs and the exact-match check of the
    embedded tasks; those must not leak into someone else's dataset, so such a run gets data=custom
    (neutral settings, conf/data/custom.yaml) instead.
    """
    keys = [_split(o) for o in overrides]
    if not any(k in OWN_DATA_KEYS for k, _ in keys) or any(k == "data" for k, _ in keys):
        return False
    return not any(k == "experiment" and v and _experiment_overrides_data(v) for k, v in keys)


def prepare_overrides(overrides: Sequence[str], groups: set) -> list[str]:
    """The user's overrides as Hydra gets them: group options checked, data=custom added where it applies."""
    check_group_options(overrides, groups)
    extra = [f"data={OWN_DATA}"] if uses_implicit_data_group(overrides) else []
    return extra + [as_value_override(o, groups) for o in overrides]


def missing_value_message(exc: Exception) -> str:
    """OmegaConf's MissingMandatoryValue (a ``???`` left in the chosen config) as a line that says what to set."""
    key = getattr(exc, "full_key", "") or "config"
    example = MISSING_VALUE_EXAMPLES.get(key, f"{key}=...")
    return f"{key}: has no value (??? in the chosen config); set it, e.g. launcher train ... {example}"


MISSING_VALUE_EXAMPLES = {
    "model.name_or_path": "model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct (a hub id, or a folder with a HF model)",
}


def config_groups_help() -> str:
    """For ``launcher train --help``: every group with its options (the default starred), read from conf/."""
    import yaml

    defaults = {}
    for entry in yaml.safe_load((conf_dir() / "train.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                defaults[key.split()[-1]] = value
    order = [g for g in defaults if g in config_groups()] + sorted(config_groups() - set(defaults))
    lines = [f"config groups ({conf_dir()}; choose with GROUP=OPTION, * = default):"]
    for group in order:
        # *.example.yaml files are templates to copy (local_profile.example), not options to pick.
        options = [o + ("*" if o == defaults.get(group) else "") for o in group_options(group)
                   if not o.endswith(".example")]
        lines.append(f"  {group:<12} {', '.join(options)}")
    lines += [
        "",
        "keys: override any key as KEY=VALUE (train.max_steps=100, method.lr=2e-4, data.cutoff_len=2048).",
        "  Every key, its type and default, is documented in launcher/config/schema.py (a docstring under each",
        "  field); README.md ('The config tree') explains the groups. --dry-run prints the resolved config.",
    ]
    return "\n".join(lines)


def compose_dict(overrides: Sequence[str] = (), config_name: str = "train") -> dict:
    """Compose the config tree with Hydra overrides into a plain, resolved dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    groups = config_groups()
    hydra_overrides = prepare_overrides(overrides, groups)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            composed = compose(config_name=config_name, overrides=hydra_overrides)
        data = OmegaConf.to_container(composed, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        raise ConfigError(missing_value_message(exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config: {hydra_error_line(exc)}") from None
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(data, dict)
    return data


def compose_config(overrides: Sequence[str] = (), config_name: str = "train", check: bool = True) -> Config:
    """Compose and validate: the one place a Config is made from Hydra.

    check=False: keys and types only; the preflight then lists every invalid value along with its other
    findings (``launcher train`` does this, so one dry run shows every problem)."""
    return parse_config(compose_dict(overrides, config_name), check=check)


def default_run_name(cfg: Config, explicit: Optional[str] = None) -> str:
    name = explicit or cfg.run.name or f"{cfg.model.name}-{cfg.method.name}-{cfg.data.name}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    if not safe:
        raise ConfigError(f"run.name: '{name}' has no usable characters; use letters, digits, '.', '_' or '-'")
    return safe
