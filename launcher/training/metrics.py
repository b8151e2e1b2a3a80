"""What a run reports: metrics.jsonl, W&B (rank 0 only), and the loss plot at the end."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from launcher.config.schema import Config, config_to_dict
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


class MetricsLogger:
    """Appends one JSON object per event to metrics.jsonl; mirrors to W&B when configured. Rank 0 only."""

    def __init__(self, cfg: Config, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.wandb_run = None
        if not enabled or cfg.logger.name != "wandb":
            return
        mode, note = wandb_mode(cfg.logger.mode)
        if note:
            print(note, flush=True)
        import wandb

        self.wandb_run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group,
            tags=list(cfg.logger.tags) or None,
            name=cfg.run.name or (Path(run_dir).parent.parent.name + "/" + Path(run_dir).name),
            dir=str(run_dir),
            mode=mode,
            config=config_to_dict(cfg),
            id=_stable_wandb_id(run_dir),
            resume="allow",
        )

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            step = record.get("step")
            self.wandb_run.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))},
                               step=step)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _stable_wandb_id(run_dir: Path) -> str:
    """One W&B run per run dir, so a resumed job continues the same W&B run."""
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
    fig.tight_layout()
    out = out or Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
