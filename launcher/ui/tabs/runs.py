"""The Runs tab: the table of run dirs, one run's state, loss curve and log tail, and cancel.

Its refresh (page load, timer tick, refresh button) also refills the other tabs' run selectors, so it takes
their components."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from launcher.ui import plots, runs
from launcher.ui.i18n import message, worded
from launcher.ui.tabs.page import LANG_JS, Page, curve_chart, metric_choices, one_line


def runs_frame(rows: list, lang: str):
    """The runs table with its column names in the page's language."""
    import pandas as pd

    headers = message("table_headers", lang).split("|")
    return pd.DataFrame(rows, columns=headers).astype("string")


LATEST = "latest"
"""The resume choice that means the run's newest checkpoint."""


@dataclass
class RunsTab:
    refresh_btn: gr.Button
    summary: gr.Markdown
    table: gr.Dataframe
    run_select: gr.Dropdown
    cancel_btn: gr.Button
    resume_checkpoint: gr.Dropdown
    resume_btn: gr.Button
    cancel_result: gr.Markdown
    run_info: gr.Markdown
    progress: gr.HTML
    metric: gr.Dropdown
    loss_plot: gr.Plot
    plot_key: gr.State
    """What the plot shows now (run, metric, rows): a tick that changes nothing leaves the chart alone."""
    log_select: gr.Dropdown
    log_view: gr.Textbox
    remove_btn: gr.Button
    remove_name: gr.Textbox
    """The run's name typed to remove a run that holds checkpoints or a model."""
    remove_confirmed: gr.Textbox
    """Hidden: the run the browser's confirm() said yes to ('' for no)."""
    health: gr.Markdown
    """``launcher status``'s rank lines: phase, each rank's last progress, stalls and restarts."""


REMOVE_CONFIRM_JS = """(rel) => {
  if (!rel) { return ''; }
  const zh = (document.documentElement.lang || '').toLowerCase().startsWith('zh');
  return confirm(zh ? '删除运行 ' + rel + '？其目录将被删除。' : 'Remove run ' + rel + '? Its folder is deleted.')
      ? rel : '';
}"""


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
            resume_checkpoint = gr.Dropdown([LATEST], value=LATEST, label=t("resume_from"),
                                            elem_id="resume-checkpoint", scale=1)
            resume_btn = gr.Button(t("resume"), elem_id="resume-btn", scale=0)
        with gr.Row():
            remove_name = gr.Textbox(label=t("remove_confirm"), elem_id="remove-name", scale=3)
            remove_btn = gr.Button(t("remove"), variant="stop", elem_id="remove-btn", scale=0, min_width=140)
            remove_confirmed = gr.Textbox(visible=False, elem_id="remove-confirmed")
        cancel_result = gr.Markdown(elem_id="cancel-result")
        run_info = gr.Markdown(elem_id="run-info")
        progress = gr.HTML(elem_id="run-progress")
        health = gr.Markdown(elem_id="run-health", label=t("run_health"))
        metric = gr.Dropdown([plots.LOSS], value=plots.LOSS, label=t("metric"), elem_id="run-metric",
                             interactive=True)
        loss_plot = gr.Plot(label=t("loss_curve"), elem_id="loss-plot")
        plot_key = gr.State("")
        with gr.Row():
            log_select = gr.Dropdown([], label=t("log_file"), elem_id="log-select")
        log_view = gr.Textbox(label=t("log_tail"), lines=12, max_lines=20, interactive=False,
                              elem_id="log-tail", autoscroll=True)
    return RunsTab(refresh_btn, summary, table, run_select, cancel_btn, resume_checkpoint, resume_btn, cancel_result, run_info, progress, metric,
                   loss_plot, plot_key, log_select, log_view, remove_btn, remove_name, remove_confirmed, health)


def health_markdown(run_dir, lang: str) -> str:
    """``launcher status``'s view of the ranks (``launcher.training.progress.run_health``, the same reader) in
    the page's language: the phase, each rank's last progress, restarts, and every stall with its stack
    folder. Empty for a run whose ranks never reported (queued, or from before progress files)."""
    from launcher.training.progress import run_health

    health = run_health(run_dir)
    if health["phase"] is None and not health["stalls"] and not health["attempts"]:
        return ""
    lines = [message("health_phase", lang, phase=worded("rankphase", health["phase"], lang), step=health["step"])
             if health["phase"] is not None else message("health_none", lang)]
    for r in health["ranks"]:
        lines.append(message("health_rank", lang, rank=r["rank"], phase=worded("rankphase", r["phase"], lang),
                             step=r["step"], since=f"{r['since_progress_s']:.0f}", host=r["host"], pid=r["pid"]))
    if health["restarts"]:
        lines.append(message("health_restarts", lang, n=health["restarts"]))
    for stall in health["stalls"]:
        lines.append(message("health_stall", lang, time=stall["time"],
                             ranks=", ".join(map(str, stall["stalled_ranks"] or [])),
                             phase=worded("rankphase", stall["phase"] or "?", lang), step=stall["step"],
                             folder=stall["folder"]))
    for r in health.get("reshards", []):  # the key only where the run resumed on another topology
        before, after = r.get("from_parallelism"), r.get("to_parallelism")
        lines.append(message("health_reshard", lang, step=r.get("step"), from_world=r.get("from_world"),
                             to_world=r.get("to_world"), strategy=f"{before} -> {after}" if before != after else after,
                             from_accum=r.get("from_grad_accum"), to_accum=r.get("to_grad_accum"),
                             batch=r.get("global_batch")))
    return "  \n".join(lines)


def progress_html(info, lang: str) -> str:
    """A progress bar with step, epoch, ETA and tokens/s, and the run's phase, in the page's language."""
    import html

    phase = worded("phase", info.phase or "unknown", lang)
    if info.reason:
        phase += f" ({html.escape(info.reason)})"
    parts = [f"<b class='run-phase'>{phase}</b>"]
    if info.step is not None:
        parts.append(message("progress_step", lang, step=info.step, total=info.total_steps or "?"))
    if info.epoch is not None:
        total = f"/{info.total_epochs:g}" if info.total_epochs else ""
        parts.append(message("progress_epoch", lang, epoch=f"{info.epoch:.2f}{total}"))
    if info.eta_s is not None:
        parts.append(message("progress_eta", lang, eta=runs._fmt_eta(info.eta_s)))
    elif info.phase == "training" and info.step_s is None:
        parts.append(message("progress_eta_measuring", lang))
    if info.step_s is not None:
        parts.append(message("progress_step_s", lang, seconds=f"{info.step_s:.2f}"))
    if info.tokens_per_s:
        parts.append(message("progress_tokens", lang, rate=f"{info.tokens_per_s:,.0f}"))
    fraction = 1.0 if info.phase == "finished" else (
        min(1.0, (info.step or 0) / info.total_steps) if info.total_steps else 0.0)
    return (f"<div id='run-progress-bar' data-step='{info.step if info.step is not None else ''}' "
            f"data-total='{info.total_steps or ''}' data-phase='{info.phase}' "
            "style='border:1px solid #ccc;border-radius:4px;height:14px;overflow:hidden'>"
            f"<div style='width:{fraction * 100:.1f}%;height:100%;background:#3b82f6'></div></div>"
            f"<div style='margin-top:4px'>{' · '.join(parts)}</div>")


def wire(page: Page, tab: RunsTab, *, app: gr.Blocks, timer: gr.Timer, chat_run: gr.Dropdown, eval_run: gr.Dropdown,
         compare_runs: gr.Dropdown, sweep_select: gr.Dropdown, sweep_table: gr.Code, sweep_plot: gr.Image,
         on_sweep: Callable) -> None:
    """Refresh on load, on every timer tick and on the button; the other tabs' selectors and the sweep report
    (``on_sweep``, the Compare tab's) are refreshed with the table."""
    root, on, run_path = page.root, page.on, page.run_path

    def refresh(selected, log_rel, metric, key, chat_selected, eval_selected, compare_selected, sweep_selected, lang,
                first: bool):
        """The runs table and every run selector, from the run dirs. Only the page's first load sets the
        selectors' values; later refreshes change their choices, never what the user picked (a refresh
        computed before a click must not undo it)."""
        infos = runs.scan(root)
        rels = [i.rel for i in infos]
        counts: dict = {}
        for i in infos:
            counts[i.state] = counts.get(i.state, 0) + 1
        text = message("runs_summary", lang, n=len(infos), root=root,
                       counts=", ".join(message("state_count", lang, n=n, state=state_word(s, lang).lower())
                                        for s, n in sorted(counts.items())))
        # a finished model, or a checkpoint of a stopped or running one: what chat and evaluate can load
        finished = [i.rel for i in infos if i.has_model or (i.path / "checkpoints").is_dir()]
        sweeps = [str(p.relative_to(root)) for p in runs.find_sweep_dirs(root)]
        def pick(options, current):
            """Keep the user's pick; fill an empty selector with the newest option."""
            if first or not current:
                return gr.update(choices=options, value=options[0] if options else None), (
                    options[0] if options else None)
            return gr.update(choices=options), current

        run_update, selected = pick(rels, None if first else selected)
        chat_update, _ = pick(finished, None if first else chat_selected)  # newest first: scan's order
        eval_update, _ = pick(finished, None if first else eval_selected)
        sweep_update, _ = pick(sweeps, None if first else sweep_selected)
        compare_update = gr.update(choices=rels, value=[]) if first else gr.update(choices=rels)
        _, sweep_now = pick(sweeps, None if first else sweep_selected)
        rows = runs.table_rows(infos)
        for r in rows:
            r[1] = state_word(r[1], lang)
        return ([text, runs_frame(rows, lang), run_update]
                + run_details(selected, None if first else log_rel, metric, key, lang, infos)
                + [chat_update, eval_update, compare_update, sweep_update] + list(on_sweep(sweep_now)))

    def on_load(*selected):
        return refresh(*selected, first=True)

    def on_tick(*selected):
        return refresh(*selected, first=False)

    def run_details(rel, log_rel, metric, key, lang, infos=None):
        """run info, progress, metric choices, plot (left alone when its rows did not move), plot key, log
        choices, log tail. ``log_rel`` None: the log that shows progress."""
        path = run_path(rel)
        if path is None:
            return ["", "", gr.update(choices=[plots.LOSS], value=plots.LOSS), None, "",
                    gr.update(choices=[], value=None), "", ""]
        info = next((i for i in (infos or runs.scan(root)) if i.rel == rel), None)
        lines = [f"**{rel}**"]
        if info is not None:
            step = f"{info.step if info.step is not None else '-'}" + (
                f"/{info.total_steps}" if info.total_steps else "")
            lines.append(message("run_state", lang, state=worded("state", info.state, lang))
                         + (message("run_job", lang, job_id=info.job_id) if info.job_id else "")
                         + message("run_step", lang, step=step)
                         + (message("run_loss", lang, loss=f"{info.loss:.4f}") if info.loss is not None else "")
                         + (message("run_eta", lang, eta=runs._fmt_eta(info.eta_s)) if info.eta_s is not None
                            else "")
                         + message("run_requeues", lang, requeues=info.requeues))
        logs = runs.log_files(path)
        best = runs.progress_log(path, logs)
        # Keep the file the user follows, except the launcher's own (it says only "point 0 started"): picked
        # while the run had no other log yet, it gives way to the run's log once that exists.
        log_rel = log_rel if log_rel in logs and log_rel != runs.LAUNCHER_LOG else best
        # Confined to the root, not the run dir: a sweep point's node logs link into its sweep dir.
        tail = runs.tail_text(runs.confine(root, str(path.relative_to(root) / log_rel))) if log_rel else ""
        records = plots.read_records(path)
        names = plots.metric_names(records)
        metric = metric if metric in names else plots.LOSS
        rows = plots.metric_rows(records, metric)
        new_key = json.dumps([rel, metric, lang, rows])
        plot = gr.update() if new_key == key else curve_chart(rows, metric, lang)
        bar = progress_html(info, lang) if info is not None else ""
        return ["  \n".join(lines), bar, gr.update(choices=metric_choices(names, lang), value=metric), plot, new_key,
                gr.update(choices=logs, value=log_rel), tail, health_markdown(path, lang)]

    details = [tab.run_info, tab.progress, tab.metric, tab.loss_plot, tab.plot_key, tab.log_select, tab.log_view,
               tab.health]
    refresh_outputs = [tab.summary, tab.table, tab.run_select, *details,
                       chat_run, eval_run, compare_runs, sweep_select, sweep_table, sweep_plot]
    refresh_inputs = [tab.run_select, tab.log_select, tab.metric, tab.plot_key, chat_run, eval_run, compare_runs, sweep_select]
    on(tab.refresh_btn.click, on_tick, refresh_inputs, refresh_outputs, show_progress="hidden")
    on(timer.tick, on_tick, refresh_inputs, refresh_outputs, show_progress="hidden")
    on(app.load, on_load, refresh_inputs, refresh_outputs, show_progress="hidden")
    on(tab.run_select.input, lambda rel, metric, key, lang: run_details(rel, None, metric, key, lang),
       [tab.run_select, tab.metric, tab.plot_key], details, show_progress="hidden")
    detail_inputs = [tab.run_select, tab.log_select, tab.metric, tab.plot_key]
    on(tab.log_select.input, run_details, detail_inputs, details, show_progress="hidden")
    on(tab.metric.input, run_details, detail_inputs, details, show_progress="hidden")

    def on_table_select(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.update()

    tab.table.select(on_table_select, None, tab.run_select, show_progress="hidden").then(
        None, None, [page.lang_box], js=LANG_JS, queue=False, show_progress="hidden").then(
        lambda rel, metric, key, lang: run_details(rel, None, metric, key, lang),
        [tab.run_select, tab.metric, tab.plot_key, page.lang_box], details, show_progress="hidden")

    def on_cancel(rel, lang):
        path = run_path(rel)
        if path is None:
            return message("no_run_selected", lang)
        try:
            return runs.cancel(path).text(lang)
        except Exception as exc:  # noqa: BLE001 - the page shows the one-line reason, never a bare "Error"
            return message("error", lang, detail=one_line(exc))

    on(tab.cancel_btn.click, on_cancel, [tab.run_select], [tab.cancel_result])

    def on_resume(rel, checkpoint, lang):
        """``launcher train <the run's overrides> run.resume=<checkpoint>``: a new run from that checkpoint."""
        from launcher.ui import actions

        path = run_path(rel)
        if path is None:
            return message("no_run_selected", lang)
        try:
            return actions.resume(path, root, None if checkpoint in (None, "", LATEST) else checkpoint).note.text(lang)
        except Exception as exc:  # noqa: BLE001
            return message("error", lang, detail=one_line(exc))

    on(tab.resume_btn.click, on_resume, [tab.run_select, tab.resume_checkpoint], [tab.cancel_result])

    def on_remove(rel, typed_name, lang):
        """Remove the run the browser's confirm() said yes to (``runs.remove_run`` refuses running runs, and
        runs with checkpoints or a model unless their name is typed)."""
        # The selector keeps the removed name: clearing it would fire on_pick, which clears this message.
        if not rel:
            return message("remove_not_confirmed", lang)
        path = run_path(rel)
        if path is None:
            return message("no_run_selected", lang)
        try:
            info = next((i for i in runs.scan(root) if i.path == path), None)
            return runs.remove_run(root, path, info.state if info else "UNKNOWN", typed_name).text(lang)
        except Exception as exc:  # noqa: BLE001
            return message("error", lang, detail=one_line(exc))

    tab.remove_btn.click(None, [tab.run_select], [tab.remove_confirmed], js=REMOVE_CONFIRM_JS, queue=False,
                         show_progress="hidden").then(
        None, None, [page.lang_box], js=LANG_JS, queue=False, show_progress="hidden").then(
        on_remove, [tab.remove_confirmed, tab.remove_name, page.lang_box], [tab.cancel_result])

    def on_pick(rel):
        from launcher.ui.after import checkpoints

        path = run_path(rel)
        return "", gr.update(choices=[LATEST] + (checkpoints(path) if path else []), value=LATEST)

    tab.run_select.change(on_pick, [tab.run_select], [tab.cancel_result, tab.resume_checkpoint], queue=False,
                          show_progress="hidden")
    # A message about one run is stale once another is picked (on_pick clears it).


def state_word(state: str, lang: str) -> str:
    """A SLURM/local state in the page's language (a state with no translation stays as SLURM wrote it)."""
    return worded("state", state, lang)
