"""Every run and sweep under the output root, as rows for the Runs tab: read from the run dirs, nothing kept.

A run dir is a folder with ``config.yaml`` at ``ROOT/<name>/<date>/<time>`` (``launcher train``) or
``ROOT/sweeps/<name>/<date>/<time>/<point>`` (a sweep's point). State:
- SLURM runs (``slurm_job.json``): squeue/sacct, asked once for all jobs (``launcher.sweep.report.slurm_states``);
- runs started by the UI here (``launcher.launch.detached``): the job process, then ``local_result.json``;
- other local runs (``launcher train cluster=local`` in a terminal): COMPLETED once ``summary.json`` exists.
Step and loss come from the tail of ``metrics.jsonl``; ETA from the steps done so far and the time they took.

Every path the page hands back is checked to lie under the root (``confine``): a page cannot read elsewhere.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from launcher.ui.i18n import Note

from launcher.errors import LauncherError
from launcher.paths import CONFIG_FILE, LOG_DIR, METRICS_FILE, MODEL_DIR, SUMMARY_FILE

SWEEPS = "sweeps"
LAUNCHER_LOG = "local_job.log"
"""The detached launcher's own output (``launcher.launch.detached``): where a run's log is, not its progress."""
RUNNING_STATES = {"RUNNING", "PENDING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}
TAIL_BYTES = 16384
CANCEL_REQUEST = "cancel_requested.json"
"""Written when the UI cancels a SLURM run: SLURM's accounting may forget a task cancelled while pending."""


def confine(root: Path, relative: str) -> Path:
    """ROOT/relative, refused when it resolves outside ROOT (``..``, absolute paths, symlinks out)."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise LauncherError(f"{relative}: not under the output root {root}")
    return path


def find_run_dirs(root: Path) -> list:
    """Run dirs under ROOT (plain runs and sweep points), newest first."""
    root = Path(root)
    plain = [p.parent for p in root.glob(f"*/*/*/{CONFIG_FILE}") if p.parts[-4] != SWEEPS]
    points = [p.parent for p in root.glob(f"{SWEEPS}/*/*/*/*/{CONFIG_FILE}")]
    return sorted(plain + points, key=lambda p: p.stat().st_mtime, reverse=True)


def find_sweep_dirs(root: Path) -> list:
    return sorted((p.parent for p in Path(root).glob(f"{SWEEPS}/*/*/*/sweep.json")),
                  key=lambda p: p.stat().st_mtime, reverse=True)


_cache: dict = {}
"""{(kind, path): (stat key, value)}: config.yaml never changes and a finished run's metrics neither, so a
refresh re-reads only what moved (a scan of 200 runs went from ~1.7 s to a few tens of ms when nothing did)."""


def _cached(kind: str, path: Path, read):
    try:
        st = path.stat()
    except OSError:
        return read(path)
    key = (st.st_mtime_ns, st.st_size)
    hit = _cache.get((kind, path))
    if hit is not None and hit[0] == key:
        return hit[1]
    value = read(path)
    _cache[(kind, path)] = (key, value)
    return value


def _read_config(path: Path) -> dict:
    """The few config keys the table needs."""
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except Exception:  # a config being written, or not ours: list the dir, state unknown
        return {}
    return {"cluster": {"kind": (data.get("cluster") or {}).get("kind", "?")}, "train": data.get("train") or {}}


def tail_records(path: Path, max_bytes: int = TAIL_BYTES) -> list:
    """The JSON lines in the last ``max_bytes`` of a file (a line being written is skipped)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first line was cut
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def last_metrics(path: Path) -> tuple:
    """(last train record, the train record before it, last eval record, last record of any kind) of a
    metrics.jsonl, reading only its end."""
    train = previous = evals = last = None
    for size in (4096, 65536, TAIL_BYTES * 64):
        train = previous = evals = last = None
        for record in reversed(tail_records(path, size)):
            last = last or record
            if record.get("kind") == "train" and record.get("loss") is not None:
                if train is None:
                    train = record
                elif previous is None:
                    previous = record
            elif evals is None and record.get("kind") == "eval" and record.get("eval_loss") is not None:
                evals = record
        if previous is not None and evals is not None:
            break
        try:
            if path.stat().st_size <= size:
                break
        except OSError:
            break
    return train, previous, evals, last


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RunInfo:
    path: Path
    rel: str
    name: str
    sweep: str
    kind: str
    job_id: str
    state: str = "UNKNOWN"
    step: Optional[int] = None
    total_steps: Optional[int] = None
    loss: Optional[float] = None
    eval_loss: Optional[float] = None
    eta_s: Optional[float] = None
    requeues: int = 0
    started: str = ""
    has_model: bool = False
    epoch: Optional[float] = None
    total_epochs: Optional[float] = None
    tokens_per_s: Optional[float] = None
    step_s: Optional[float] = None
    """Seconds per optimizer step, measured between the last two train records (the trainer's own timing)."""
    phase: str = ""
    """What the run is doing now (``PHASES``), from its state and what its run dir holds."""
    reason: str = ""
    """SLURM's reason for a pending job (Resources, Priority, BeginTime, ...)."""
    started_at: float = 0.0


def _total_steps(cfg: dict, summary: Optional[dict], last_train: Optional[dict]) -> Optional[int]:
    if summary and summary.get("total_steps"):
        return int(summary["total_steps"])
    train = cfg.get("train") or {}
    if (train.get("max_steps") or -1) > 0:
        return int(train["max_steps"])
    if last_train and last_train.get("epoch") and train.get("epochs"):
        return round(last_train["step"] * float(train["epochs"]) / float(last_train["epoch"]))
    return None


def local_state(run_dir: Path, summary: Optional[dict]) -> str:
    from launcher.sweep.plan import LOCAL_LOG, LOCAL_RESULT
    from launcher.launch.detached import CANCEL_FILE, job_alive

    result = read_json(run_dir / LOCAL_RESULT)
    if result is not None:
        return "COMPLETED" if result.get("returncode") == 0 else "FAILED"
    alive = job_alive(run_dir)
    if alive is None and (run_dir.parent / "sweep.json").exists():
        alive = job_alive(run_dir.parent)  # a local sweep's point: its sweep's job runs it
        if alive and not (run_dir / LOCAL_LOG).exists():
            return "PENDING"
    if alive:
        return "RUNNING"
    if summary:
        return "COMPLETED"
    if alive is False:
        return "CANCELLED" if (run_dir / CANCEL_FILE).exists() or (run_dir.parent / CANCEL_FILE).exists() else "LOST"
    return "UNKNOWN"


def scan(root: Path, slurm_states=None) -> list:
    """RunInfo for every run dir under ROOT. ``slurm_states``: {job id: state} (default: ask SLURM once)."""
    from launcher.slurm.jobs import JOB_FILE
    from launcher.slurm.requeue import requeue_history

    root = Path(root).resolve()
    infos = []
    for run_dir in find_run_dirs(root):
        cfg = _cached("config", run_dir / CONFIG_FILE, _read_config)
        rel = str(run_dir.relative_to(root))
        job = read_json(run_dir / JOB_FILE)
        in_sweep = rel.startswith(SWEEPS + "/")
        parts = Path(rel).parts
        info = RunInfo(
            path=run_dir, rel=rel, name=parts[1] if in_sweep else parts[0],
            sweep="/".join(parts[1:4]) if in_sweep else "",
            kind=(cfg.get("cluster") or {}).get("kind", "?"), job_id=str(job["job_id"]) if job else "",
            started=time.strftime("%Y-%m-%d %H:%M", time.localtime((run_dir / CONFIG_FILE).stat().st_mtime)),
            requeues=len(requeue_history(run_dir)),
            has_model=(run_dir / MODEL_DIR).is_dir(),
        )
        summary = _cached("summary", run_dir / SUMMARY_FILE, read_json)
        train, previous, evals, last = _cached("metrics", run_dir / METRICS_FILE, last_metrics)
        if train:
            info.step, info.loss = train.get("step"), train["loss"]
            info.epoch, info.tokens_per_s = train.get("epoch"), train.get("tokens_per_s")
            info.step_s = step_seconds(train, previous)
        info.total_epochs = ((cfg.get("train") or {}).get("epochs")
                             if ((cfg.get("train") or {}).get("max_steps") or -1) <= 0 else None)
        info.started_at = (run_dir / CONFIG_FILE).stat().st_mtime
        if evals:
            info.eval_loss = evals["eval_loss"]
        if summary:
            info.step = summary.get("final_step", info.step)
            info.loss = summary.get("final_train_loss", info.loss)
        info.total_steps = _total_steps(cfg, summary, train)
        if not info.job_id:
            info.state = local_state(run_dir, summary)
        infos.append(info)
    job_ids = [i.job_id for i in infos if i.job_id]
    if job_ids:
        if slurm_states is None:
            from launcher.sweep.report import slurm_states as ask

            slurm_states = ask(job_ids)
        for info in infos:
            if info.job_id:
                state = slurm_states.get(info.job_id, "UNKNOWN")
                if state == "UNKNOWN" and (info.path / SUMMARY_FILE).exists():
                    state = "COMPLETED"
                elif state == "UNKNOWN" and (info.path / CANCEL_REQUEST).exists():
                    state = "CANCELLED"  # an array task cancelled before it started is missing from sacct
                info.state = state
        pending = [i.job_id for i in infos if i.state == "PENDING"]
        reasons = pending_reasons(pending) if pending else {}
        for info in infos:
            info.reason = reasons.get(info.job_id, "")
    for info in infos:
        info.eta_s = eta_seconds(info)
        info.phase = run_phase(info, _cached("metrics", info.path / METRICS_FILE, last_metrics)[3])
    # Start order, newest first (a run dir's config.yaml is written once, when the run is made).
    infos.sort(key=lambda i: i.started_at, reverse=True)
    return infos


def pending_reasons(job_ids: list) -> dict:
    """{job id: SLURM's reason} of pending jobs, one squeue call."""
    from launcher.slurm.jobs import run_slurm_command

    try:
        out = run_slurm_command(["squeue", "-h", "-r", "-j", ",".join(sorted({j.split("_")[0] for j in job_ids})),
                                 "-o", "%i|%r"]).stdout
    except Exception:  # the reason is a detail: a squeue that does not answer leaves it out
        return {}
    return {job.strip(): reason.strip() for job, _, reason in (line.partition("|") for line in out.splitlines())
            if reason.strip() and reason.strip() != "None"}


def step_seconds(train: dict, previous: Optional[dict]) -> Optional[float]:
    """Seconds per step between two train records: the trained tokens between them over the trainer's
    measured rate (``trained_tokens_per_s`` is timed over exactly that window). None from one record: the
    first window includes the setup before step 1, which made the first ETA several times too long."""
    if previous is None:
        return None
    steps = (train.get("step") or 0) - (previous.get("step") or 0)
    tokens = (train.get("trained_tokens_seen") or 0) - (previous.get("trained_tokens_seen") or 0)
    rate = train.get("trained_tokens_per_s") or 0
    if steps <= 0 or tokens <= 0 or rate <= 0:
        return None
    return tokens / rate / steps


PHASES = ("queued", "starting", "loading", "training", "evaluating", "saving", "requeued", "finished",
          "failed", "cancelled", "unknown")
"""The words ``run_phase`` returns (the page translates them: ``i18n`` has ``phase_<word>``)."""


def run_phase(info: RunInfo, last_record: Optional[dict]) -> str:
    """What a run does now, from its state and its run dir: queued (SLURM pending), requeued (pending again
    after a preemption), starting (running, no log yet), loading (model, tokenizer and data tokenizing: logs,
    no metrics yet), training, evaluating (the bar of an eval pass is the log's last line), saving (a
    checkpoint being written), then finished / failed / cancelled."""
    from launcher.paths import CHECKPOINTS_DIR

    state = info.state
    if state in ("COMPLETED",):
        return "finished"
    if state in ("FAILED", "LOST", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"):
        return "failed"
    if state.startswith("CANCELLED"):
        return "cancelled"
    if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
        return "requeued" if info.requeues or state.startswith("REQUEUE") else "queued"
    if state not in RUNNING_STATES:
        return "unknown"
    logs = log_files(info.path)
    if last_record is None:
        return "loading" if logs else "starting"
    checkpoints = info.path / CHECKPOINTS_DIR
    try:
        newest = max((p.stat().st_mtime for p in checkpoints.iterdir()), default=0.0)
        metrics_mtime = (info.path / METRICS_FILE).stat().st_mtime
    except OSError:
        newest, metrics_mtime = 0.0, 0.0
    if newest > metrics_mtime:
        return "saving"
    progress = progress_log(info.path, logs)
    if progress is not None:
        last_line = tail_text(info.path / progress, lines=1, max_bytes=2048).split("\r")[-1]
        if last_line.strip() and not last_line.lstrip().startswith("train") and "batch" in last_line:
            return "evaluating"
    return "training"


def eta_seconds(info: RunInfo) -> Optional[float]:
    """Steps left x measured seconds per step (``step_seconds``); None until two train records exist."""
    if info.state != "RUNNING" or not info.step or not info.total_steps or info.step >= info.total_steps:
        return None
    if info.step_s is None:
        return None
    return max(0.0, info.step_s * (info.total_steps - info.step))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


TABLE_HEADERS = ["run", "state", "step", "loss", "eval loss", "ETA", "requeues", "job", "where", "started"]


def table_rows(infos: list) -> list:
    return [[i.rel, i.state, f"{_fmt(i.step)}/{_fmt(i.total_steps)}" if i.step is not None else "",
             _fmt(i.loss), _fmt(i.eval_loss), _fmt_eta(i.eta_s), str(i.requeues), i.job_id, i.kind, i.started]
            for i in infos]


# ------------------------------------------------------------------------------------------ one run


def curves(run_dir: Path) -> list:
    """[{step, value, series}] of train loss and eval loss, for a line plot."""
    from launcher.sweep.report import read_metrics  # tolerates the line being written

    rows = []
    for r in read_metrics(Path(run_dir)):
        if r.get("kind") == "train" and r.get("loss") is not None:
            rows.append({"step": r["step"], "loss": r["loss"], "series": "train"})
        elif r.get("kind") == "eval" and r.get("eval_loss") is not None:
            rows.append({"step": r["step"], "loss": r["eval_loss"], "series": "eval"})
    return rows


def log_files(run_dir: Path) -> list:
    """Every log of a run, relative to it: each rank's stdout/stderr, the local log, the node logs."""
    from launcher.sweep.plan import LOCAL_LOG

    run_dir = Path(run_dir)
    found = sorted(run_dir.glob(f"{LOG_DIR}/**/std*.log"))
    found += [p for p in (run_dir / LOCAL_LOG, run_dir / LAUNCHER_LOG) if p.exists()]
    found += sorted(p for p in (run_dir / "slurm").glob("*_log.*") if p.exists())
    return [str(p.relative_to(run_dir)) for p in found]


def progress_log(run_dir: Path, logs: Optional[list] = None) -> Optional[str]:
    """The log that shows a run's progress, relative to it: rank 0's stderr (the training bar) of the newest
    attempt, else the run's own log; the launcher's file (``local_job.log``: "[sweep] point 0 started") last."""
    from launcher.sweep.plan import LOCAL_LOG

    run_dir = Path(run_dir)
    logs = log_files(run_dir) if logs is None else logs
    rank0 = [rel for rel in logs if rel.endswith("stderr.log") and Path(rel).parent.name == "0"]
    if rank0:
        return max(rank0, key=lambda rel: (run_dir / rel).stat().st_mtime if (run_dir / rel).exists() else 0)
    for rel in (LOCAL_LOG,):
        if rel in logs:
            return rel
    node = [rel for rel in logs if rel.startswith("slurm/") and rel.endswith(".err")]
    if node:
        return node[-1]
    return logs[-1] if logs else None


def mask_secrets(text: str) -> str:
    """Values of secret environment variables (W&B, HF tokens, any *_KEY, *_TOKEN, ...) replaced, should a log
    have printed one."""
    from launcher.secret_env import secret_values

    for value, name in secret_values().items():
        text = text.replace(value, f"<{name}>")
    return text


def tail_text(path: Path, lines: int = 200, max_bytes: int = 65536) -> str:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"({path.name}: {exc.strerror})"
    return mask_secrets("\n".join(data.splitlines()[-lines:]))


def cancel(run_dir: Path) -> Note:
    """``launcher cancel RUN_DIR`` for a SLURM run; SIGTERM to the job process of a run the UI started here."""
    import contextlib
    import io

    from launcher.slurm.jobs import JOB_FILE, cancel_main
    from launcher.ui.i18n import Note
    from launcher.launch.detached import stop

    run_dir = Path(run_dir)
    if (run_dir / JOB_FILE).exists():
        from launcher.slurm.jobs import TERMINAL_STATES, resolve_target, job_state

        ref = resolve_target(str(run_dir))
        state = job_state(ref.job_id)["state"]
        if state in TERMINAL_STATES:
            return Note("cancel_ended", job_id=ref.job_id, state=state)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = cancel_main([str(run_dir)])
        if rc != 0:
            return Note("cancel_failed", output=out.getvalue().strip())
        (run_dir / CANCEL_REQUEST).write_text(json.dumps({"job_id": ref.job_id, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        return Note("cancel_done", output=out.getvalue().strip())
    for folder in (run_dir, run_dir.parent):
        if stop(folder):
            return Note("cancel_local", folder=folder)
    return Note("cancel_nothing", run_dir=run_dir)


def remove_run(root: Path, run_dir: Path, state: str, typed_name: str = "") -> "Note":
    """Delete a run dir the user asked the page to remove (a failed submission, a half-made or finished run),
    and its date/name folders when they are left empty. Never a running or queued run (cancel it first); a run
    holding checkpoints or a trained model only when ``typed_name`` is its name as the table shows it (its
    path under the root): what training made is not lost to a stray click."""
    import shutil

    from launcher.ui.i18n import Note

    root, run_dir = Path(root).resolve(), Path(run_dir).resolve()
    rel = str(run_dir.relative_to(root))
    if state in RUNNING_STATES:
        return Note("remove_running", run=rel, state=state)
    made = (run_dir / "checkpoints").is_dir() or (run_dir / MODEL_DIR).is_dir()
    if made and (typed_name or "").strip() != rel:
        return Note("remove_needs_name", run=rel)
    shutil.rmtree(run_dir)
    _cache_forget(run_dir)
    for parent in list(run_dir.parents)[:2]:  # ROOT/<name>/<date>: gone with their last run
        if parent != root and root in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
    return Note("removed", run=rel)


def _cache_forget(run_dir: Path) -> None:
    for key in [k for k in _cache if k[1].parent == run_dir]:
        del _cache[key]
