"""What a run reports: metrics.jsonl, mirrored to W&B, TensorBoard and/or MLflow (rank 0 only), and the loss plot."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from launcher.config.schema import Config, config_to_dict, logger_backends
from launcher.disk_full import disk_full_guard
from launcher.paths import METRICS_FILE

log = logging.getLogger(__name__)



def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_mode(requested: str) -> tuple[str, Optional[str]]:
    """(mode, note): auto means online with credentials, offline (with a one-line note) without."""
    if requested != "auto":
        return requested, None
    if wandb_has_credentials():
        return "online", None
    return "offline", "W&B: no credentials found (WANDB_API_KEY or ~/.netrc); logging offline, sync later with `wandb sync`"


def numeric_fields(record: dict) -> dict:
    """The fields a tracker can plot: numbers (not bools), ``step`` aside."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_config(cfg: Config) -> dict:
    """``{"method.lr": 1e-4, ...}``: the resolved config as the flat key/value params trackers compare."""
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", config_to_dict(cfg))
    return flat


def run_label(cfg: Config, run_dir: Path) -> str:
    return cfg.run.name or (Path(run_dir).parent.parent.name + "/" + Path(run_dir).name)


class WandbBackend:
    """Weights & Biases; offline (wandb/offline-run-*) when no credentials are found. One W&B run per run dir."""

    def __init__(self, cfg: Config, run_dir: Path):
        mode, note = wandb_mode(cfg.logger.mode)
        if note:
            print(note, flush=True)
        import wandb

        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group,
            tags=list(cfg.logger.tags) or None,
            name=run_label(cfg, run_dir),
            dir=str(run_dir),
            mode=mode,
            config=config_to_dict(cfg),
            id=_stable_id(run_dir),
            resume="allow",
        )

    def log(self, step: Optional[int], values: dict) -> None:
        self.run.log(values, step=step)

    def finish(self) -> None:
        self.run.finish()


class TensorBoardBackend:
    """Event files (torch's SummaryWriter) under logger.tensorboard_dir, default RUN_DIR/tensorboard.

    The config goes in as a text summary (``config``, YAML) and as flat hparams; the sweep group and tags as
    text summaries, so a sweep's runs can be told apart in one ``tensorboard --logdir``.
    """

    def __init__(self, cfg: Config, run_dir: Path):
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(cfg.logger.tensorboard_dir or Path(run_dir) / "tensorboard")
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False) + "```")
        if cfg.logger.group:
            self.writer.add_text("group", cfg.logger.group)
        if cfg.logger.tags:
            self.writer.add_text("tags", ", ".join(map(str, cfg.logger.tags)))
        self.writer.flush()

    def log(self, step: Optional[int], values: dict) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class MlflowBackend:
    """MLflow through its client (no global active run): a local file store RUN_DIR/mlruns by default, or
    logger.tracking_uri (a server, sqlite:///...).

    Experiment = logger.project; run name as W&B's; params = the flat config; tags = logger.group (``group``)
    and logger.tags. A resumed job continues the same MLflow run (its id is kept in RUN_DIR/mlflow_run_id).
    """

    ID_FILE = "mlflow_run_id"

    def __init__(self, cfg: Config, run_dir: Path):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir)
        self.uri = cfg.logger.tracking_uri or (run_dir / "mlruns").resolve().as_uri()
        if not cfg.logger.tracking_uri:
            # MLflow 3 keeps its file store but asks for an opt-in; a SQLite store would cost ~3 s of schema
            # migrations at every run's start. Read it with MLFLOW_ALLOW_FILE_STORE=true mlflow ui ...
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(cfg.logger.project)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(cfg.logger.project))
        id_file = run_dir / self.ID_FILE
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"group": cfg.logger.group} if cfg.logger.group else {}
        tags.update({f"tag.{t}": "true" for t in cfg.logger.tags})
        run = self.client.create_run(experiment_id, run_name=run_label(cfg, run_dir), tags=tags)
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        # MLflow caps a param value at 6000 characters and a batch at 100 params.
        params = [Param(k, str(v)[:6000]) for k, v in flat_config(cfg).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        self.client.log_dict(self.run_id, config_to_dict(cfg), "config.yaml")

    def log(self, step: Optional[int], values: dict) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step or 0) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)


BACKENDS = {"wandb": WandbBackend, "tensorboard": TensorBoardBackend, "mlflow": MlflowBackend}


class MetricsLogger:
    """Appends one JSON object per event to metrics.jsonl (the source of truth), and mirrors its numbers to
    each backend of ``logger_backends(cfg.logger)``. Rank 0 only."""

    def __init__(self, cfg: Config, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.backends = []
        if enabled:
            self.backends = [BACKENDS[name](cfg, Path(run_dir)) for name in logger_backends(cfg.logger)]

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with disk_full_guard(self.path, "the metrics log"), open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        values = numeric_fields(record)
        if values:
            for backend in self.backends:
                backend.log(record.get("step"), values)

    def finish(self) -> None:
        for backend in self.backends:
            backend.finish()


def _stable_id(run_dir: Path) -> str:
    """One tracker run per run dir, so a resumed job continues the same W&B run."""
    import hashlib

    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def read_metrics(run_dir: Path, kind: Optional[str] = None) -> list[dict]:
    """The records of a run's metrics.jsonl, in the order written; with ``kind`` ("train", "eval", ...) those of
    that kind only, one per step (the last one written wins: a resumed run may repeat a step), in step order.

    A line cut short (a writer killed mid-line, or one being written right now) is skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if kind is None:
        return records
    by_step = {r["step"]: r for r in records if r.get("kind") == kind}
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(run_dir: Path, out: Optional[Path] = None) -> Optional[Path]:
    """train (and eval) loss against step, as a PNG next to metrics.jsonl."""
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per trained token)")
    ax.set_title(Path(run_dir).parent.parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    # Online RL (GRPO): the mean reward of each step's completions, and the held-out reward, on a second axis.
    rewards = [(r["step"], r["reward"]) for r in records if r.get("kind") == "train" and "reward" in r]
    held_out = [(r["step"], r["eval/reward"]) for r in records if "eval/reward" in r]
    if rewards or held_out:
        ax2 = ax.twinx()
        if rewards:
            ax2.plot(*zip(*rewards), color="tab:green", lw=1.2, alpha=0.4 if len(rewards) >= 20 else 1.0,
                     label="reward (training completions)")
            if len(rewards) >= 20:  # one step's reward is noisy (a few dozen 0/1 scores): its trend, smoothed
                window = len(rewards) // 10
                values = [v for _, v in rewards]
                smooth = [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
                          for i in range(len(values))]
                ax2.plot([s for s, _ in rewards], smooth, color="darkgreen", lw=2,
                         label=f"reward, mean of the last {window} steps")
        if held_out:
            ax2.plot(*zip(*held_out), "s--", color="tab:red", lw=1.2, label="held-out reward (greedy)")
        ax2.set_ylabel("reward")
        ax2.legend(loc="lower right")  # a rising reward leaves the lower right free
    fig.tight_layout()
    out = out or Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
