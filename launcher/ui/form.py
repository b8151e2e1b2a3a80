"""The compose form: what ``conf/`` offers, and the form's values as Hydra overrides.

Pure functions (no Gradio): the options of each config group are the YAML files of its folder; the common
keys are a fixed list whose defaults come from composing the chosen groups; the overrides a form produces are
the shortest list that composes to what the form shows (only groups and keys that differ from the default).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from launcher.config.compose import hydra_value
from launcher.errors import ConfigError

GROUPS = ("model", "data", "method", "parallelism", "cluster", "logger", "experiment")
"""Config groups with a selector, in the order the form shows them."""

NO_EXPERIMENT = "(none)"


@dataclass(frozen=True)
class Field:
    key: str
    """Dotted config key, e.g. ``method.lr``."""
    kind: str
    """int, float, bool, str, or choice."""
    choices: tuple = ()
    optional: bool = False
    """An empty box means null."""


FIELDS = (
    Field("method.lr", "float"),
    Field("train.max_steps", "int"),
    Field("train.epochs", "float"),
    Field("train.micro_batch_size", "int"),
    Field("train.global_batch_size", "int", optional=True),
    Field("data.cutoff_len", "int"),
    Field("data.packing", "bool"),
    Field("method.lora.r", "int"),
    Field("method.lora.alpha", "int"),
    Field("method.dpo.beta", "float"),
    Field("method.dpo.loss_type", "choice", choices=("sigmoid", "ipo", "hinge", "simpo", "orpo")),
    Field("cluster.nodes", "int"),
    Field("cluster.nproc_per_node", "int"),
    Field("cluster.gpus_per_node", "int"),
    Field("cluster.time_min", "int"),
    Field("cluster.partition", "str", optional=True),
    Field("cluster.account", "str", optional=True),
)


def group_options(conf_dir=None) -> dict:
    """{group: [option, ...]} from the YAML files of each group folder (examples and templates left out)."""
    from pathlib import Path

    from launcher.config.compose import conf_dir as default_conf_dir

    root = Path(conf_dir) if conf_dir else default_conf_dir()
    options = {}
    for group in GROUPS:
        names = sorted(p.stem for p in (root / group).glob("*.yaml") if not p.stem.endswith(".example")
                       and ".example" not in p.name)
        options[group] = ([NO_EXPERIMENT] if group == "experiment" else []) + names
    return options


def default_groups(conf_dir=None) -> dict:
    """The group choices of ``conf/train.yaml``'s defaults list (experiment: none)."""
    from pathlib import Path

    import yaml

    from launcher.config.compose import conf_dir as default_conf_dir

    root = Path(conf_dir) if conf_dir else default_conf_dir()
    data = yaml.safe_load((root / "train.yaml").read_text())
    chosen = {group: NO_EXPERIMENT if group == "experiment" else None for group in GROUPS}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.replace("optional ", "").strip()
                if group in chosen and value is not None:
                    chosen[group] = value
    return chosen


def group_overrides(groups: dict, defaults: Optional[dict] = None) -> list:
    """``group=option`` for each group whose choice is not the default."""
    defaults = defaults if defaults is not None else default_groups()
    out = []
    for group in GROUPS:
        value = groups.get(group)
        if value and value != defaults.get(group) and value != NO_EXPERIMENT:
            out.append(f"{group}={value}")
    return out


def lookup(data: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def field_defaults(composed: dict) -> dict:
    """{key: value} of every form field in a composed config (what the boxes show for these groups)."""
    return {f.key: lookup(composed, f.key) for f in FIELDS}


def coerce(field: Field, raw: Any) -> Any:
    """A form box's value -> the config value (None for an empty optional box); ConfigError names the key."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if field.optional:
            return None
        raise ConfigError(f"{field.key}: needs a value")
    try:
        if field.kind == "int":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if field.kind == "float":
            return float(raw)
        if field.kind == "bool":
            return bool(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{field.key}: expected {field.kind}, got {raw!r}") from None
    return str(raw).strip()


def field_overrides(values: dict, defaults: dict) -> list:
    """``key=value`` for each form field whose value differs from the composed default."""
    out = []
    for field in FIELDS:
        if field.key not in values:
            continue
        value = coerce(field, values[field.key])
        default = defaults.get(field.key)
        same = value == default or (field.kind == "float" and default is not None and value == float(default))
        if not same:
            out.append(f"{field.key}={hydra_value(value)}")
    return out


def split_overrides(text: str) -> list:
    """The free overrides box: whitespace or newline separated, shell-style quotes allowed, ``#`` comments.

    This only splits words; nothing typed here is ever run by a shell.
    """
    try:
        return shlex.split(text or "", comments=True)
    except ValueError as exc:
        raise ConfigError(f"overrides box: {exc} (close the quote)") from None


def form_overrides(groups: dict, values: dict, free_text: str, composed_defaults: dict) -> list:
    """The whole form as one override list: groups, changed fields, then the free box (which wins)."""
    return group_overrides(groups) + field_overrides(values, composed_defaults) + split_overrides(free_text)


def train_command(overrides: Sequence[str], name: Optional[str] = None, sweep: bool = False) -> str:
    """The CLI command that does what the form does, quoted for a POSIX shell (for copying, not running)."""
    words = ["launcher", "train"] + (["-m"] if sweep else []) + list(overrides)
    if name:
        words += ["--name", name]
    from launcher.shell import shell_command

    return shell_command(words)
