"""Hydra at the edge: compose ``conf/train.yaml`` with the user's overrides, once, in the submitting process.

Everything below this module works on the typed ``Config``; nothing on a rank imports Hydra.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

from launcher.config.schema import Config, parse_config
from launcher.errors import ConfigError
from launcher.paths import REPO_ROOT



def conf_dir() -> Path:
    """The Hydra config tree: ``$LAUNCHER_CONF_DIR`` or the repo's ``conf/``."""
    return Path(os.environ.get("LAUNCHER_CONF_DIR", REPO_ROOT / "conf")).resolve()


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    # Hydra appends a hint about HYDRA_FULL_ERROR and the full key path; keep what names the problem.
    text = re.sub(r"\s*Set the environment variable HYDRA_FULL_ERROR=1.*$", "", text)
    text = re.sub(r"\s*full_key: .*$", "", text)
    text = re.sub(r"\s*Config search path:.*$", "", text)
    return text


def _as_value_override(override: str, groups: set) -> str:
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


def config_groups() -> set:
    return {p.name for p in conf_dir().iterdir() if p.is_dir()}


def compose_dict(overrides: Sequence[str] = (), config_name: str = "train") -> dict:
    """Compose the config tree with Hydra overrides into a plain, resolved dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            groups = config_groups()
            composed = compose(
                config_name=config_name, overrides=[_as_value_override(o, groups) for o in overrides]
            )
        data = OmegaConf.to_container(composed, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config: {_one_line(exc)}") from None
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(data, dict)
    return data


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> Config:
    """Compose and validate: the one place a Config is made from Hydra."""
    return parse_config(compose_dict(overrides, config_name))


def default_run_name(cfg: Config, explicit: Optional[str] = None) -> str:
    name = explicit or cfg.run.name or f"{cfg.model.name}-{cfg.method.name}-{cfg.data.name}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    if not safe:
        raise ConfigError(f"run.name: '{name}' has no usable characters; use letters, digits, '.', '_' or '-'")
    return safe
