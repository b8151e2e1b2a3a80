"""The Gradio Blocks of ``launcher ui``: Compose, Runs, Compare, Chat. Layout and wiring only.

Every handler calls ``launcher.ui.actions`` / ``runs`` / ``after``, which call the CLI's functions. The app
keeps no state of its own: the Runs tab is rebuilt from the run dirs on every load and every timer tick.
Labels are keys of ``launcher.ui.i18n`` (English and Chinese; the browser's language or Gradio's settings
panel picks one). Handler messages follow the same switch: each event first reads the page's language in the
browser (``LANG_JS``) into a hidden box, then runs its handler with it (``i18n.message``, ``i18n.Note``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import gradio as gr

from launcher.errors import LauncherError
from launcher.ui import actions, after, form, runs
from launcher.ui.i18n import Note, build_i18n, message

REFRESH_S = 3.0
LANG_JS = "() => document.documentElement.lang || navigator.language || 'en'"
"""The page's language as Gradio's language switch (or the browser) set it: svelte-i18n writes it to <html lang>."""
DATA_PREVIEW_MAX = 20


def _compose_defaults(groups: dict) -> dict:
    from launcher.config.compose import compose_config
    from launcher.config.schema import config_to_dict

    with actions.HYDRA_LOCK:
        return form.field_defaults(config_to_dict(compose_config(form.group_overrides(groups))))


def _plot_frame(rows: list):
    """Curve points as a typed frame; None when there are none (a plot that starts from an empty frame draws
    no lines for later values: Gradio 6 fixes the colour domain at the first value)."""
    if not rows:
        return None
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "string"})


def runs_frame(rows: list, lang: str):
    """The runs table with its column names in the page's language."""
    import pandas as pd

    headers = message("table_headers", lang).split("|")
    return pd.DataFrame(rows, columns=headers).astype("string")


def build_app(root: Path, data_roots: tuple = ()) -> "gr.Blocks":
    """The app for runs under ``root`` (created when missing); ``root`` is forced as run.output_root. Handlers
    open files only under ``root``, ``data_roots``, conf/data's data folders and the upload folder."""
    from launcher.ui.roots import check_overrides, default_roots

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    allowed = default_roots(root, data_roots)
    t = build_i18n()
    options = form.group_options()
    group_defaults = form.default_groups()
    initial = _compose_defaults(group_defaults)  # at start, not on page load: a late load event would undo a pick

    with gr.Blocks(title="launcher") as app:
        gr.Markdown(t("title"))
        timer = gr.Timer(REFRESH_S)  # outside the tabs: a tab's components start only once the tab is opened
        with gr.Tabs():
            # ------------------------------------------------------------------------------ compose
            with gr.Tab(t("tab_compose"), id="compose", elem_id="tab-compose"):
                with gr.Row():
                    group_boxes = [gr.Dropdown(options[g], value=group_defaults[g] or options[g][0], label=t(f"group_{g}"),
                                               elem_id=f"group-{g}", interactive=True) for g in form.GROUPS]
                field_boxes = []
                for chunk in range(0, len(form.FIELDS), 6):
                    with gr.Row():
                        for f in form.FIELDS[chunk:chunk + 6]:
                            label, elem_id = t("field_" + f.key.replace(".", "_")), "field-" + f.key.replace(".", "-")
                            value = initial[f.key]
                            if f.kind == "bool":
                                box = gr.Checkbox(value=value, label=label, elem_id=elem_id)
                            elif f.kind == "choice":
                                box = gr.Dropdown(list(f.choices), value=value, label=label, elem_id=elem_id)
                            elif f.kind == "str" or f.optional:  # an empty Number box comes back as 0, not null
                                box = gr.Textbox(value="" if value is None else str(value), label=label,
                                                 elem_id=elem_id)
                            else:
                                box = gr.Number(value=value, label=label, precision=0 if f.kind == "int" else None,
                                                elem_id=elem_id)
                            field_boxes.append(box)
                with gr.Row():
                    run_name = gr.Textbox(label=t("run_name"), elem_id="run-name", scale=1)
                    free = gr.Textbox(label=t("overrides"), placeholder="train.log_every=1 data.max_samples=100",
                                      lines=2, elem_id="overrides", scale=3)
                    sweep = gr.Textbox(label=t("sweep"), placeholder="method.lr=1e-3,2e-3 method.lora.r=4,8",
                                       lines=2, elem_id="sweep", scale=2)
                with gr.Row():
                    preview_btn = gr.Button(t("preview"), variant="secondary", elem_id="preview-btn")
                    submit_btn = gr.Button(t("submit"), variant="primary", elem_id="submit-btn")
                    data_btn = gr.Button(t("data_preview_btn"), variant="secondary", elem_id="data-preview-btn")
                    data_n = gr.Number(value=3, precision=0, minimum=1, maximum=DATA_PREVIEW_MAX, label=t("data_n"),
                                       elem_id="data-n", scale=0, min_width=120)
                status = gr.Textbox(label=t("status"), interactive=False, elem_id="compose-status", lines=2)
                command = gr.Textbox(label=t("command"), interactive=False, elem_id="command", buttons=["copy"])
                verdict = gr.Textbox(label=t("preflight"), interactive=False, elem_id="verdict", lines=3)
                with gr.Row():
                    plan = gr.Code(label=t("plan"), language="shell", interactive=False, elem_id="plan")
                    config_view = gr.Code(label=t("resolved_config"), language="yaml", interactive=False,
                                          elem_id="resolved-config")
                with gr.Accordion(t("data_preview"), open=True, elem_id="data-preview-box"):
                    data_stats = gr.Markdown(elem_id="data-stats")
                    data_text = gr.HighlightedText(label=t("data_preview_text"), elem_id="data-preview",
                                                   combine_adjacent=False, show_legend=False,
                                                   color_map={message("data_trained", lang): "green"
                                                              for lang in ("en", "zh-CN")})
                    data_images = gr.Gallery(label=t("data_images"), elem_id="data-images", columns=4, height=260,
                                             interactive=False, visible=False)  # shown for rows with images

            # --------------------------------------------------------------------------------- runs
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
                loss_plot = gr.LinePlot(_plot_frame([]), x="step", y="loss", color="series", label=t("loss_curve"),
                                        elem_id="loss-plot", height=300)
                with gr.Row():
                    log_select = gr.Dropdown([], label=t("log_file"), elem_id="log-select")
                log_view = gr.Textbox(label=t("log_tail"), lines=12, max_lines=20, interactive=False,
                                      elem_id="log-tail", autoscroll=True)

            # ------------------------------------------------------------------------------ compare
            with gr.Tab(t("tab_compare"), id="compare", elem_id="tab-compare"):
                compare_runs = gr.Dropdown([], multiselect=True, label=t("compare_runs"), elem_id="compare-runs")
                compare_plot = gr.LinePlot(_plot_frame([]), x="step", y="loss", color="series",
                                           label=t("compare_plot"), elem_id="compare-plot", height=320)
                sweep_select = gr.Dropdown([], label=t("sweep_dir"), elem_id="sweep-select")
                sweep_table = gr.Code(label=t("sweep_report"), language=None, interactive=False, elem_id="sweep-table")
                sweep_plot = gr.Image(label=t("sweep_plot"), elem_id="sweep-plot", interactive=False, height=320)

            # --------------------------------------------------------------------------------- chat
            with gr.Tab(t("tab_chat"), id="chat", elem_id="tab-chat"):
                with gr.Row():
                    chat_run = gr.Dropdown([], label=t("chat_run"), elem_id="chat-run", scale=3)
                    with_base = gr.Checkbox(label=t("with_base"), value=True, elem_id="with-base", scale=1)
                system = gr.Textbox(label=t("system_prompt"), elem_id="system-prompt")
                with gr.Row():
                    bot = gr.Chatbot(label=t("trained_model"), elem_id="chat-trained", height=300)
                    base_bot = gr.Chatbot(label=t("base_model"), elem_id="chat-base", height=300)
                with gr.Row():
                    message_box = gr.Textbox(label=t("message"), elem_id="chat-message", scale=4)
                    chat_image = gr.Image(label=t("chat_image"), type="filepath", sources=["upload"],
                                          elem_id="chat-image", height=140, scale=1)
                    send_btn = gr.Button(t("send"), variant="primary", elem_id="send-btn", scale=0)
                    clear_btn = gr.Button(t("clear"), elem_id="clear-btn", scale=0)
                chat_status = gr.Markdown(elem_id="chat-status")
                gr.Markdown(t("after_help"))
                with gr.Row():
                    export_btn = gr.Button(t("export"), elem_id="export-btn")
                    predict_limit = gr.Number(value=20, precision=0, label=t("predict_limit"), elem_id="predict-limit")
                    predict_btn = gr.Button(t("predict"), elem_id="predict-btn")
                after_out = gr.Textbox(label=t("after_result"), lines=4, interactive=False, elem_id="after-result")

        # ================================================================================== handlers

        last_defaults = gr.State(initial)
        lang_box = gr.Textbox(value="en", visible=False, elem_id="page-lang")

        def on(trigger, fn, inputs, outputs, **kwargs):
            """``trigger(fn, inputs + [page language], outputs)``: the language is read in the browser first."""
            return trigger(None, None, [lang_box], js=LANG_JS, queue=False, show_progress="hidden").then(
                fn, list(inputs) + [lang_box], outputs, **kwargs)

        def say(lang, note) -> str:
            return note.text(lang) if isinstance(note, Note) else str(note)

        def on_groups(last, *choices):
            """Fill the fields whose default the new group choice changes; leave the others as the user set them
            (and a repeated event for the same choice changes nothing)."""
            *choices, lang = choices
            groups = dict(zip(form.GROUPS, choices))
            try:
                defaults = _compose_defaults(groups)
            except LauncherError as exc:
                return [last] + [gr.update() for _ in field_boxes] + [message("error", lang, detail=exc)]
            def shown(f, value):
                return ("" if value is None else str(value)) if f.kind == "str" or f.optional else value

            updates = [gr.update(value=shown(f, defaults[f.key])) if defaults[f.key] != (last or {}).get(f.key)
                       else gr.update() for f in form.FIELDS]
            return [defaults] + updates + [""]

        for box in group_boxes:  # one at a time, in order: the last pick's defaults win
            on(box.input, on_groups, [last_defaults] + group_boxes, [last_defaults] + field_boxes + [status],
               concurrency_limit=1, concurrency_id="groups")

        def overrides_of(values: tuple) -> tuple:
            """(overrides, name) from the form; the UI's root is always the output root."""
            n = len(form.GROUPS)
            groups = dict(zip(form.GROUPS, values[:n]))
            fields = dict(zip([f.key for f in form.FIELDS], values[n:n + len(form.FIELDS)]))
            name, free_text, *sweep_text = values[n + len(form.FIELDS):]  # the data preview has no sweep box
            sweep_text = sweep_text[0] if sweep_text else ""
            overrides = form.form_overrides(groups, fields, free_text, _compose_defaults(groups))
            overrides += form.split_overrides(sweep_text) + [f"run.output_root={root}"]
            check_overrides(overrides, allowed)  # before any handler opens a file the form names
            return overrides, (name or "").strip() or None

        form_inputs = group_boxes + field_boxes + [run_name, free, sweep]

        def on_preview(*values):
            *values, lang = values
            try:
                overrides, name = overrides_of(values)
            except LauncherError as exc:
                return message("error", lang, detail=exc), "", "", "", ""
            p = actions.preview(overrides, name)
            head = message("preview_ok", lang) if p.ok else message("preview_refused", lang, detail=p.error)
            return head, p.command, "\n".join(say(lang, v) for v in p.verdict), p.plan, p.config_yaml

        on(preview_btn.click, on_preview, form_inputs, [status, command, verdict, plan, config_view])

        def on_submit(*values):
            *values, lang = values
            overrides = []
            try:
                overrides, name = overrides_of(values)
                done = actions.submit(overrides, name)
            except LauncherError as exc:
                lines = actions.redact(str(exc), overrides).splitlines()
                return message("error", lang, detail=lines[0]), "\n".join(lines[1:] + [message("nothing_queued", lang)])
            return done.note.text(lang), ""

        on(submit_btn.click, on_submit, form_inputs, [status, verdict])

        def on_data_preview(*values, progress=gr.Progress()):
            """``launcher data preview``: the first rows tokenized, trained text highlighted, images shown."""
            *values, n, lang = values
            n = max(1, min(int(n or 3), DATA_PREVIEW_MAX))
            progress(0, desc=message("data_loading", lang))
            try:
                overrides, _ = overrides_of(values)
                shown = actions.data_preview(overrides, n)
            except LauncherError as exc:
                return message("error", lang, detail=exc), None, gr.update(value=None, visible=False)
            trained = message("data_trained", lang)
            spans = []
            for sample in shown.samples:
                side = f" ({sample.side})" if sample.side else ""
                head = message("data_sample", lang, index=sample.index, side=side, tokens=sample.tokens,
                               trained=sample.trained)
                if sample.images:
                    head += message("data_images", lang, count=len(sample.images))
                spans.append((("\n" if spans else "") + f"── {head} ──\n", None))
                spans += [(text, trained if is_trained else None) for text, is_trained in sample.spans]
            stats = "  ".join(f"{k}={v}" for k, v in shown.stats.items()
                              if k not in ("template_note", "cache_key") and v is not None)
            if shown.stats.get("template_note"):
                stats += "  \n" + str(shown.stats["template_note"])
            gallery = [(image, note.text(lang)) for image, note in shown.images if image is not None]
            problems = [note.text(lang) for image, note in shown.images if image is None]
            text = message("data_stats", lang, count=len(shown.samples), stats=stats)
            return "  \n".join([text] + problems), spans, gr.update(value=gallery or None, visible=bool(gallery))

        on(data_btn.click, on_data_preview, form_inputs[:-1] + [data_n], [data_stats, data_text, data_images])

        def run_path(rel: Optional[str]) -> Optional[Path]:
            if not rel:
                return None
            path = runs.confine(root, rel)
            return path if (path / "config.yaml").is_file() else None

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
                return ["", _plot_frame([]), gr.update(choices=[], value=None), ""]
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
            return ["  \n".join(lines), _plot_frame(runs.curves(path)), gr.update(choices=logs, value=log_rel), tail]

        refresh_outputs = [summary, table, run_select, run_info, loss_plot, log_select, log_view,
                           chat_run, compare_runs, sweep_select, sweep_table, sweep_plot]
        refresh_inputs = [run_select, log_select, chat_run, compare_runs, sweep_select]
        on(refresh_btn.click, on_tick, refresh_inputs, refresh_outputs, show_progress="hidden")
        on(timer.tick, on_tick, refresh_inputs, refresh_outputs, show_progress="hidden")
        on(app.load, on_load, refresh_inputs, refresh_outputs, show_progress="hidden")
        on(run_select.input, lambda rel, lang: run_details(rel, None, lang), [run_select],
           [run_info, loss_plot, log_select, log_view], show_progress="hidden")
        on(log_select.input, run_details, [run_select, log_select], [run_info, loss_plot, log_select, log_view],
           show_progress="hidden")

        def on_table_select(evt: gr.SelectData):
            return evt.row_value[0] if evt.row_value else gr.update()

        table.select(on_table_select, None, run_select, show_progress="hidden").then(
            None, None, [lang_box], js=LANG_JS, queue=False, show_progress="hidden").then(
            lambda rel, lang: run_details(rel, None, lang), [run_select, lang_box],
            [run_info, loss_plot, log_select, log_view], show_progress="hidden")

        def on_cancel(rel, lang):
            path = run_path(rel)
            return runs.cancel(path).text(lang) if path else message("no_run_selected", lang)

        on(cancel_btn.click, on_cancel, [run_select], [cancel_result])

        def on_compare(selected):
            rows = []
            for rel in selected or []:
                path = run_path(rel)
                if path is not None:
                    rows += [{**r, "series": f"{rel} {r['series']}"} for r in runs.curves(path)]
            return _plot_frame(rows)

        compare_runs.change(on_compare, [compare_runs], [compare_plot])

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

        sweep_select.change(on_sweep, [sweep_select], [sweep_table, sweep_plot])

        conversations = gr.State({})
        """{"trained"|"base": after.new_conversation()}: what each model's ChatSession keeps between turns."""

        def on_send(rel, text, image, system_text, history, base_history, compare_base, convs, lang):
            path = run_path(rel)
            history, base_history = list(history or []), list(base_history or [])
            convs = {k: dict(v) for k, v in (convs or {}).items()}
            if path is None or not (text or "").strip():
                yield history, base_history, text, convs, "", gr.update()
                return
            text = text.strip()
            kept = None
            if image:
                try:
                    image = str(allowed.check(image, "chat image"))
                except LauncherError as exc:
                    yield history, base_history, text, convs, message("image_unreadable", lang, detail=exc), gr.update()
                    return
                if not after.run_sees_images(path):
                    from launcher.config.schema import load_run_config

                    model_name = load_run_config(path).model.name
                    yield (history, base_history, text, convs,
                           message("image_refused", lang, run=rel, model=model_name), gr.update())
                    return
                try:
                    kept = after.keep_image(path, image)
                except LauncherError as exc:
                    yield history, base_history, text, convs, message("image_unreadable", lang, detail=exc), gr.update()
                    return
            targets = [(False, history)] + ([(True, base_history)] if compare_base else [])
            try:
                for base, shown in targets:
                    conversation = convs.setdefault("base" if base else "trained", after.new_conversation())
                    if kept:
                        shown.append({"role": "user", "content": {"path": image}})
                    shown.append({"role": "user", "content": text})
                    shown.append({"role": "assistant", "content": ""})
                    for partial in after.stream_reply(path, conversation, text, system_text, base=base, image=kept):
                        shown[-1] = {"role": "assistant", "content": partial or "…"}
                        yield history, base_history, "", convs, "", None
                    if not shown[-1]["content"].strip("…"):
                        shown[-1] = {"role": "assistant", "content": message("empty_answer", lang)}
                    yield history, base_history, "", convs, "", None
            except LauncherError as exc:
                raise gr.Error(message("error", lang, detail=exc))

        send_inputs = [chat_run, message_box, chat_image, system, bot, base_bot, with_base, conversations]
        send_outputs = [bot, base_bot, message_box, conversations, chat_status, chat_image]
        on(send_btn.click, on_send, send_inputs, send_outputs)
        on(message_box.submit, on_send, send_inputs, send_outputs)
        clear_btn.click(lambda: ([], [], {}, ""), None, [bot, base_bot, conversations, chat_status])
        chat_run.input(lambda _: ([], [], {}, ""), [chat_run], [bot, base_bot, conversations, chat_status])

        def on_export(rel, lang, progress=gr.Progress()):
            path = run_path(rel)
            if path is None:
                return message("no_finished_run", lang)
            progress(0.1, desc=message("exporting", lang))
            try:
                return after.export(path).text(lang)
            except LauncherError as exc:
                return message("error", lang, detail=exc)

        def on_predict(rel, limit, lang, progress=gr.Progress(track_tqdm=True)):
            path = run_path(rel)
            if path is None:
                return message("no_finished_run", lang)
            progress(0, desc=message("loading_model", lang))
            try:
                from launcher.config.schema import load_run_config
                from launcher.ui.roots import check_config

                check_config(load_run_config(path), allowed, data_only=True)  # predict reads the run's eval data
                m = after.predict(path, limit=int(limit) if limit else None)
            except LauncherError as exc:
                return message("error", lang, detail=exc)
            scores = ", ".join(f"{k} {m[k]:.2f}" for k in ("rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match"))
            return message("predicted", lang, dataset=m["dataset"], n=m["n"], scores=scores, out=m["output_dir"])

        on(export_btn.click, on_export, [chat_run], [after_out])
        on(predict_btn.click, on_predict, [chat_run, predict_limit], [after_out])
    app.launcher_i18n = t.i18n  # launch(i18n=...) needs it
    return app
