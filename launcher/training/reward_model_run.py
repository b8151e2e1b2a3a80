"""Which run dir ``method.ppo.reward_model`` names, and the dry run's line when it names none that PPO can use.
Kept apart from the PPO objective so that the dry run checks it without importing torch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.errors import ConfigError


def reward_model_run_dir(value: Optional[str]) -> Path:
    """The run dir ``method.ppo.reward_model`` names (the run dir, its model/, or an LLaMA-Factory output_dir
    linked to it), or ConfigError saying what is wrong: missing, not a run, not a method=rm run, unfinished."""
    from launcher.config.llamafactory_after import run_dir_of
    from launcher.config.schema import load_run_config

    key = "method.ppo.reward_model"
    if not value:
        raise ConfigError(f"{key}: required: the run dir of a finished method=rm run ({key}=RUN_DIR)")
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}: {path} does not exist; give the run dir of a finished method=rm run")
    run_dir = run_dir_of(path)
    if run_dir is None:
        raise ConfigError(f"{key}: {path} is not a run dir (no config.yaml); give the run dir of a finished"
                          " method=rm run")
    try:
        method = load_run_config(run_dir).method.name
    except Exception as exc:  # noqa: BLE001 - an unreadable config: say which file and why
        raise ConfigError(f"{key}: cannot read {run_dir}/config.yaml ({exc})") from None
    if method != "rm":
        raise ConfigError(f"{key}: {run_dir} is a method={method} run, not a reward model; train one with"
                          " method=rm (or rm_lora) and give its run dir")
    if not (run_dir / "model").is_dir():
        raise ConfigError(f"{key}: {run_dir} holds no model/ (the method=rm run has not finished); wait for it,"
                          " or give a finished run")
    return run_dir


def reward_model_problems(cfg) -> list[str]:
    """The dry run's line for method.ppo.reward_model, or none."""
    try:
        reward_model_run_dir(cfg.method.ppo.reward_model)
    except ConfigError as exc:
        return [str(exc)]
    return []
