"""Submit a run (or a sweep's job array) to SLURM through submitit, and render the plan for --dry-run.
Returns as soon as queued; a job sbatch does not take raises SubmitError with sbatch's one-line reason.

The run dir is expected to hold config.yaml (and code_version.txt) already; ``submit_run`` adds the exact
submitted script (``submitted.sbatch``) and ``slurm_job.json`` (job id, when, where the logs go).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional, Union

from launcher.config.schema import Config
from launcher.errors import LauncherError, SubmitError
from launcher.launch.rundir import CONFIG_FILE, snapshot_code, write_code_version, write_run_config
from launcher.paths import CODE_SNAPSHOT_DIR, LOG_DIR, REPO_ROOT, SUBMITTED_SCRIPT
from launcher.slurm.data_job import DataBuildJob, after_data_job, data_job_parameters, uses_data_job
from launcher.slurm.jobs import JOB_FILE
from launcher.slurm.node import NodeLauncher
from launcher.slurm.render import (
    SUBMITIT_DIR,
    check_no_secrets,
    format_command,
    placeholder,
    render_sbatch,
    render_torchrun_command,
    sbatch_parameters,
    shell_word,
    submitit_python,
)


def render_plan(cfg: Config, run_dir: Union[str, Path], python: Optional[str] = None) -> str:
    """The sbatch script and the per-node torchrun command, as text; touches nothing, submits nothing."""
    python = python or shell_word(sys.executable)
    check_no_secrets(cfg, dict(os.environ))
    code_dir = Path(run_dir) / CODE_SNAPSHOT_DIR
    script = render_sbatch(cfg, run_dir, python=python, repo_root=code_dir)
    torchrun = render_torchrun_command(
        cfg, run_dir, head_addr=placeholder("HEAD_ADDR"), port=placeholder("PORT"),
        job_id=placeholder("SLURM_JOB_ID"), node_rank=placeholder("SLURM_NODEID"), python=python,
    )
    c = cfg.cluster
    data_lines = []
    if uses_data_job(cfg):
        from submitit.slurm.slurm import _make_sbatch_string

        from launcher.slurm.render import submitit_command

        train_params = sbatch_parameters(cfg, run_dir, code_dir)
        data_script = _make_sbatch_string(command=submitit_command(submitit_python(cfg) or python, run_dir),
                                          folder=Path(run_dir) / SUBMITIT_DIR, **data_job_parameters(train_params))
        script = _make_sbatch_string(command=submitit_command(submitit_python(cfg) or python, run_dir),
                                     folder=Path(run_dir) / SUBMITIT_DIR,
                                     **after_data_job(train_params, "DATA_JOB_ID"))
        data_lines = [
            "# data job (cluster.preprocess=job): tokenizes into the cache on CPU (launcher data build on"
            " RUN_DIR/config.yaml); submitted first",
            data_script.rstrip("\n"),
            "",
        ]
    return "\n".join([
        *data_lines,
        f"# sbatch script ({c.nodes} node(s) x 1 task; saved as {Path(run_dir) / SUBMITTED_SCRIPT} on submit)"
        + ("; starts after the data job completed (--dependency=afterok)" if data_lines else ""),
        script.rstrip("\n"),
        "",
        f"# per-node command (each of the {c.nodes} task(s) runs one torchrun with {c.nproc_per_node} rank(s)):",
        "#   HEAD_ADDR = NodeAddr of the first host of SLURM_JOB_NODELIST (scontrol show hostnames / show node)",
        "#   PORT      = 20000 + SLURM_JOB_ID % 10000, or the next port free on the head node (bind test there;"
        " node 0 publishes it in RUN_DIR/logs for the others)",
        "#   is_host=1 on node 0 (it hosts the c10d rendezvous), 0 elsewhere",
        *container_lines(cfg),
        f"#   run from the code snapshot taken at submit: cd {shell_word(code_dir)}; PYTHONPATH={shell_word(code_dir)}",
        format_command(torchrun),
        "",
    ])


def container_lines(cfg: Config) -> list:
    c = cfg.cluster
    if c.container_image:
        return [f"#   in the container {c.container_image} (pyxis: srun --container-image, see the srun line above),"
                f" Python {c.container_python}"]
    if c.container_prefix:
        return [f"#   in a container: `{c.container_prefix}` runs torchrun with the image's {c.container_python}"]
    return []


def sbatch_reason(exc: BaseException) -> str:
    """sbatch's own one-line reason from submitit's error (which carries sbatch's whole stderr): its last
    ``sbatch: error:`` line, the one that says why the job was not taken."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sbatch: error:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"sbatch failed ({type(exc).__name__})"


def make_executor(cfg: Config, run_dir: Path):
    import submitit

    if shutil.which("sbatch") is None:
        raise LauncherError("cluster=slurm: sbatch is not on PATH; run on a SLURM login node (or start the test"
                            " cluster with slurm/start-cluster.sh and export SLURM_CONF)")
    # In a pyxis container the task runs the image's Python, as render_sbatch shows.
    executor = submitit.SlurmExecutor(folder=run_dir / SUBMITIT_DIR, max_num_timeout=cfg.cluster.max_requeues,
                                      python=submitit_python(cfg))
    executor.update_parameters(**sbatch_parameters(cfg, run_dir, run_dir / CODE_SNAPSHOT_DIR))
    return executor


def submit_run(cfg: Config, run_dir: Union[str, Path], worker_module: Optional[str] = None, quiet: bool = False) -> dict:
    """Queue the run; print job id, run dir and how to follow it; return without waiting for the job.

    Returns {"job_id", "run_dir", "script", "logs", "job"} (``job`` is the submitit Job).
    """
    run_dir = Path(run_dir).resolve()
    check_no_secrets(cfg, dict(os.environ))
    if not (run_dir / CONFIG_FILE).exists():
        write_run_config(run_dir, cfg)
    if not (run_dir / "code_version.txt").exists():
        write_code_version(run_dir, REPO_ROOT)
    # Unpickling the node launcher and every rank import from this copy, not from the live checkout.
    snapshot_code(run_dir)
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    executor = make_executor(cfg, run_dir)
    data_job_id = None
    try:
        if uses_data_job(cfg):
            # The data job first; the training job waits for it in the queue (cluster.preprocess=job).
            data_executor = make_executor(cfg, run_dir)
            data_executor.update_parameters(**data_job_parameters(executor.parameters))
            data_job_id = str(data_executor.submit(DataBuildJob(run_dir=str(run_dir))).job_id)
            executor.update_parameters(**after_data_job(executor.parameters, data_job_id))
        job = executor.submit(NodeLauncher(run_dir=str(run_dir), worker_module=worker_module))
    except (FailedJobError, FailedSubmissionError, OSError) as exc:  # sbatch said no, or could not be run
        raise SubmitError(sbatch_reason(exc)) from None
    script = run_dir / SUBMITTED_SCRIPT
    # submitit leaves the submitted file as <job>_submission.sh in its folder; keep a plain copy too.
    shutil.copyfile(job.paths.submission_file, script)
    record = {
        "job_id": str(job.job_id),
        "run_dir": str(run_dir),
        "submitted_at": _dt.datetime.now().isoformat(timespec="seconds"),
        "nodes": cfg.cluster.nodes,
        "nproc_per_node": cfg.cluster.nproc_per_node,
        "script": str(script),
        "node_logs": str(run_dir / SUBMITIT_DIR),
        "rank_logs": str(run_dir / LOG_DIR),
    }
    if data_job_id is not None:
        record["data_job_id"] = data_job_id
    (run_dir / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if not quiet:
        if data_job_id is not None:
            print(f"Submitted SLURM data job {data_job_id} (tokenizes on CPU; the training job starts after it)")
        print(f"Submitted SLURM job {job.job_id}: {cfg.cluster.nodes} node(s) x {cfg.cluster.nproc_per_node} process(es)")
        print(f"  run dir: {run_dir}")
        print(f"  follow:  launcher logs --follow {run_dir}")
        print(f"  status:  launcher status {job.job_id}    cancel: launcher cancel {job.job_id}")
    return {**record, "script": str(script), "logs": str(run_dir / SUBMITIT_DIR), "job": job}


# ------------------------------------------------------------------------------------------ job arrays

SWEEP_COMMENT_PREFIX = "launcher-sweep:"
"""Comment of an array job: the sweep dir (not ``launcher:``, which names one run dir)."""


def submit_array(cfgs: list, run_dirs: list, sweep_dir: Union[str, Path], job_name: Optional[str] = None,
                 worker_module: Optional[str] = None) -> dict:
    """Queue ONE SLURM job array: task i runs the run in ``run_dirs[i]``; returns without waiting.

    Every config must ask for the same resources (one sbatch script serves all tasks; the caller groups
    points by shape); the first one's cluster section is used. At most ``cluster.array_parallelism`` tasks
    run at once (``--array=0-N%cap``). submitit's files (pickles, per-task node logs ``<A>_<a>_<node>_log.*``)
    go to SWEEP_DIR/slurm; each run dir gets ``slurm_job.json`` (job id ``<A>_<a>``) and links to its own
    node logs, so ``launcher status|logs RUN_DIR`` work for a point.

    Returns {"array_job_id", "task_job_ids", "script", "jobs"}.
    """
    import submitit

    from launcher.config.compose import default_run_name

    if not cfgs or len(cfgs) != len(run_dirs):
        raise ValueError("submit_array: one config per run dir, at least one")
    sweep_dir = Path(sweep_dir).resolve()
    run_dirs = [Path(d).resolve() for d in run_dirs]
    cfg = cfgs[0]
    c = cfg.cluster
    for other in cfgs:
        check_no_secrets(other, dict(os.environ))
    if shutil.which("sbatch") is None:
        raise LauncherError("cluster=slurm: sbatch is not on PATH; run on a SLURM login node (or start the test"
                            " cluster with slurm/start-cluster.sh and export SLURM_CONF)")
    for other, run_dir in zip(cfgs, run_dirs):
        if not (run_dir / CONFIG_FILE).exists():
            write_run_config(run_dir, other)
    folder = sweep_dir / SUBMITIT_DIR
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=c.max_requeues, python=submitit_python(cfg))
    # One snapshot for the whole array (every task runs the same code), in the sweep dir.
    params = sbatch_parameters(cfg, sweep_dir, snapshot_code(sweep_dir))
    params["job_name"] = job_name or default_run_name(cfg)
    params["comment"] = f"{SWEEP_COMMENT_PREFIX}{sweep_dir}"
    params["array_parallelism"] = c.array_parallelism
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(NodeLauncher(run_dir=str(d), worker_module=worker_module)) for d in run_dirs]
    # submitit submits a batch of one as a plain job (id "123", not "123_0"); its files are named to match.
    task_ids = [str(job.job_id) for job in jobs]
    array_job_id = task_ids[0].split("_")[0]
    script = sweep_dir / f"array_{array_job_id}.sbatch"
    shutil.copyfile(jobs[0].paths.submission_file, script)
    submitted_at = _dt.datetime.now().isoformat(timespec="seconds")
    for job, run_dir, task_id in zip(jobs, run_dirs, task_ids):
        own_logs = run_dir / SUBMITIT_DIR
        own_logs.mkdir(exist_ok=True)
        for node in range(c.nodes):
            for suffix in ("out", "err"):
                name = f"{task_id}_{node}_log.{suffix}"
                # Dangling until the task starts; relative, so the sweep dir can be moved as a whole.
                (own_logs / name).symlink_to(Path("..") / ".." / SUBMITIT_DIR / name)
        record = {
            "job_id": task_id,
            "array_job_id": array_job_id,
            "run_dir": str(run_dir),
            "sweep_dir": str(sweep_dir),
            "submitted_at": submitted_at,
            "nodes": c.nodes,
            "nproc_per_node": c.nproc_per_node,
            "script": str(script),
            "node_logs": str(folder),
            "rank_logs": str(run_dir / LOG_DIR),
        }
        (run_dir / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return {"array_job_id": array_job_id, "task_job_ids": task_ids, "script": str(script), "jobs": jobs}
