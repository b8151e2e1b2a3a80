"""Checks of the cluster settings and of what a run asks for against what there is: the cluster section is
coherent (launch pattern, signal vs time limit, secrets only in the environment, container), CPUs and GPUs
here, the SLURM partition's nodes, CPUs, memory and GPUs, the packages its engine (and optimizer) needs, the
CUDA GPU bitsandbytes' 8-bit optimizers need, the checkpoint it
resumes from, and a writable output root. Memory per GPU and per node: ``launcher.checks.memory``.

Each ``check_*`` takes (problems, cfg) and adds one line per problem, naming the key and what to do.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.checks.problems import Problems
from launcher.config.schema import Config
from launcher.engines.checkpoint_layout import COMPLETE, META_FILE, complete_checkpoints
from launcher.engines.reshard import kept_grad_accum, reshard_refusal, sequence_parallel_reshard_refusal
from launcher.errors import ConfigError
from launcher.models.quantize import qlora_problem
from launcher.packages import package_installed
from launcher.host import usable_cpus

# What each engine or option imports on the ranks: (package, pip name).
ENGINE_PACKAGES = {"deepspeed": ("deepspeed", "deepspeed (pip install -e '.[deepspeed]')")}
LOGGER_PACKAGES = {"wandb": ("wandb", "wandb")}
SINFO_FORMAT = "%R %D %c %m %G"
RESUME_WORDS = ("auto", "never")


# ------------------------------------------------------------------------------------- cluster settings


def check_cluster(problems: Problems, cfg: Config) -> None:
    c, p = cfg.cluster, cfg.parallelism
    from launcher.slurm.render import check_container, check_no_secrets, check_sbatch_extra

    check_no_secrets(cfg, dict(os.environ))
    check_container(cfg)
    if c.gpus_per_node > 0 and c.nproc_per_node != c.gpus_per_node:
        problems.errors.append(
            f"cluster.nproc_per_node: {c.nproc_per_node} processes on nodes with {c.gpus_per_node} GPUs; one torchrun"
            f" per node starts one rank per GPU: set cluster.nproc_per_node={c.gpus_per_node}"
        )
    if p.backend == "nccl" and c.gpus_per_node == 0:
        problems.errors.append(
            "parallelism.backend: nccl needs GPUs but cluster.gpus_per_node=0; use parallelism.backend=gloo (or auto)"
        )
    if c.gpus_per_node > 0 and c.gpu_memory_gb is None:
        problems.warnings.append("cluster.gpu_memory_gb is not set: the memory fit check is skipped")
    if c.kind != "slurm":
        return
    check_sbatch_extra(cfg)
    # (value ranges: launcher.config.ranges; the partition's limits: check_slurm_resources below)
    if c.time_min >= 1 and c.signal_delay_s >= c.time_min * 60:
        problems.errors.append(
            f"cluster.signal_delay_s: {c.signal_delay_s} s is not shorter than the time limit"
            f" (cluster.time_min={c.time_min} min); lower it or raise cluster.time_min"
        )


# ------------------------------------------------------------------------------------- this host


def local_gpu_count() -> int:
    """CUDA GPUs this host can use; torch is imported only where an NVIDIA driver is present."""
    if not (shutil.which("nvidia-smi") or Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_local_resources(problems, cfg: Config) -> None:
    c = cfg.cluster
    if c.kind != "local":
        return
    gpus = local_gpu_count()
    if gpus:
        if c.nproc_per_node > gpus:
            problems.errors.append(
                f"cluster.nproc_per_node: {c.nproc_per_node} processes but this machine has {gpus} GPU(s), one per"
                f" rank; set cluster.nproc_per_node={gpus} or less (or run on SLURM with cluster=...)"
            )
        return
    cpus = usable_cpus()
    if c.nproc_per_node > cpus:
        problems.errors.append(
            f"cluster.nproc_per_node: {c.nproc_per_node} CPU processes but this machine has {cpus} CPU core(s) to use;"
            f" set cluster.nproc_per_node={cpus} or less"
        )


# ------------------------------------------------------------------------------------- SLURM partition


@dataclass
class Partition:
    name: str
    nodes: int
    cpus_per_node: int
    mem_mb_per_node: int
    gpus_per_node: int
    max_nodes: Optional[int] = None
    """The partition's MaxNodes limit (None: unlimited)."""

    def figures(self) -> str:
        limit = f", at most {self.max_nodes} per job" if self.max_nodes is not None else ""
        return (f"partition '{self.name}' has {self.nodes} node(s){limit}, {self.cpus_per_node} CPUs and"
                f" {self.mem_mb_per_node / 1024:.1f} GB per node, {self.gpus_per_node} GPU(s) per node")


def gpus_in_gres(gres: str) -> int:
    """``gpu:8``, ``gpu:a100:4(S:0-1)``, ``gpu:4,shard:2`` -> GPUs per node; ``(null)`` -> 0."""
    total = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_sinfo(text: str) -> dict[str, Partition]:
    """``sinfo -h -o "%R %D %c %m %G"`` lines -> partitions. A partition with mixed node shapes has a line per
    shape: nodes add up, and the per-node figures are the largest (what the biggest node can hold)."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        name, nodes, cpus, mem, gres = fields[0], fields[1], fields[2], fields[3], " ".join(fields[4:])
        cpus = cpus.rstrip("+")
        mem = mem.rstrip("+")
        if not (nodes.isdigit() and cpus.isdigit() and mem.isdigit()):
            continue
        row = Partition(name, int(nodes), int(cpus), int(mem), gpus_in_gres(gres))
        if name in found:
            p = found[name]
            p.nodes += row.nodes
            p.cpus_per_node = max(p.cpus_per_node, row.cpus_per_node)
            p.mem_mb_per_node = max(p.mem_mb_per_node, row.mem_mb_per_node)
            p.gpus_per_node = max(p.gpus_per_node, row.gpus_per_node)
        else:
            found[name] = row
    return found


def max_nodes_of(partition: str) -> Optional[int]:
    """The partition's MaxNodes (scontrol), or None when unlimited or unknown."""
    if not shutil.which("scontrol"):
        return None
    out = subprocess.run(["scontrol", "show", "partition", partition, "-o"], capture_output=True, text=True,
                         timeout=30, check=False)
    match = re.search(r"\bMaxNodes=(\d+)", out.stdout)
    return int(match.group(1)) if out.returncode == 0 and match else None


def read_partitions() -> Optional[dict[str, Partition]]:
    """Every partition SLURM reports, or None when sinfo is not here or does not answer."""
    if not shutil.which("sinfo"):
        return None
    out = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=30,
                         check=False)
    if out.returncode != 0:
        return None
    return parse_sinfo(out.stdout)


def partition_problems(cfg: Config, partition: Partition) -> list[str]:
    """What the job asks per node and in nodes, against what the partition has."""
    c, problems = cfg.cluster, []
    where = f"({partition.figures()})"
    if c.nodes > partition.nodes:
        problems.append(f"cluster.nodes: {c.nodes} nodes asked {where}; lower cluster.nodes or pick another"
                        " cluster.partition")
    elif partition.max_nodes is not None and c.nodes > partition.max_nodes:
        problems.append(f"cluster.nodes: {c.nodes} nodes asked {where}; lower cluster.nodes")
    if c.cpus_per_task is not None and c.cpus_per_task > partition.cpus_per_node:
        problems.append(f"cluster.cpus_per_task: {c.cpus_per_task} CPUs per node asked {where};"
                        f" set cluster.cpus_per_task={partition.cpus_per_node} or less")
    if c.mem_gb is not None and c.mem_gb * 1024 > partition.mem_mb_per_node:
        problems.append(f"cluster.mem_gb: {c.mem_gb:g} GB per node asked {where};"
                        f" set cluster.mem_gb={int(partition.mem_mb_per_node // 1024)} or less (or null)")
    if c.gpus_per_node > partition.gpus_per_node:
        problems.append(f"cluster.gpus_per_node: {c.gpus_per_node} GPUs per node asked {where};"
                        " lower cluster.gpus_per_node (and cluster.nproc_per_node) or pick a GPU partition")
    return problems


def check_slurm_resources(problems, cfg: Config) -> None:
    c = cfg.cluster
    name = c.partition
    if c.kind != "slurm" or name is None:  # None: SLURM picks one (default, account's); its limits are unknown
        return
    partitions = read_partitions()
    if partitions is None:
        if shutil.which("sinfo"):
            problems.warnings.append("sinfo did not answer: the partition and its limits are not checked")
        return
    if not partitions:
        return
    if name not in partitions:
        problems.errors.append(
            f"cluster.partition: '{name}' does not exist on this cluster; partitions: {', '.join(sorted(partitions))}"
        )
        return
    partition = partitions[name]
    partition.max_nodes = max_nodes_of(name)
    problems.errors.extend(partition_problems(cfg, partition))


# ------------------------------------------------------------------------------------- packages


def check_packages(problems, cfg: Config) -> None:
    """An engine or logger whose package is missing: refused here instead of every rank dying on import."""
    needed = []
    if cfg.parallelism.strategy in ENGINE_PACKAGES:
        needed.append(("parallelism", f"parallelism={cfg.parallelism.name}", *ENGINE_PACKAGES[cfg.parallelism.strategy]))
    if cfg.logger.name in LOGGER_PACKAGES:
        needed.append(("logger", f"logger={cfg.logger.name}", *LOGGER_PACKAGES[cfg.logger.name]))
    if cfg.model.attn_implementation == "flash_attention_2":
        needed.append(("model.attn_implementation", "model.attn_implementation=flash_attention_2", "flash_attn",
                       "flash-attn (pip install -e '.[gpu]')"))
    from launcher.config.optimizers import PACKAGES as OPTIMIZER_PACKAGES

    if cfg.method.optimizer in OPTIMIZER_PACKAGES:
        package, pip_name = OPTIMIZER_PACKAGES[cfg.method.optimizer]
        needed.append(("method.optimizer", f"method.optimizer={cfg.method.optimizer}", package,
                       f"{pip_name} (pip install -e '.[optimizers]')"))
    for key, choice, package, pip_name in needed:
        if not package_installed(package):
            problems.errors.append(f"{key}: {choice} needs the {package} package, which is not installed in this"
                                   f" environment; install {pip_name}, or choose another")


def check_qlora(problems, cfg: Config) -> None:
    if not cfg.method.lora.quantize:
        return
    if cfg.cluster.kind == "local":
        gpus, where = local_gpu_count(), "this machine has no CUDA GPU"
    else:
        gpus, where = cfg.cluster.gpus_per_node, "cluster.gpus_per_node=0"
    problem = qlora_problem(cfg, gpus, where)
    if problem:
        problems.errors.append(problem)


def check_optimizer_device(problems, cfg: Config) -> None:
    """bitsandbytes' 8-bit and paged optimizers (method.optimizer) have CUDA kernels only."""
    from launcher.config.optimizers import needs_cuda

    opt = cfg.method.optimizer
    if not needs_cuda(opt):
        return
    if cfg.cluster.kind == "local":
        gpus, where = local_gpu_count(), "this machine has no CUDA GPU"
    else:
        gpus, where = cfg.cluster.gpus_per_node, "cluster.gpus_per_node=0"
    if gpus < 1:
        other = "galore_adamw" if opt.startswith("galore") else "adamw"
        problems.errors.append(f"method.optimizer={opt}: bitsandbytes keeps its 8-bit states with CUDA kernels only,"
                               f" and this run has no GPU ({where}); use method.optimizer={other}, or run on a GPU")


# ------------------------------------------------------------------------------------- resume


def check_resume(problems, cfg: Config) -> None:
    """run.resume is auto, never, or the path of a complete checkpoint (launcher.engines.checkpoint_layout)."""
    setting = cfg.run.resume
    if setting in RESUME_WORDS:
        return
    path = Path(os.path.expanduser(setting))
    looks_like_path = "/" in setting or setting.startswith((".", "~")) or path.exists()
    if not looks_like_path:
        raise ConfigError(f"run.resume: '{setting}' is not auto, never or a checkpoint path;"
                          " use run.resume=auto (this run dir's latest), never, or RUN_DIR/checkpoints/step-N")
    if not path.is_dir():
        raise ConfigError(f"run.resume: {path} does not exist; point it at a checkpoint dir (RUN_DIR/checkpoints/step-N)")
    complete, meta_file = path / COMPLETE, path / META_FILE
    if not complete.is_file():
        inside = complete_checkpoints(path)
        hint = f"; it looks like a run dir: use {inside[-1]}" if inside else \
            "; point it at RUN_DIR/checkpoints/step-N"
        raise ConfigError(f"run.resume: {path} is not a complete checkpoint (no {COMPLETE} marker){hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"run.resume: {meta_file} is unreadable ({exc}); the checkpoint is damaged,"
                          " pick an earlier one") from None
    world = cfg.cluster.nodes * cfg.cluster.nproc_per_node
    if isinstance(meta, dict) and "world_size" in meta:
        # Another world size or parallelism: resharded where it can be (launcher.engines.reshard), else refused
        # here with the reason and what to do; the global batch must divide at the new world.
        same = (meta["world_size"] == world and meta.get("parallelism", cfg.parallelism.name) == cfg.parallelism.name
                and meta.get("sequence_parallel", 1) == cfg.parallelism.sequence_parallel)
        problem = None if same else (sequence_parallel_reshard_refusal(path, meta, cfg)
                                     or reshard_refusal(path, meta, cfg.parallelism.name, world))
        if problem:
            raise ConfigError(problem)
        if meta["world_size"] != world or meta.get("parallelism", cfg.parallelism.name) != cfg.parallelism.name:
            kept_grad_accum(meta, cfg.train.micro_batch_size, world, path.name)


# ------------------------------------------------------------------------------------- output


def check_output_root(problems: Problems, cfg: Config) -> None:
    root = Path(cfg.run.output_root)
    root = root if root.is_absolute() else Path.cwd() / root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".preflight-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"run.output_root: {root} is not writable ({exc.strerror}); point run.output_root at a writable folder"
        ) from None
