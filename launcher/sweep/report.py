"""``launcher sweep report SWEEP_DIR [--out PNG]``: every point of a sweep, its state, losses and errors.

Works while the sweep runs: SLURM says which tasks are pending, running or done (squeue for what the
controller still holds, sacct for the rest, both asked once for all arrays); a local sweep's state comes from
the files it leaves (run.log, local_result.json). Losses come from each run dir's summary.json, or, while a
point trains, from its metrics.jsonl. A failed point shows the last error line of its logs.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path
from typing import Optional

from launcher.errors import LauncherError
from launcher.paths import LOG_DIR, SUMMARY_FILE
from launcher.training.metrics import read_metrics
from launcher.sweep.plan import LOCAL_LOG, LOCAL_RESULT, SWEEP_FILE

FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                 "DEADLINE", "REVOKED"}


def load_sweep(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        raise LauncherError(f"{sweep_dir}: no {SWEEP_FILE} here; give the sweep dir that `launcher train -m` printed")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------ SLURM state


def _expand_task_ids(job_id: str) -> list:
    """``12_[0-2,5%4]`` -> [12_0, 12_1, 12_2, 12_5]; ``12_3`` and ``12`` stay as they are."""
    match = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(%\d+)?\]", job_id)
    if not match:
        return [job_id]
    out = []
    for part in match.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{match.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def slurm_states(job_ids: list) -> dict:
    """{job id ("A_a" or "J"): state} for every array task and job asked about, two commands in all."""
    from launcher.slurm.jobs import run_slurm_command

    if not job_ids or shutil.which("sacct") is None and shutil.which("squeue") is None:
        return {}
    parents = sorted({str(j).split("_")[0] for j in job_ids})
    states: dict = {}
    acct = run_slurm_command(["sacct", "-n", "-P", "-X", "-j", ",".join(parents), "-o", "JobID,State"]).stdout
    for line in acct.splitlines():
        if "|" not in line:
            continue
        job, state = line.split("|", 1)
        for task in _expand_task_ids(job.strip()):
            states[task] = state.split()[0] if state.strip() else "UNKNOWN"
    # The controller's view wins while it still holds a task: accounting lags by a second or two.
    queue = run_slurm_command(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(parents), "-o", "%i|%T"]).stdout
    for line in queue.splitlines():
        if "|" in line:
            job, state = line.split("|", 1)
            for task in _expand_task_ids(job.strip()):
                states[task] = state.strip()
    return states


# ------------------------------------------------------------------------------------------ run dir files


ERROR_LINE = re.compile(r"(\berror: .*|\b[A-Za-z_][\w.]*(Error|Exception)\b(: .*)?$)")


def last_error_line(files: list) -> Optional[str]:
    """The last line that names an error in the first of ``files`` (in order) that has one.

    Our own messages (``error: ...``) win over exception lines, which win over nothing; rank prefixes
    such as ``[rank0]:`` are dropped.
    """
    for path in files:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        ours = [line for line in lines if "error: " in line and "warning" not in line.lower()[:20]]
        if ours:
            text = ours[-1]
            return text[text.index("error: "):].strip()
        for line in reversed(lines):
            match = ERROR_LINE.search(line.strip())
            if match and "Traceback" not in line:
                return match.group(0).strip()
    return None


def error_files(sweep_dir: Path, run_dir: Path, job_id: Optional[str]) -> list:
    """Where a point's failure is told, most precise first: each rank's stderr, the local log, the node logs."""
    files = sorted(run_dir.glob(f"{LOG_DIR}/node*/*/attempt_*/*/stderr.log"), key=lambda p: p.stat().st_mtime)
    files = list(reversed(files))
    files += sorted(run_dir.glob(f"{LOG_DIR}/torchrun/*/attempt_*/*/stderr.log"))
    if (run_dir / LOCAL_LOG).exists():
        files.append(run_dir / LOCAL_LOG)
    if job_id:
        files += sorted((sweep_dir / "slurm").glob(f"{job_id}_*_log.err"))
        files += sorted((sweep_dir / "slurm").glob(f"{job_id}_*_log.out"))
    return files


def point_row(sweep_dir: Path, point: dict, states: dict, is_slurm: bool) -> dict:
    run_dir = sweep_dir / point["run_dir"] if point.get("run_dir") else None
    row = {"index": point["index"], "swept": point.get("swept", {}), "run_dir": str(run_dir) if run_dir else "",
           "job_id": point.get("job_id") or "", "state": "UNKNOWN", "step": None, "final_train_loss": None,
           "final_eval_loss": None, "best_eval_step": None, "best_eval_loss": None, "error": None}
    if run_dir is None or not run_dir.exists():
        row["state"] = "MISSING"
        return row
    summary = {}
    if (run_dir / SUMMARY_FILE).exists():
        try:
            summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        except json.JSONDecodeError:
            summary = {}
    metrics = read_metrics(run_dir)
    train = [r for r in metrics if r.get("kind") == "train" and r.get("loss") is not None]
    evals = [r for r in metrics if r.get("kind") == "eval" and r.get("eval_loss") is not None]
    if train:
        row["step"] = train[-1].get("step")
        row["final_train_loss"] = train[-1]["loss"]
    if summary.get("final_train_loss") is not None:
        row["final_train_loss"] = summary["final_train_loss"]
        row["step"] = summary.get("final_step", row["step"])
    if summary.get("eval_loss_after") is not None:
        row["final_eval_loss"] = summary["eval_loss_after"]
    elif evals and summary:
        row["final_eval_loss"] = evals[-1]["eval_loss"]
    trained_evals = [r for r in evals if r.get("step", 0) > 0] or evals
    if trained_evals:
        best = min(trained_evals, key=lambda r: r["eval_loss"])
        row["best_eval_step"], row["best_eval_loss"] = best.get("step"), best["eval_loss"]

    if is_slurm:
        row["state"] = states.get(row["job_id"], "UNKNOWN") if row["job_id"] else "NOT SUBMITTED"
        if row["state"] == "UNKNOWN" and summary:
            row["state"] = "COMPLETED"
    else:
        result = run_dir / LOCAL_RESULT
        if result.exists():
            rc = json.loads(result.read_text()).get("returncode")
            row["state"] = "COMPLETED" if rc == 0 else "FAILED"
            if rc != 0:
                row["exit_code"] = rc
        elif (run_dir / LOCAL_LOG).exists():
            row["state"] = "RUNNING"
        else:
            row["state"] = "PENDING"
    if row["state"] in FAILED_STATES:
        row["error"] = last_error_line(error_files(sweep_dir, run_dir, row["job_id"] or None))
        if row["error"] is None:
            row["error"] = f"ended {row['state']} (no error line in the logs)"
    return row


def sweep_rows(sweep_dir: Path) -> tuple:
    """(sweep.json data, one row per point)."""
    sweep_dir = Path(sweep_dir).resolve()
    data = load_sweep(sweep_dir)
    is_slurm = data.get("cluster") == "slurm"
    states = slurm_states([p["job_id"] for p in data["points"] if p.get("job_id")]) if is_slurm else {}
    return data, [point_row(sweep_dir, p, states, is_slurm) for p in data["points"]]


# ----------------------------------------------------------------------------------------------- table


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(data: dict, rows: list) -> str:
    keys = data.get("swept_keys") or []
    header = ["#"] + keys + ["state", "step", "train loss", "eval loss", "best eval @step", "job"]
    table = []
    for r in rows:
        best = "-" if r["best_eval_loss"] is None else f"{r['best_eval_loss']:.4f} @{r['best_eval_step']}"
        table.append([str(r["index"])] + [str(r["swept"].get(k, "")) for k in keys] + [
            r["state"], _fmt(r["step"]), _fmt(r["final_train_loss"]), _fmt(r["final_eval_loss"]), best,
            r["job_id"] or "-",
        ])
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append("")
    lines.append(f"{len(rows)} point(s): " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    for r in rows:
        if r["error"]:
            lines.append(f"point {r['index']} {r['state'].lower()}: {r['error']}")
            lines.append(f"    logs: {r['run_dir']}")
    done = [r for r in rows if r["final_eval_loss"] is not None]
    if done:
        best = min(done, key=lambda r: r["final_eval_loss"])
        label = " ".join(f"{k}={v}" for k, v in best["swept"].items())
        lines.append(f"best final eval loss: {best['final_eval_loss']:.4f} (point {best['index']}: {label})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plot


def _number(text) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def plot_sweep(data: dict, rows: list, out: Path) -> Optional[Path]:
    """Final eval loss (train loss when there is no eval) against the first numeric swept key, one line per
    value of the other swept keys; log-x when the values span a factor of 2 or more. None: nothing to plot."""
    keys = data.get("swept_keys") or []
    metric = "final_eval_loss" if any(r["final_eval_loss"] is not None for r in rows) else "final_train_loss"
    done = [r for r in rows if r[metric] is not None]
    if not done:
        return None
    numeric = [k for k in keys if all(_number(r["swept"].get(k)) is not None for r in rows)]
    x_key = numeric[0] if numeric else (keys[0] if keys else None)
    others = [k for k in keys if k != x_key]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict = {}
    for r in done:
        lines.setdefault(tuple(str(r["swept"].get(k)) for k in others), []).append(r)
    categories: list = []
    if x_key is not None and x_key not in numeric:
        categories = sorted({str(r["swept"].get(x_key)) for r in rows})
    def order(values: tuple) -> tuple:
        return tuple((0, _number(v), "") if _number(v) is not None else (1, 0.0, v) for v in values)

    for values, members in sorted(lines.items(), key=lambda item: order(item[0])):
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, values)) or metric
        if x_key is None:
            xs = [r["index"] for r in members]
        elif categories:
            xs = [categories.index(str(r["swept"].get(x_key))) for r in members]
        else:
            xs = [_number(r["swept"].get(x_key)) for r in members]
        pairs = sorted(zip(xs, [r[metric] for r in members]))
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], "o-", label=label)
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    elif x_key is not None:
        values = [_number(r["swept"].get(x_key)) for r in rows]
        if min(values) > 0 and max(values) / min(values) >= 2:
            ax.set_xscale("log")
    ax.set_xlabel(x_key or "point")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{data.get('name', 'sweep')}: {len(done)} of {len(rows)} point(s) done")
    ax.grid(alpha=0.3, which="both")
    if len(lines) > 1 or others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------------- entry


def report_main(argv: Optional[list] = None) -> int:
    """``launcher sweep report SWEEP_DIR [--out PNG] [--json]``. 0 when every point completed, 1 otherwise
    (pending, running or failed points), so scripts can wait on it."""
    parser = argparse.ArgumentParser(prog="launcher sweep report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="plot file (default: SWEEP_DIR/sweep.png)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    data, rows = sweep_rows(args.sweep_dir)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"sweep {data.get('name')} ({args.sweep_dir.resolve()})")
        arrays = ", ".join(a["array_job_id"] for a in data.get("arrays", []))
        if arrays:
            print(f"job arrays: {arrays}")
        print(format_table(data, rows))
    out = plot_sweep(data, rows, args.out or Path(args.sweep_dir) / "sweep.png")
    if not args.json:
        print(f"plot: {out}" if out else "plot: nothing finished yet")
    return 0 if all(r["state"] == "COMPLETED" for r in rows) else 1


def sweep_command_main(argv: list) -> int:
    """``launcher sweep report ...``: the ``sweep`` command's table of subcommands."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: launcher sweep report SWEEP_DIR [--out PNG] [--json]")
        return 0
    if argv[0] == "report":
        return report_main(argv[1:])
    print(f"error: unknown sweep subcommand '{argv[0]}' (known: report)")
    return 2
