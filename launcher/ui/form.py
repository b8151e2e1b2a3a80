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
    """int, float, bool, str, choice, list (dataset names), modules (LoRA targets) or words (a list of
    strings typed comma-separated, e.g. GRPO's rewards)."""
    choices: tuple = ()
    optional: bool = False
    """An empty box means null."""
    section: str = "train"
    """The form row it sits in: model, data, train, lora, or a method block (dpo, kto, ...) of conf/method;
    the lora row and a block's row show only for the methods they apply to (``applies``)."""


LORA = "lora"

FIELDS = (
    Field("model.name_or_path", "str", optional=True, section="model"),
    Field("model.dtype", "choice", choices=("auto", "float32", "bfloat16", "float16"), section="model"),
    Field("data.dataset_dir", "str", section="data"),
    Field("data.datasets", "list", section="data"),
    Field("data.eval_datasets", "list", section="data"),
    Field("method.lr", "float"),
    Field("train.max_steps", "int"),
    Field("train.epochs", "float"),
    Field("train.micro_batch_size", "int"),
    Field("train.grad_accum", "int", optional=True),
    Field("train.global_batch_size", "int", optional=True),
    Field("data.cutoff_len", "int"),
    Field("data.packing", "bool"),
    Field("train.log_every", "int"),
    Field("train.eval_every", "int"),
    Field("train.save_every", "int"),
    Field("method.lora.r", "int", section=LORA),
    Field("method.lora.alpha", "int", section=LORA),
    Field("method.lora.plus_lr_ratio", "float", optional=True, section=LORA),
    Field("method.lora.target_modules", "modules", section=LORA),
    Field("method.lora.quantize", "choice", choices=("", "4bit", "8bit"), optional=True, section=LORA),
    Field("method.dpo.beta", "float", section="dpo"),
    Field("method.dpo.loss_type", "choice", choices=("sigmoid", "ipo", "hinge", "simpo", "orpo"), section="dpo"),
    Field("method.kto.beta", "float", section="kto"),
    Field("method.grpo.num_generations", "int", section="grpo"),
    Field("method.grpo.max_completion_length", "int", section="grpo"),
    Field("method.grpo.rewards", "words", section="grpo"),
    Field("method.grpo.loss_type", "choice", choices=("grpo", "dr_grpo", "dapo", "bnpo"), section="grpo"),
    Field("method.grpo.beta", "float", section="grpo"),
    Field("method.ppo.reward_model", "str", optional=True, section="ppo"),
    Field("method.ppo.max_completion_length", "int", section="ppo"),
    Field("method.ppo.ppo_epochs", "int", section="ppo"),
    Field("method.ppo.kl_coef", "float", section="ppo"),
    Field("cluster.nodes", "int"),
    Field("cluster.nproc_per_node", "int"),
    Field("cluster.gpus_per_node", "int"),
    Field("cluster.time_min", "int"),
    Field("cluster.partition", "str", optional=True),
    Field("cluster.account", "str", optional=True),
)


SECTIONS = ("model", "data", "train", LORA, "dpo", "kto", "grpo", "ppo", "cluster")
"""The form's rows, in order (a field's ``section``; cluster keys sit in the cluster row)."""


def section_of(field: Field) -> str:
    return "cluster" if field.key.startswith("cluster.") else field.section


def method_blocks(method: str, conf_dir=None) -> set:
    """The blocks (``dpo``, ``kto``, ``lora``...) a method's conf/method YAML sets, through its defaults list,
    plus ``lora`` when it trains adapters (``finetuning: lora``): which method rows of the form apply. Read
    from conf/, so a method another file adds (with its own block) gets its row without a list here."""
    from pathlib import Path

    import yaml

    from launcher.config.compose import conf_dir as default_conf_dir

    root = Path(conf_dir) if conf_dir else default_conf_dir()
    blocks, finetuning, seen = set(), None, set()

    def read(name: str) -> None:
        nonlocal finetuning
        if name in seen:
            return
        seen.add(name)
        try:
            data = yaml.safe_load((root / "method" / f"{name}.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            return
        for entry in data.get("defaults", []) or []:
            if isinstance(entry, str) and entry != "_self_":
                read(entry)
        blocks.update(k for k, v in data.items() if isinstance(v, dict))
        finetuning = data.get("finetuning", finetuning)

    read(method)
    blocks.discard(LORA)
    if finetuning == LORA:
        blocks.add(LORA)
    return blocks


def applies(field: Field, method: str) -> bool:
    """Whether a field belongs on the form for ``method`` (its section is not a method block, or the method
    sets that block)."""
    section = section_of(field)
    if section in ("model", "data", "train", "cluster"):
        return True
    return section in method_blocks(method)


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


def shown_value(field: Field, value: Any) -> Any:
    """A config value as its form box shows it: dataset entries by name, module lists comma-joined, null as
    an empty box."""
    if field.kind == "list":
        return [v.get("name") if isinstance(v, dict) else str(v) for v in (value or [])]
    if field.kind in ("modules", "words"):
        return value if isinstance(value, str) else ",".join(map(str, value or []))
    if value is None and (field.kind == "str" or field.optional):
        return ""
    return value


def field_defaults(composed: dict) -> dict:
    """{key: value} of every form field in a composed config (what the boxes show for these groups)."""
    return {f.key: shown_value(f, lookup(composed, f.key)) for f in FIELDS}


def dataset_names(folder: str) -> list:
    """The dataset names of a folder's dataset_info.json (relative folders as runs resolve them); [] when it
    has none."""
    from launcher.config.schema import DataConfig
    from launcher.data import resolve_dataset_dir
    from launcher.data.registry import load_registry

    if not (folder or "").strip():
        return []
    try:
        return sorted(load_registry(resolve_dataset_dir(DataConfig(dataset_dir=folder.strip()))))
    except Exception:  # noqa: BLE001 - no registry or a broken one: nothing to offer (the preflight says why)
        return []


def coerce(field: Field, raw: Any) -> Any:
    """A form box's value -> the config value (None for an empty optional box); ConfigError names the key."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if field.optional:
            return None
        raise ConfigError(f"{field.key}: needs a value")
    if field.kind == "list":
        items = raw if isinstance(raw, (list, tuple)) else [x for x in str(raw).replace(",", " ").split()]
        return [str(x).strip() for x in items if str(x).strip()]
    if field.kind == "modules":
        text = ",".join(raw) if isinstance(raw, (list, tuple)) else str(raw)
        names = [x.strip() for x in text.replace(" ", ",").split(",") if x.strip()]
        # LLaMA-Factory's "all" is every linear layer: our all-linear
        return "all-linear" if names in (["all"], ["all-linear"]) else names
    if field.kind == "words":  # commas only: a reward may be module:function or rm:RUN_DIR
        text = ",".join(map(str, raw)) if isinstance(raw, (list, tuple)) else str(raw)
        return [x.strip() for x in text.split(",") if x.strip()]
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


def field_overrides(values: dict, defaults: dict, method: Optional[str] = None) -> list:
    """``key=value`` for each form field whose value differs from the composed default (fields that do not
    apply to ``method`` are left out: hidden, they keep what the method gives)."""
    out = []
    for field in FIELDS:
        if field.key not in values or (method and not applies(field, method)):
            continue
        value = coerce(field, values[field.key])
        if field.kind == "choice" and field.optional and value == "":
            value = None
        default = defaults.get(field.key)
        try:  # the defaults are as the boxes show them: read back like the box's value
            default = coerce(field, default)
        except ConfigError:
            pass
        if field.kind == "choice" and field.optional and default == "":
            default = None
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


def source_groups(groups: dict, values: dict, composed_defaults: dict) -> dict:
    """The group choices once a typed model path or data folder is taken into account: a model path on a
    group that builds a random-init model (``name_or_path`` null) picks ``model=hf`` (any HF folder or hub
    id, as ``launcher train model=hf model.name_or_path=...``); a data folder other than the group's picks
    ``data=custom`` (your own data, neutral settings)."""
    groups = dict(groups)
    path = (values.get("model.name_or_path") or "").strip() if isinstance(values.get("model.name_or_path"), str) else ""
    if path and path != (composed_defaults.get("model.name_or_path") or "") and not composed_defaults.get(
            "model.name_or_path"):
        groups["model"] = "hf"
    folder = values.get("data.dataset_dir")
    if isinstance(folder, str) and folder.strip() and folder.strip() != composed_defaults.get("data.dataset_dir"):
        groups["data"] = "custom"
    return groups


def model_short_name(path: str) -> str:
    """A run-dir-safe short name of a model path or hub id (its last part): ``model.name``."""
    import re

    last = path.rstrip("/").rsplit("/", 1)[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-").lower() or "model"


def form_overrides(groups: dict, values: dict, free_text: str, composed_defaults: dict,
                   defaults_for=None) -> list:
    """The whole form as one override list: groups, changed fields, then the free box (which wins).
    ``defaults_for(groups)``: the composed field defaults of other groups (when a typed model path or data
    folder switches the model or data group)."""
    chosen = source_groups(groups, values, composed_defaults)
    extra = []
    if chosen != groups and defaults_for is not None:
        composed_defaults = defaults_for(chosen)
    if chosen.get("model") == "hf" and groups.get("model") != "hf":
        extra.append(f"model.name={hydra_value(model_short_name(values['model.name_or_path']))}")
    return (group_overrides(chosen) + extra + field_overrides(values, composed_defaults, chosen.get("method"))
            + split_overrides(free_text))


def train_command(overrides: Sequence[str], name: Optional[str] = None, sweep: bool = False) -> str:
    """The CLI command that does what the form does, quoted for a POSIX shell (for copying, not running)."""
    words = ["launcher", "train"] + (["-m"] if sweep else []) + list(overrides)
    if name:
        words += ["--name", name]
    from launcher.shell import shell_command

    return shell_command(words)


def local_models(root, hub_cache=None) -> list:
    """Models a path field offers: earlier runs' full models and exports under the output root (folders with
    a config.json; LoRA adapters are not a base), then the hub ids the Hugging Face cache holds."""
    import os
    from pathlib import Path

    root = Path(root)
    found = [p.parent for p in root.glob("*/*/*/model/config.json")] + [p.parent for p in root.glob("*/*/*/export/config.json")]
    out = [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]
    cache = Path(hub_cache or os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    if cache.is_dir():
        out += sorted(p.name[len("models--"):].replace("--", "/") for p in cache.glob("models--*"))
    return out


def data_folders() -> list:
    """Data folders a folder field offers: the project's ``data``, the folders conf/data's groups name, and
    ``../shared``'s LLaMA-Factory demo data when the checkout sits beside one."""
    from launcher.paths import REPO_ROOT
    from launcher.ui.roots import conf_dataset_dirs

    shared = REPO_ROOT.parent / "shared" / "datasets" / "llamafactory-demo"
    folders = ["data"] + [str(d) for d in conf_dataset_dirs() if d.is_dir() and d != REPO_ROOT / "data"]
    if (shared / "dataset_info.json").is_file():
        folders.append(str(shared))
    return list(dict.fromkeys(folders))


def parse_override(text: str) -> tuple:
    """(key, value) of a ``key=value`` override as Hydra reads it; (None, None) for anything else (``+key``,
    ``~key``, a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(text)
    except Exception:  # noqa: BLE001 - not one the form can show: it stays in the free box
        return None, None
    if parsed.type.name != "CHANGE" or parsed.is_sweep_override() or parsed.package:
        return None, None
    return parsed.key_or_group, parsed.value()


def form_from_overrides(overrides: Sequence[str], defaults_for, ignore_keys: Sequence[str] = ()) -> tuple:
    """What the form shows for saved overrides: (groups, {field key: box value}, free overrides). Group choices
    and the form's fields are taken out; ``defaults_for(groups)`` fills the other fields as a group pick does;
    what the form has no box for stays, in order, for the free box. ``model.name`` is dropped where the model
    path gives it (the form adds it back); ``ignore_keys`` (the UI's forced output root) are dropped."""
    groups = default_groups()
    picked, rest = {}, []
    for text in overrides:
        key, value = parse_override(text)
        if key in GROUPS and isinstance(value, str):
            groups[key] = value
        elif key is not None and any(f.key == key for f in FIELDS):
            picked[key] = value
        elif key not in ignore_keys or key is None:
            rest.append((key, text))
    values = dict(defaults_for(groups))
    for f in FIELDS:
        if f.key in picked:
            values[f.key] = shown_value(f, picked[f.key])
    path = values.get("model.name_or_path") or ""
    free = [text for key, text in rest
            if not (key == "model.name" and groups.get("model") == "hf" and path
                    and parse_override(text)[1] == model_short_name(path))]
    return groups, values, free


def join_overrides(overrides: Sequence[str]) -> str:
    """Overrides as the free box holds them (one per line, quoted where the box's split needs it)."""
    return "\n".join(shlex.quote(o) for o in overrides)
