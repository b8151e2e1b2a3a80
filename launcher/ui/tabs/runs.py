"""The Runs tab: the table of run dirs, one run's state, loss curve and log tail, and cancel.

Its refresh (page load, timer tick, refresh button) also refills the other tabs' run selectors, so it takes
their components."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from launcher.ui import runs
from launcher.ui.i18n import message
from launcher.ui.tabs.page import LANG_JS, Page, plot_frame


def runs_frame(rows: list, lang: str):
    """The runs table with its column names in the page's language."""
    import pandas as pd

    headers = message("table_headers", lang).split("|")
    return pd.DataFrame(rows, columns=headers).astype("string")


@dataclass
class RunsTab:
    refresh_btn: gr.Button
    summary: gr.Markdown
    table: gr.Dataframe
    run_select: gr.Dropdown
    cancel_btn: gr.Button
    cancel_result: gr.Markdown
    run_info: gr.Markdown
    loss_plot: gr.LinePlot
    log_select: gr.Dropdown
    log_view: gr.Textbox


def layout(t) -> RunsTab:
    with gr.Tab(t("tab_runs"), id="runs", elem_id="tab-runs"):
        gr.Markdown(t("runs_help"))
        with gr.Row():
            refresh_btn = gr.Button(t("refresh"), elem_id="refresh-btn", scale=0)
            summary = gr.Markdown(elem_id="runs-summary")
        table = gr.Dataframe(headers=runs.TABLE_HEADERS, interactive=False, elem_id="runs-table",
                             wrap=True, max_height=420)
        with gr.Row():
            run_select = gr.Dropdown([], label=t("run"), elem_id="run-select", scale=3)
            cancel_btn = gr.Button(t("cancel"), variant="stop", elem_id="cancel-btn", scale=0)
        cancel_result = gr.Markdown(elem_id="cancel-result")
        run_info = gr.Markdown(elem_id="run-info")
        loss_plot = gr.LinePlot(plot_frame([]), x="step", y="loss", color="series", label=t("loss_curve"),
                                elem_id="loss-plot", height=300)
        with gr.Row():
            log_select = gr.Dropdown([], label=t("log_file"), elem_id="log-select")
        log_view = gr.Textbox(label=t("log_tail"), lines=12, max_lines=20, interactive=False,
                              elem_id="log-tail", autoscroll=True)
    return RunsTab(refresh_btn, summary, table, run_select, cancel_btn, cancel_result, run_info, loss_plot,
                   log_select, log_view)


def wire(page: Page, tab: RunsTab, *, app: gr.Blocks, timer: gr.Timer, chat_run: gr.Dropdown,
         compare_runs: gr.Dropdown, sweep_select: gr.Dropdown, sweep_table: gr.Code, sweep_plot: gr.Image,
         on_sweep: Callable) -> None:
    """Refresh on load, on every timer tick and on the button; the other tabs' selectors and the sweep report
    (``on_sweep``, the Compare tab's) are refreshed with the table."""
    root, on, run_path = page.root, page.on, page.run_path

    def refresh(selected, log_rel, chat_selected, compare_selected, sweep_selected, lang, first: bool):
        """The runs table and every run selector, from the run dirs. Only the page's first load sets the
        selectors' values; later refreshes change their choices, never what the user picked (a refresh
        computed before a click must not undo it)."""
        infos = runs.scan(root)
        rels = [i.rel for i in infos]
        counts: dict = {}
        for i in infos:
            counts[i.state] = counts.get(i.state, 0) + 1
        text = message("runs_summary", lang, n=len(infos), root=root,
                       counts=", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
        finished = [i.rel for i in infos if i.has_model]
        sweeps = [str(p.relative_to(root)) for p in runs.find_sweep_dirs(root)]
        def pick(options, current):
            """Keep the user's pick; fill an empty selector with the newest option."""
            if first or not current:
                return gr.update(choices=options, value=options[0] if options else None), (
                    options[0] if options else None)
            return gr.update(choices=options), current

        run_update, selected = pick(rels, None if first else selected)
        chat_update, _ = pick(finished, None if first else chat_selected)
        sweep_update, _ = pick(sweeps, None if first else sweep_selected)
        compare_update = gr.update(choices=rels, value=[]) if first else gr.update(choices=rels)
        _, sweep_now = pick(sweeps, None if first else sweep_selected)
        return ([text, runs_frame(runs.table_rows(infos), lang), run_update]
                + run_details(selected, log_rel, lang, infos)
                + [chat_update, compare_update, sweep_update] + list(on_sweep(sweep_now)))

    def on_load(*selected):
        return refresh(*selected, first=True)

    def on_tick(*selected):
        return refresh(*selected, first=False)

    def run_details(rel, log_rel, lang, infos=None):
        path = run_path(rel)
        if path is None:
            return ["", plot_frame([]), gr.update(choices=[], value=None), ""]
        info = next((i for i in (infos or runs.scan(root)) if i.rel == rel), None)
        lines = [f"**{rel}**"]
        if info is not None:
            step = f"{info.step if info.step is not None else '-'}" + (
                f"/{info.total_steps}" if info.total_steps else "")
            lines.append(message("run_state", lang, state=info.state)
                         + (message("run_job", lang, job_id=info.job_id) if info.job_id else "")
                         + message("run_step", lang, step=step)
                         + (message("run_loss", lang, loss=f"{info.loss:.4f}") if info.loss is not None else "")
                         + (message("run_eta", lang, eta=runs._fmt_eta(info.eta_s)) if info.eta_s is not None
                            else "")
                         + message("run_requeues", lang, requeues=info.requeues))
        logs = runs.log_files(path)
        log_rel = log_rel if log_rel in logs else (logs[-1] if logs else None)
        # Confined to the root, not the run dir: a sweep point's node logs link into its sweep dir.
        tail = runs.tail_text(runs.confine(root, str(path.relative_to(root) / log_rel))) if log_rel else ""
        return ["  \n".join(lines), plot_frame(runs.curves(path)), gr.update(choices=logs, value=log_rel), tail]

    details = [tab.run_info, tab.loss_plot, tab.log_select, tab.log_view]
    refresh_outputs = [tab.summary, tab.table, tab.run_select, *details,
                       chat_run, compare_runs, sweep_select, sweep_table, sweep_plot]
    refresh_inputs = [tab.run_select, tab.log_select, chat_run, compare_runs, sweep_select]
    on(tab.refresh_btn.click, on_tick, refresh_inputs, refresh_outputs, show_progress="hidden")
    on(timer.tick, on_tick, refresh_inputs, refresh_outputs, show_progress="hidden")
    on(app.load, on_load, refresh_inputs, refresh_outputs, show_progress="hidden")
    on(tab.run_select.input, lambda rel, lang: run_details(rel, None, lang), [tab.run_select], details,
       show_progress="hidden")
    on(tab.log_select.input, run_details, [tab.run_select, tab.log_select], details, show_progress="hidden")

    def on_table_select(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.update()

    tab.table.select(on_table_select, None, tab.run_select, show_progress="hidden").then(
        None, None, [page.lang_box], js=LANG_JS, queue=False, show_progress="hidden").then(
        lambda rel, lang: run_details(rel, None, lang), [tab.run_select, page.lang_box], details,
        show_progress="hidden")

    def on_cancel(rel, lang):
        path = run_path(rel)
        return runs.cancel(path).text(lang) if path else message("no_run_selected", lang)

    on(tab.cancel_btn.click, on_cancel, [tab.run_select], [tab.cancel_result])
