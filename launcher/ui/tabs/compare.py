"""The Compare tab: loss curves of several runs on one plot, and a sweep's report (table and plot)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from launcher.ui import plots, runs
from launcher.ui.tabs.page import Page, curve_chart, metric_choices


@dataclass
class CompareTab:
    compare_runs: gr.Dropdown
    compare_metric: gr.Dropdown
    compare_plot: gr.Plot
    sweep_select: gr.Dropdown
    sweep_table: gr.Code
    sweep_plot: gr.Image


def layout(t) -> CompareTab:
    with gr.Tab(t("tab_compare"), id="compare", elem_id="tab-compare"):
        with gr.Row():
            compare_runs = gr.Dropdown([], multiselect=True, label=t("compare_runs"), elem_id="compare-runs",
                                       scale=4)
            compare_metric = gr.Dropdown([plots.LOSS], value=plots.LOSS, label=t("metric"),
                                         elem_id="compare-metric", interactive=True, scale=1)
        compare_plot = gr.Plot(label=t("compare_plot"), elem_id="compare-plot")
        sweep_select = gr.Dropdown([], label=t("sweep_dir"), elem_id="sweep-select")
        sweep_table = gr.Code(label=t("sweep_report"), language=None, interactive=False, elem_id="sweep-table")
        sweep_plot = gr.Image(label=t("sweep_plot"), elem_id="sweep-plot", interactive=False, height=320)
    return CompareTab(compare_runs, compare_metric, compare_plot, sweep_select, sweep_table, sweep_plot)


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
    def on_compare(selected, metric, lang):
        """Every selected run's curves of ``metric`` on one chart, each line named "<run> <series>"; the
        metric choices are those any selected run logged."""
        rows, names = [], [plots.LOSS]
        for rel in selected or []:
            path = page.run_path(rel)
            if path is None:
                continue
            records = plots.read_records(path)
            names += [n for n in plots.metric_names(records) if n not in names]
            rows += plots.metric_rows(records, metric or plots.LOSS, label=rel)
        metric = metric if metric in names else plots.LOSS
        return curve_chart(rows, metric, lang), gr.update(choices=metric_choices(names, lang), value=metric)

    page.on(tab.compare_runs.change, on_compare, [tab.compare_runs, tab.compare_metric],
            [tab.compare_plot, tab.compare_metric], show_progress="hidden", trigger_mode="always_last")
    page.on(tab.compare_metric.input, on_compare, [tab.compare_runs, tab.compare_metric],
            [tab.compare_plot, tab.compare_metric], show_progress="hidden")
    tab.sweep_select.change(on_sweep, [tab.sweep_select], [tab.sweep_table, tab.sweep_plot])
