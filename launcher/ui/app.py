"""The Gradio Blocks of ``launcher ui``: Compose, Runs, Compare, Chat (one module each in ``launcher.ui.tabs``).

Every handler calls ``launcher.ui.actions`` / ``runs`` / ``after``, which call the CLI's functions. The app
keeps no state of its own: the Runs tab is rebuilt from the run dirs on every load and every timer tick.
Labels are keys of ``launcher.ui.i18n`` (English and Chinese; the browser's language or Gradio's settings
panel picks one). Handler messages follow the same switch: each event first reads the page's language in the
browser (``tabs.page.LANG_JS``) into a hidden box, then runs its handler with it (``i18n.message``,
``i18n.Note``).
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from launcher.ui import form
from launcher.ui.i18n import build_i18n
from launcher.ui.tabs import chat, compare, compose, evaluate, runs
from launcher.ui.tabs.page import LANG_CHOICES, RESTORE_JS, SWITCH_JS, Page

REFRESH_S = 2.0


def build_app(root: Path, data_roots: tuple = ()) -> "gr.Blocks":
    """The app for runs under ``root`` (created when missing); ``root`` is forced as run.output_root. Handlers
    open files only under ``root``, ``data_roots``, conf/data's data folders and the upload folder."""
    from launcher.ui.roots import default_roots

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    allowed = default_roots(root, tuple(data_roots) + tuple(form.data_folders()))
    t = build_i18n()
    group_defaults = form.default_groups()
    initial = compose.compose_defaults(group_defaults)  # at start, not on page load: a late load would undo a pick

    with gr.Blocks(title="launcher") as app:
        with gr.Row(equal_height=True):
            gr.Markdown(t("title"))
            lang_switch = gr.Radio(list(LANG_CHOICES), value=LANG_CHOICES[0], show_label=False, container=False,
                                   elem_id="lang-switch", scale=0, min_width=200)
        timer = gr.Timer(REFRESH_S)  # outside the tabs: a tab's components start only once the tab is opened
        with gr.Tabs():
            compose_tab = compose.layout(t, form.group_options(), group_defaults, initial,
                                         model_choices=form.local_models(root), data_choices=form.data_folders())
            runs_tab = runs.layout(t)
            compare_tab = compare.layout(t)
            chat_tab = chat.layout(t)
            evaluate_tab = evaluate.layout(t)

        last_defaults = gr.State(initial)
        page = Page(root, gr.Textbox(value="en", visible=False, elem_id="page-lang"), allowed)
        on_sweep = compare.sweep_report(root)
        compose.wire(page, compose_tab, last_defaults, app)
        runs.wire(page, runs_tab, app=app, timer=timer, chat_run=chat_tab.chat_run, eval_run=evaluate_tab.run,
                  compare_runs=compare_tab.compare_runs, sweep_select=compare_tab.sweep_select,
                  sweep_table=compare_tab.sweep_table, sweep_plot=compare_tab.sweep_plot, on_sweep=on_sweep)
        compare.wire(page, compare_tab, on_sweep)
        chat.wire(page, chat_tab)
        evaluate.wire(page, evaluate_tab)
        # The switch sets Gradio's own language (every label) and the page's (every handler's text), and is
        # remembered in the browser; the next refresh (at most REFRESH_S) words the tables and states anew.
        lang_switch.input(None, [lang_switch], [lang_switch], js=SWITCH_JS, queue=False)
        app.load(None, None, [lang_switch], js=RESTORE_JS, queue=False)
    app.launcher_i18n = t.i18n  # launch(i18n=...) needs it
    return app
