"""The curves the Runs and Compare tabs draw: rows read from metrics.jsonl, and the Vega-Lite chart of them.

Why Altair (a ``gr.Plot``) and not Gradio's ``gr.LinePlot``: the LinePlot puts its legend below the plot box
(cut off at the heights a page row has) and fixes its colour domain at the first value it is given, so that a
series that appears later (the training loss after a step-0 eval, a second run picked in Compare) was not drawn
until the page reloaded. A chart built here carries its own data, domain and legend (inside the plot box) and
is rebuilt whenever its rows change.

Pure functions of the rows (no Gradio); the chart's texts (axis titles) come in the page's language.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

LOSS = "loss"
"""The default metric: the train records' ``loss`` and the eval records' ``eval_loss`` on one plot."""

NOT_METRICS = {"step", "epoch", "kind", "trained_tokens_seen"}
"""Numbers in a record that are positions, not curves."""


def metric_names(records: Iterable[dict]) -> list:
    """The metrics a run's records can draw: ``loss`` first, then every other numeric train/eval key (rewards,
    accuracies, lr, grad_norm, throughput: whatever the method logged), sorted."""
    names = set()
    for r in records:
        if r.get("kind") not in ("train", "eval"):
            continue
        for key, value in r.items():
            if key in NOT_METRICS or key in ("loss", "eval_loss"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                names.add(key)
    return [LOSS] + sorted(names)


LOSS_SERIES = {"train": (("loss", "train"), ("reward", "reward")),
               "eval": (("eval_loss", "eval"), ("eval/reward", "eval reward"))}
"""The ``loss`` view's (key, series) per record kind: the losses, and the reward mean where the method logs one
(GRPO/PPO: ``reward`` per step, ``eval/reward`` held out), so that an RL run's plot shows what it learns."""


def metric_rows(records: Iterable[dict], metric: str = LOSS, label: str = "") -> list:
    """[{step, value, series}] of one run's records for ``metric``: for ``loss`` the series ``train`` and
    ``eval`` (and ``reward``, ``eval reward`` where logged: ``LOSS_SERIES``); for any other key its own name
    (``eval_*`` keys come from eval records). ``label`` (a run's name) is put before each series, so that
    several runs' lines can be told apart."""
    prefix = f"{label} " if label else ""
    rows = []
    for r in records:
        kind, step = r.get("kind"), r.get("step")
        if step is None or kind not in ("train", "eval"):
            continue
        pairs = LOSS_SERIES[kind] if metric == LOSS else ((metric, metric),)
        for key, series in pairs:
            value = r.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"step": int(step), "value": float(value), "series": prefix + series})
    return rows


def series_names(rows: list) -> list:
    """The series in the order they first appear (the legend's order)."""
    return list(dict.fromkeys(r["series"] for r in rows))


PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563",
           "#65a30d")
"""One colour per series, in legend order (Gradio's page swaps in its own palette of the same length)."""


def chart(rows: list, y_title: str = "loss", x_title: str = "step", height: int = 300):
    """A line chart with a point per record, one colour per series and the legend inside the plot box (top
    right); None when there is nothing to draw. The rows travel in the chart's own data.

    Returned as Gradio's ``AltairPlotData`` of a layered chart (lines, points): as such the page fits its
    width to the tab and keeps fitting it. Drawn as SVG (``usermeta.embedOptions``), so every line and point
    is an element with its series and values in its ``aria-label``: what the browser tests read."""
    if not rows:
        return None
    import altair as alt
    import pandas as pd
    from gradio.components.plot import AltairPlotData

    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    names = series_names(rows)
    color = alt.Color("series:N", scale=alt.Scale(domain=names, range=[PALETTE[k % len(PALETTE)]
                                                                       for k in range(len(names))]),
                      legend=alt.Legend(orient="top-right", title=None, fillColor="white", padding=6,
                                        strokeColor="#cccccc", labelLimit=480, symbolType="stroke"))
    x = alt.X("step:Q", title=x_title, axis=alt.Axis(format="d", tickMinStep=1))
    y = alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = ["series:N", "step:Q", alt.Tooltip("value:Q", format=".4f")]
    base = alt.Chart(frame).encode(x=x, y=y, color=color, tooltip=tooltip)
    layered = alt.layer(base.mark_line(), base.mark_point(filled=True, size=28, strokeOpacity=0)).properties(height=height)
    spec = layered.to_dict()
    spec["usermeta"] = {"embedOptions": {"renderer": "svg", "actions": False}}
    import json

    return AltairPlotData(plot=json.dumps(spec), chart="line")


def read_records(run_dir: Path) -> list:
    """A run's metrics.jsonl records (a line being written is skipped)."""
    from launcher.training.metrics import read_metrics

    return read_metrics(Path(run_dir))


def run_chart(run_dir: Path, metric: str = LOSS, y_title: Optional[str] = None, x_title: str = "step"):
    """(chart, rows) of one run."""
    rows = metric_rows(read_records(run_dir), metric)
    return chart(rows, y_title or metric, x_title), rows
