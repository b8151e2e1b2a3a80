"""Pure rendering: a Config and a run dir in, sbatch parameters, script text and torchrun argv out.

Nothing here reads the environment, the clock or the cluster, so the same inputs always give the same
text: ``render_sbatch`` is checked against golden files and against the script submitit really submits.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional, Union

from launcher.config.compose import default_run_name
from launcher.config.schema import Config, recipe_module
from launcher.errors import ConfigError
from launcher.paths import LOG_DIR
from launcher.shell import placeholder, shell_word, unplaceholder  # noqa: F401  (the one quoting rule)
from launcher.secret_env import is_secret_name, secret_assignments, secret_values



SUBMITIT_DIR = "slurm"
"""Run dir subfolder for submitit's files: the pickled node launcher, per-node stdout/stderr (%j_%t_log.*)."""

# sbatch options that the launcher sets from typed keys; setting them again in sbatch_extra would make
# the script disagree with the launch pattern (e.g. 8 tasks per node each running torchrun).
RESERVED_SBATCH_OPTIONS = {
    "nodes": "cluster.nodes",
    "ntasks_per_node": "cluster.nodes (one task per node, always)",
    "ntasks": "cluster.nodes (one task per node, always)",
    "gpus_per_node": "cluster.gpus_per_node",
    "gres": "cluster.gpus_per_node",
    "cpus_per_task": "cluster.cpus_per_task",
    "mem": "cluster.mem_gb",
    "partition": "cluster.partition",
    "account": "cluster.account",
    "qos": "cluster.qos",
    "time": "cluster.time_min",
    "constraint": "cluster.constraint",
    "exclusive": "cluster.exclusive",
    "signal": "cluster.signal_delay_s",
    "output": "(the run dir decides where logs go)",
    "error": "(the run dir decides where logs go)",
    "job_name": "run.name",
    "comment": "(the launcher stores the run dir there)",
    "chdir": "(the job runs in the run's code snapshot, RUN_DIR/code)",
}

PORT_BASE = 20000
PORT_SPAN = 10000


PORT_CANDIDATES = 32
"""How many ports the head node tries, from the job's own one upwards, before it gives up."""


def _job_number(job_id: Union[int, str]) -> int:
    text = str(job_id)
    array_job, _, task = text.partition("_")
    if not array_job.isdigit() or (task and not task.isdigit()):
        raise ValueError(f"port_for_job: expected a SLURM job id (123 or, for an array task, 123_4), got {job_id!r}")
    # An array task "A_T": the tasks of one array get consecutive ports, like consecutive jobs.
    return int(array_job) + (int(task) if task else 0)


def port_candidates(job_id: Union[int, str], count: int = PORT_CANDIDATES) -> list:
    """Rendezvous ports to try, in order: the job's own one, then the next ones (wrapping inside the range).

    The first is ``20000 + job % 10000`` from the whole job id (array task id added): jobs queued near each
    other in time get different ports, and only jobs 10000 ids apart share one; the head node then takes
    the first candidate that is free on it (``launcher.slurm.node.pick_free_port``). The range
    [20000, 30000) stays below Linux's ephemeral ports (32768+), so an outgoing connection cannot hold it.
    """
    first = _job_number(job_id) % PORT_SPAN
    return [PORT_BASE + (first + i) % PORT_SPAN for i in range(count)]


def port_for_job(job_id: Union[int, str]) -> int:
    """The job's own rendezvous port: the first of ``port_candidates`` (when it is free on the head node)."""
    return port_candidates(job_id, 1)[0]


def check_container(cfg: Config) -> None:
    """One way into a container at a time, and only on SLURM (the keys would be ignored elsewhere)."""
    c = cfg.cluster
    if c.container_image and c.container_prefix:
        raise ConfigError("cluster.container_image and cluster.container_prefix: set one (pyxis's --container-image,"
                          " or a prefix such as `apptainer exec --nv image.sif`), not both")
    if c.container_mounts and not c.container_image:
        raise ConfigError("cluster.container_mounts: only with cluster.container_image (pyxis); with"
                          " cluster.container_prefix put the binds in the prefix (apptainer exec -B SRC:DST ...)")
    if (c.container_image or c.container_prefix) and c.kind != "slurm":
        key = "container_image" if c.container_image else "container_prefix"
        raise ConfigError(f"cluster.{key}: containers are for cluster.kind=slurm; a local run uses this host's"
                          " Python (run the launcher inside the container instead)")


def container_srun_args(cfg: Config, run_dir: Union[str, Path], code_dir: Union[str, Path]) -> list:
    """pyxis options for the srun that starts each node's task: the image, the mounts (the run dir always,
    at its own path: the task reads its config and the code snapshot there), the snapshot as cwd."""
    c = cfg.cluster
    if not c.container_image:
        return []
    mounts = [str(m) for m in c.container_mounts] + [f"{run_dir}:{run_dir}"]
    return [f"--container-image={c.container_image}", f"--container-mounts={','.join(mounts)}",
            f"--container-workdir={code_dir}"]


def task_python(cfg: Config, python: str) -> str:
    """The Python that runs a node's task and its torchrun: the container's when the job runs in one."""
    c = cfg.cluster
    return c.container_python if (c.container_image or c.container_prefix) else python


def _normalize_option(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def check_sbatch_extra(cfg: Config) -> None:
    for key in cfg.cluster.sbatch_extra:
        norm = _normalize_option(str(key))
        if norm in RESERVED_SBATCH_OPTIONS:
            raise ConfigError(
                f"cluster.sbatch_extra.{key}: set by the launcher; use {RESERVED_SBATCH_OPTIONS[norm]} instead"
            )


def check_no_secrets(cfg: Config, environ: Optional[dict] = None) -> None:
    """Refuse configs that would write a secret into the script, the config or the logs: a secret-looking
    name in cluster.env (``launcher.secret_env``: *_KEY, *_TOKEN, *SECRET*, *PASSWORD*), one given a value
    in a setup line or an sbatch option, or the value of a secret of ``environ`` anywhere there."""
    c = cfg.cluster
    for key in c.env:
        if is_secret_name(key):
            raise ConfigError(
                f"cluster.env.{key}: looks like a secret, and secrets are never written to the run dir; remove it"
                f" and export {key} in the shell that runs the launcher (sbatch passes that environment to the"
                " job, a local run's ranks inherit it)"
            )
    written = {f"cluster.env.{k}": v for k, v in c.env.items()}
    written.update({f"cluster.setup[{i}]": line for i, line in enumerate(c.setup)})
    written.update({f"cluster.sbatch_extra.{k}": v for k, v in c.sbatch_extra.items()})
    secrets = secret_values(environ or {})
    for key, text in written.items():
        named = secret_assignments(text) if not key.startswith("cluster.env.") else []
        if named:
            raise ConfigError(f"{key}: sets {named[0]}, which looks like a secret; secrets are never written to the"
                              f" run dir: export {named[0]} in the shell that runs the launcher instead")
        for secret, name in secrets.items():
            if secret in str(text):
                raise ConfigError(f"{key}: holds the value of {name}; secrets are never written to the run dir,"
                                  " pass them only through the environment")


def setup_lines(cfg: Config, repo_root: Union[str, Path]) -> list:
    """Shell lines run once per job before srun: user setup, the code on PYTHONPATH (``repo_root``: the
    run's code snapshot, RUN_DIR/code), non-secret env vars."""
    lines = [str(line) for line in cfg.cluster.setup]
    # Unpickling the node launcher on the nodes needs the same code that submitted it: the run's snapshot.
    lines.append(f"export PYTHONPATH={shell_word(str(repo_root))}${{PYTHONPATH:+:$PYTHONPATH}}")
    for key in sorted(cfg.cluster.env):
        if not str(key).isidentifier():
            raise ConfigError(f"cluster.env.{key}: not a valid environment variable name")
        lines.append(f"export {key}={shell_word(str(cfg.cluster.env[key]))}")
    for key, value in nccl_env(cfg).items():
        lines.append(f"export {key}={shell_word(value)}")
    return lines


def nccl_env(cfg: Config) -> dict:
    """NCCL's network choice from the cluster profile's keys (cluster.env wins where it sets the same name)."""
    c = cfg.cluster
    out = {}
    for key, value in (("NCCL_SOCKET_IFNAME", c.nccl_socket_ifname), ("NCCL_IB_HCA", c.nccl_ib_hca)):
        if value is not None and key not in c.env:
            out[key] = str(value)
    return out


def _mem_string(mem_gb: float) -> str:
    # Same conversion as submitit's, so that the rendered and the submitted script agree.
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def sbatch_parameters(cfg: Config, run_dir: Union[str, Path], repo_root: Union[str, Path]) -> dict:
    """Parameters for submitit's SlurmExecutor (sbatch option names, underscores for dashes). ``repo_root``:
    the code the job runs, the run's snapshot (RUN_DIR/code): its cwd and first on its PYTHONPATH."""
    c = cfg.cluster
    check_sbatch_extra(cfg)
    check_container(cfg)
    params: dict = {
        "job_name": default_run_name(cfg),
        # The run dir in the comment lets `launcher status JOB_ID` find the run (scontrol / sacct Comment).
        "comment": f"launcher:{run_dir}",
        "nodes": c.nodes,
        "ntasks_per_node": 1,
        "time": c.time_min,
        "signal_delay_s": c.signal_delay_s,
        "setup": setup_lines(cfg, repo_root),
    }
    if c.cpus_per_task is not None:
        params["cpus_per_task"] = c.cpus_per_task
    if c.gpus_per_node:
        params["gpus_per_node"] = c.gpus_per_node
    if c.mem_gb is not None:
        params["mem"] = _mem_string(c.mem_gb)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(c, key):
            params[key] = getattr(c, key)
    if c.exclusive:
        params["exclusive"] = True
    # Requeue readiness: SLURM may requeue the job on preemption or node failure; USR2 (submitit's signal,
    # not USR1 which NCCL claims) arrives signal_delay_s before the time limit.
    # The job's cwd is the code snapshot: `python -m submitit.core._submit` puts the cwd first on sys.path, so
    # a job started in the checkout would unpickle the node launcher from whatever the checkout holds by then.
    additional = {"requeue": True, "chdir": str(repo_root)}
    additional.update({_normalize_option(str(k)): v for k, v in c.sbatch_extra.items()})
    params["additional_parameters"] = additional
    if c.container_image:
        params["srun_args"] = container_srun_args(cfg, run_dir, repo_root)
    return params


def submitit_command(python: str, run_dir: Union[str, Path]) -> str:
    """The command submitit runs in each task (it unpickles and calls the node launcher); ``python`` is a
    shell word already (``shell_word``), as submitit takes it."""
    folder = Path(run_dir) / SUBMITIT_DIR
    return " ".join([python, "-u -m submitit.core._submit", shell_word(str(folder))])


def submitit_python(cfg: Config) -> Optional[str]:
    """The ``python`` to give submitit's executor: the container's (quoted: submitit writes it into the script
    as it is), or None for submitit's own quoted sys.executable."""
    return shell_word(cfg.cluster.container_python) if cfg.cluster.container_image else None


def render_sbatch(cfg: Config, run_dir: Union[str, Path], python: str, repo_root: Union[str, Path]) -> str:
    """The sbatch script, byte for byte what ``submit_run`` hands to sbatch for the same inputs."""
    # submitit's own renderer (a pure function) is used so that the text cannot drift from what it submits.
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(run_dir) / SUBMITIT_DIR
    return _make_sbatch_string(
        command=submitit_command(submitit_python(cfg) or python, run_dir),
        folder=folder, **sbatch_parameters(cfg, run_dir, repo_root)
    )


AGENT_SIGNALS_FLAG = "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT"
"""torchrun >= torch 2.9; the node process drops it for an older torch (``launcher.slurm.node``)."""


def render_torchrun_command(
    cfg: Config,
    run_dir: Union[str, Path],
    head_addr: str,
    port: Union[int, str],
    job_id: Union[int, str],
    node_rank: Union[int, str],
    python: str = "python",
    worker_module: Optional[str] = None,
) -> list:
    """argv of the one torchrun a node runs: nproc_per_node ranks, c10d rendezvous on the head node.

    Every rank runs ``python -m <the method's recipe module> --run-dir RUN_DIR`` (it reads RUN_DIR/config.yaml);
    ``worker_module`` replaces the recipe (tests run small payloads this way). ``cluster.container_prefix``
    goes first (``apptainer exec --nv image.sif python -m torch.distributed.run ...``)."""
    c = cfg.cluster
    check_container(cfg)
    run_dir = str(run_dir)
    prefix = shlex.split(c.container_prefix) if c.container_prefix else []
    argv = [
        *prefix, task_python(cfg, python), "-m", "torch.distributed.run",
        f"--nnodes={c.nodes}",
        f"--nproc-per-node={c.nproc_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={head_addr}:{port}",
        f"--rdzv-id={job_id}",
        f"--max-restarts={c.max_restarts}",
        f"--log-dir={run_dir}/{LOG_DIR}/node{node_rank}",
        # Every rank's output goes to its own file and, prefixed with the rank, to the node's log.
        "--tee=3",
        # Not SIGTERM: the agent would answer it by killing its workers 30 s later, mid-step. SLURM's TERM
        # (preemption, requeue, time limit) reaches the ranks, which checkpoint and exit at a step boundary
        # (launcher/training/preemption.py); SIGKILL after the cluster's grace time still ends everything.
        AGENT_SIGNALS_FLAG,
    ]
    if str(node_rank).isdigit():
        # The head node hosts the rendezvous store; the others are clients. Saying so avoids guessing
        # from hostnames, which fails when several nodes share one host name or address.
        argv.append(f"--rdzv-conf=is_host={1 if int(node_rank) == 0 else 0}")
    argv += ["-m", worker_module or recipe_module(cfg), "--run-dir", run_dir]
    return argv


def format_command(argv: list) -> str:
    """argv -> one shell command, one option per line (for plans, logs and golden files); a container prefix
    and the Python stay on the first line with torchrun's module. Every token goes through ``shell_word``:
    bash (or ``shlex.split``, after joining the continued lines) gives ``argv`` back, placeholders as $NAME."""
    parts: list = []
    first_option = argv.index("torch.distributed.run") + 1 if "torch.distributed.run" in argv else 2
    for i, token in enumerate(argv):
        quoted = shell_word(token)
        if token.startswith("-") and i >= first_option:
            parts.append(" \\\n  " + quoted)
        else:
            parts.append((" " if parts else "") + quoted)
    return "".join(parts)
