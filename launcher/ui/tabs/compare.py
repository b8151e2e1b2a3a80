"""The Compare tab: loss curves of several runs on one plot, and a sweep's report (table and plot)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from launcher.ui import runs
from launcher.ui.tabs.page import Page, plot_frame


@dataclass
class CompareTab:
    compare_runs: gr.Dropdown
    compare_plot: gr.LinePlot
    sweep_select: gr.Dropdown
    sweep_table: gr.Code
    sweep_plot: gr.Image


def layout(t) -> CompareTab:
    with gr.Tab(t("tab_compare"), id="compare", elem_id="tab-compare"):
        compare_runs = gr.Dropdown([], multiselect=True, label=t("compare_runs"), elem_id="compare-runs")
        compare_plot = gr.LinePlot(plot_frame([]), x="step", y="loss", color="series",
                                   label=t("compare_plot"), elem_id="compare-plot", height=320)
        sweep_select = gr.Dropdown([], label=t("sweep_dir"), elem_id="sweep-select")
        sweep_table = gr.Code(label=t("sweep_report"), language=None, interactive=False, elem_id="sweep-table")
        sweep_plot = gr.Image(label=t("sweep_plot"), elem_id="sweep-plot", interactive=False, height=320)
    return CompareTab(compare_runs, compare_plot, sweep_select, sweep_table, sweep_plot)


def sweep_report(root: Path) -> Callable:
    """``on_sweep(rel) -> (table, image)`` for the sweep dirs under ``root``; the Runs tab's refresh calls it
    too, so each sweep's plot is kept and redrawn only when its numbers move."""
    plotted: dict = {}

    def on_sweep(rel):
        """``launcher sweep report``: the table, and the plot redrawn only when a point's numbers moved."""
        if not rel:
            return "", None
        import json

        from launcher.sweep.report import format_table, plot_sweep, sweep_rows

        sweep_dir = runs.confine(root, rel)
        data, rows = sweep_rows(sweep_dir)
        key = json.dumps(rows, sort_keys=True, default=str)
        if plotted.get(rel, (None,))[0] != key:
            out = plot_sweep(data, rows, sweep_dir / "sweep.png")
            image = None
            if out is not None:
                from PIL import Image

                image = Image.open(io.BytesIO(Path(out).read_bytes()))
            plotted[rel] = (key, image)
        return format_table(data, rows), plotted[rel][1]

    return on_sweep


def wire(page: Page, tab: CompareTab, on_sweep: Callable) -> None:
    def on_compare(selected):
        rows = []
        for rel in selected or []:
            path = page.run_path(rel)
            if path is not None:
                rows += [{**r, "series": f"{rel} {r['series']}"} for r in runs.curves(path)]
        return plot_frame(rows)

    tab.compare_runs.change(on_compare, [tab.compare_runs], [tab.compare_plot])
    tab.sweep_select.change(on_sweep, [tab.sweep_select], [tab.sweep_table, tab.sweep_plot])
