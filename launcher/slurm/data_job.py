"""cluster.preprocess=job: tokenize in a CPU job of its own, before the training job (``--dependency=afterok``).

The data job runs ``build_store_for`` on the run's resolved config (RUN_DIR/config.yaml), so it fills the very
cache entry the training ranks then map (same key); it asks for one node and cluster.cpus_per_task, never GPUs.
The training job is submitted at once, held by SLURM until the data job completes; if the data job fails, SLURM
never starts it (``DependencyNeverSatisfied``) and no GPU hour is spent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from launcher.config.schema import Config, load_run_config

DATA_JOB_SUFFIX = "-data"


@dataclass
class DataBuildJob:
    """What submitit pickles for the data job and calls on its one node."""
    run_dir: str

    def __call__(self) -> str:
        from launcher.data.cli import build_store_for

        report = build_store_for(load_run_config(self.run_dir))
        print(f"[launcher] {report}", flush=True)
        return report


def data_job_parameters(train_params: dict) -> dict:
    """The data job's sbatch parameters from the training job's: one node, no GPUs, no requeue on a stop signal;
    the same partition, account, time limit, CPUs, memory and setup lines."""
    params = {k: v for k, v in train_params.items() if k != "gpus_per_node"}
    params["nodes"] = 1
    params["job_name"] = f"{train_params['job_name']}{DATA_JOB_SUFFIX}"
    params["additional_parameters"] = {k: v for k, v in train_params.get("additional_parameters", {}).items()
                                       if k not in ("gres", "gpus", "gpus_per_task")}
    return params


def after_data_job(train_params: dict, data_job_id: Union[str, int]) -> dict:
    """The training job's parameters, held until the data job completed successfully."""
    params = dict(train_params)
    params["additional_parameters"] = {**train_params.get("additional_parameters", {}),
                                       "dependency": f"afterok:{data_job_id}", "kill_on_invalid_dep": "yes"}
    return params


def uses_data_job(cfg: Config) -> bool:
    return cfg.cluster.kind == "slurm" and cfg.cluster.preprocess == "job"

