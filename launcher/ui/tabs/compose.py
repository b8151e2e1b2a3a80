"""The Compose tab: pick groups and fields, preview the command and plan, submit, preview the data."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from launcher.errors import LauncherError
from launcher.ui import actions, form
from launcher.ui.i18n import Note, message
from launcher.ui.roots import check_overrides
from launcher.ui.tabs.page import Page, failure

DATA_PREVIEW_MAX = 20
AUDIO_PLAYERS = 4
"""Audio players the data preview has (a page's components are fixed; further audios are listed, not played)."""


def compose_defaults(groups: dict) -> dict:
    """The form fields' values that a choice of config groups gives."""
    from launcher.config.compose import compose_config
    from launcher.config.schema import config_to_dict

    overrides = form.group_overrides(groups)
    if groups.get("model") == "hf":  # its path is the form's to give (``???`` in the group)
        overrides.append("model.name_or_path=null")
    with actions.HYDRA_LOCK:
        return form.field_defaults(config_to_dict(compose_config(overrides, check=False)))


@dataclass
class ComposeTab:
    group_boxes: list
    field_boxes: list
    """One per ``form.FIELDS``, in that order."""
    section_rows: dict
    """{section: [gr.Row]}: the method rows are shown for the methods they apply to."""
    precision: gr.Markdown
    """The precision the run will really compute in (the dry run's line), beside the compute type."""
    run_name: gr.Textbox
    free: gr.Textbox
    sweep: gr.Textbox
    preview_btn: gr.Button
    submit_btn: gr.Button
    data_btn: gr.Button
    data_n: gr.Number
    status: gr.Textbox
    command: gr.Textbox
    verdict: gr.Textbox
    plan: gr.Code
    config_view: gr.Code
    data_stats: gr.Markdown
    data_text: gr.HighlightedText
    data_images: gr.Gallery
    data_videos: gr.Image
    """The videos' strips of sampled frames, one row each, in order."""
    data_video_notes: gr.Markdown
    """Per video, its row's caption: frames sampled, size, grid, video tokens."""
    data_audios: list
    """AUDIO_PLAYERS gr.Audio: the first audios as the model hears them, captioned with their counts."""
    args_path: gr.Textbox
    """Saved arguments: the YAML file Save writes and Load reads (``launcher train --args-file``); empty: the
    run name's file under ROOT/saved-args."""
    save_btn: gr.Button
    load_btn: gr.Button
    args_result: gr.Textbox


def field_box(t, f, value, model_choices: list, data_choices: list):
    """The box of one form field: a dropdown for choices (the model path and data folder accept any typed
    value; the datasets are a multi-select filled from the folder's dataset_info.json), a checkbox, a text
    box (strings and optional values: an empty Number box comes back as 0, not null) or a number box."""
    label, elem_id = t("field_" + f.key.replace(".", "_")), "field-" + f.key.replace(".", "-")
    if f.key == "model.name_or_path":
        return gr.Dropdown(model_choices, value=value or None, label=label, elem_id=elem_id, allow_custom_value=True,
                           scale=3)
    if f.key == "data.dataset_dir":
        return gr.Dropdown(list(dict.fromkeys([value] + data_choices)), value=value, label=label, elem_id=elem_id,
                           allow_custom_value=True, scale=2)
    if f.kind == "list":
        names = form.dataset_names(data_choices[0] if data_choices else "data")
        # any value: a pick that the newly typed folder lacks is dropped by on_folder, and a name typed by hand
        # is the preflight's to check (it names the dataset_info.json that lacks it)
        return gr.Dropdown(list(dict.fromkeys(names + list(value or []))), value=list(value or []), label=label,
                           elem_id=elem_id, multiselect=True, scale=2, allow_custom_value=True)
    if f.kind == "bool":
        return gr.Checkbox(value=value, label=label, elem_id=elem_id, min_width=120)
    if f.kind == "choice":
        return gr.Dropdown(list(f.choices), value=value, label=label, elem_id=elem_id)
    if f.kind in ("str", "modules", "words") or f.optional:
        return gr.Textbox(value="" if value is None else str(value), label=label, elem_id=elem_id)
    return gr.Number(value=value, label=label, precision=0 if f.kind == "int" else None, elem_id=elem_id)


def layout(t, options: dict, group_defaults: dict, initial: dict, model_choices: list = (),
           data_choices: list = ()) -> ComposeTab:
    """The tab's components; ``initial`` holds the fields' values for ``group_defaults``."""
    model_choices = list(model_choices)
    data_choices = list(dict.fromkeys([initial.get("data.dataset_dir") or "data"] + list(data_choices)))
    with gr.Tab(t("tab_compose"), id="compose", elem_id="tab-compose"):
        with gr.Row():
            group_boxes = [gr.Dropdown(options[g], value=group_defaults[g] or options[g][0], label=t(f"group_{g}"),
                                       elem_id=f"group-{g}", interactive=True) for g in form.GROUPS]
        by_key, section_rows = {}, {}
        method = group_defaults.get("method") or options["method"][0]
        for section in form.SECTIONS:
            fields = [f for f in form.FIELDS if form.section_of(f) == section]
            shown = any(form.applies(f, method) for f in fields)
            for chunk in range(0, len(fields), 6):
                with gr.Row(visible=shown, elem_id=f"row-{section}-{chunk // 6}") as row:
                    section_rows.setdefault(section, []).append(row)
                    for f in fields[chunk:chunk + 6]:
                        by_key[f.key] = field_box(t, f, initial[f.key], model_choices, data_choices)
                if section == "model":
                    precision = gr.Markdown(elem_id="precision-note")
        field_boxes = [by_key[f.key] for f in form.FIELDS]
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
        with gr.Row(equal_height=True):
            args_path = gr.Textbox(label=t("args_file"), elem_id="args-path", scale=3,
                                   placeholder="ROOT/saved-args/NAME.yaml")
            save_btn = gr.Button(t("args_save"), elem_id="args-save-btn", scale=0, min_width=120)
            load_btn = gr.Button(t("args_load"), elem_id="args-load-btn", scale=0, min_width=120)
            args_result = gr.Textbox(label=t("args_result"), interactive=False, elem_id="args-result", scale=3)
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
            # One image of the strips, one row per video (a Gallery of such wide images draws nothing in Gradio 6)
            data_videos = gr.Image(label=t("data_videos"), elem_id="data-videos", type="pil", interactive=False,
                                   visible=False, buttons=["fullscreen"])
            data_video_notes = gr.Markdown(elem_id="data-video-notes", visible=False)
            with gr.Row():
                data_audios = [gr.Audio(type="filepath", interactive=False, visible=False, elem_id=f"data-audio-{k}")
                               for k in range(AUDIO_PLAYERS)]
    return ComposeTab(group_boxes, field_boxes, section_rows, precision, run_name, free, sweep, preview_btn, submit_btn, data_btn, data_n,
                      status, command, verdict, plan, config_view, data_stats, data_text, data_images,
                      data_videos, data_video_notes, data_audios,
                      args_path, save_btn, load_btn, args_result)


def say(lang, note) -> str:
    return note.text(lang) if isinstance(note, Note) else str(note)


def wire(page: Page, tab: ComposeTab, last_defaults: gr.State, app: gr.Blocks) -> None:
    """Group picks refill the fields; preview, submit and data preview read the whole form."""
    root, on = page.root, page.on
    group_boxes, field_boxes = tab.group_boxes, tab.field_boxes

    def on_groups(last, *choices):
        """Fill the fields whose default the new group choice changes; leave the others as the user set them
        (and a repeated event for the same choice changes nothing)."""
        *choices, lang = choices
        groups = dict(zip(form.GROUPS, choices))
        rows = row_updates(groups.get("method"))
        try:
            defaults = compose_defaults(groups)
        except Exception as exc:  # noqa: BLE001
            return [last] + [gr.update() for _ in field_boxes] + rows + [failure(exc, lang)]

        updates = [gr.update(value=defaults[f.key]) if defaults[f.key] != (last or {}).get(f.key)
                   else gr.update() for f in form.FIELDS]
        return [defaults] + updates + rows + [""]

    all_rows = [row for section in form.SECTIONS for row in tab.section_rows.get(section, [])]

    def row_updates(method) -> list:
        """Each form row shown when one of its fields applies to ``method`` (LoRA keys for LoRA methods, a
        method block's keys for the methods that set it)."""
        out = []
        for section in form.SECTIONS:
            fields = [f for f in form.FIELDS if form.section_of(f) == section]
            visible = any(form.applies(f, method) for f in fields) if method else True
            out += [gr.update(visible=visible) for _ in tab.section_rows.get(section, [])]
        return out

    for box in group_boxes:  # one at a time, in order: the last pick's defaults win
        on(box.input, on_groups, [last_defaults] + group_boxes,
           [last_defaults] + field_boxes + all_rows + [tab.status], concurrency_limit=1, concurrency_id="groups")

    keys = [f.key for f in form.FIELDS]
    folder_box = field_boxes[keys.index("data.dataset_dir")]
    dataset_boxes = [field_boxes[keys.index("data.datasets")], field_boxes[keys.index("data.eval_datasets")]]

    def on_folder(folder, *picked):
        """A data folder's dataset_info.json entries offered in both pickers (picks it does not have dropped)."""
        *picked, lang = picked
        names = form.dataset_names(folder)
        return [gr.update(choices=names, value=[p for p in (chosen or []) if p in names]) for chosen in picked]

    on(folder_box.change, on_folder, [folder_box] + dataset_boxes, dataset_boxes, trigger_mode="always_last")

    def overrides_of(values: tuple) -> tuple:
        """(overrides, name) from the form; the UI's root is always the output root."""
        n = len(form.GROUPS)
        groups = dict(zip(form.GROUPS, values[:n]))
        fields = dict(zip([f.key for f in form.FIELDS], values[n:n + len(form.FIELDS)]))
        name, free_text, *sweep_text = values[n + len(form.FIELDS):]  # the data preview has no sweep box
        sweep_text = sweep_text[0] if sweep_text else ""
        overrides = form.form_overrides(groups, fields, free_text, compose_defaults(groups),
                                        defaults_for=compose_defaults)
        overrides += form.split_overrides(sweep_text) + [f"run.output_root={root}"]
        check_overrides(overrides, page.allowed)  # before any handler opens a file the form names
        return overrides, (name or "").strip() or None

    form_inputs = group_boxes + field_boxes + [tab.run_name, tab.free, tab.sweep]
    remember_form(app, form_inputs, last_defaults, all_rows, row_updates)
    wire_saved_args(page, tab, form_inputs, last_defaults, all_rows, row_updates, overrides_of)

    def on_preview(*values):
        *values, lang = values
        try:
            overrides, name = overrides_of(values)
            p = actions.preview(overrides, name)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is shown as its one line, never "Error"
            return failure(exc, lang), "", "", "", "", ""
        head = message("preview_ok", lang) if p.ok else message("preview_refused", lang, detail=p.error)
        precision = message("precision_note", lang, precision=p.precision) if p.precision else ""
        return head, p.command, "\n".join(say(lang, v) for v in p.verdict), p.plan, p.config_yaml, precision

    on(tab.preview_btn.click, on_preview, form_inputs,
       [tab.status, tab.command, tab.verdict, tab.plan, tab.config_view, tab.precision])

    def on_submit(*values):
        *values, lang = values
        overrides = []
        try:
            overrides, name = overrides_of(values)
            done = actions.submit(overrides, name)
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal, a config error, anything: its one line
            lines = [line for line in actions.redact(str(exc), overrides).splitlines() if line.strip()]
            first = lines[0] if lines else type(exc).__name__
            return message("error", lang, detail=first), "\n".join(lines[1:] + [message("nothing_queued", lang)])
        return done.note.text(lang), ""

    on(tab.submit_btn.click, on_submit, form_inputs, [tab.status, tab.verdict])

    def on_data_preview(*values, progress=gr.Progress()):
        """``launcher data preview``: the first rows tokenized, trained text highlighted, images shown."""
        *values, n, lang = values
        n = max(1, min(int(n or 3), DATA_PREVIEW_MAX))
        progress(0, desc=message("data_loading", lang))
        try:
            overrides, _ = overrides_of(values)
            shown = actions.data_preview(overrides, n)
        except Exception as exc:  # noqa: BLE001
            return (failure(exc, lang), None, *[gr.update(value=None, visible=False)] * (3 + AUDIO_PLAYERS))
        trained = message("data_trained", lang)
        spans = []
        for sample in shown.samples:
            side = f" ({sample.side})" if sample.side else ""
            head = message("data_sample", lang, index=sample.index, side=side, tokens=sample.tokens,
                           trained=sample.trained)
            if sample.images:
                head += message("data_images", lang, count=len(sample.images))
            if sample.videos:
                head += message("data_videos", lang, count=len(sample.videos))
            if sample.audios:
                head += message("data_audios", lang, count=len(sample.audios))
            spans.append((("\n" if spans else "") + f"── {head} ──\n", None))
            spans += [(text, trained if is_trained else None) for text, is_trained in sample.spans]
        stats = "  ".join(f"{k}={v}" for k, v in shown.stats.items()
                          if k not in ("template_note", "cache_key") and v is not None)
        if shown.stats.get("template_note"):
            stats += "  \n" + str(shown.stats["template_note"])
        gallery = [(image, note.text(lang)) for image, note in shown.images if image is not None]
        strips = [(strip, note.text(lang)) for strip, note in shown.videos if strip is not None]
        notes = "  \n".join(f"[{k + 1}] {caption}" for k, (_, caption) in enumerate(strips))
        clips = [(path, note.text(lang)) for path, note in shown.audios if path is not None]
        problems = [note.text(lang) for item, note in shown.images + shown.videos + shown.audios if item is None]
        if len(clips) > AUDIO_PLAYERS:
            problems += [note for _, note in clips[AUDIO_PLAYERS:]]
            problems.append(message("data_audio_more", lang, shown=AUDIO_PLAYERS, count=len(clips)))
        players = [gr.update(value=path, label=caption, visible=True) for path, caption in clips[:AUDIO_PLAYERS]]
        players += [gr.update(value=None, visible=False)] * (AUDIO_PLAYERS - len(players))
        text = message("data_stats", lang, count=len(shown.samples), stats=stats)
        return ("  \n".join([text] + problems), spans, gr.update(value=gallery or None, visible=bool(gallery)),
                gr.update(value=actions.stack_strips([strip for strip, _ in strips]) if strips else None,
                          visible=bool(strips)),
                gr.update(value=notes, visible=bool(strips)), *players)

    on(tab.data_btn.click, on_data_preview, form_inputs[:-1] + [tab.data_n],
       [tab.data_stats, tab.data_text, tab.data_images, tab.data_videos, tab.data_video_notes, *tab.data_audios])


FORM_STORE = "launcher-ui-form"
"""The browser's localStorage key holding the form (``gr.BrowserState``): a reload shows it as it was."""


def form_keys() -> list:
    """One name per form input, in ``form_inputs`` order."""
    return [f"group:{g}" for g in form.GROUPS] + [f.key for f in form.FIELDS] + ["run_name", "free", "sweep"]


def remember_form(app: gr.Blocks, form_inputs: list, last_defaults: gr.State, all_rows: list, row_updates) -> None:
    """Every change of the form is kept in the browser; a page load puts it back (groups, fields, the rows
    the method shows, the defaults the next group pick compares against)."""
    keys = form_keys()
    saved = gr.BrowserState({}, storage_key=FORM_STORE)

    def remember(*values):
        return dict(zip(keys, values))

    for box in form_inputs:
        box.change(remember, form_inputs, [saved], queue=False, show_progress="hidden")

    def restore(stored):
        return form_updates(stored, form_inputs, len(all_rows), row_updates)

    app.load(restore, [saved], [last_defaults] + form_inputs + all_rows, show_progress="hidden")


def form_updates(stored: dict, form_inputs: list, n_rows: int, row_updates) -> list:
    """[defaults, one update per form input, the rows' visibility] that put ``stored`` ({``form_keys()``:
    value}) into the form; no change where ``stored`` is empty or was kept by a form of other fields."""
    keys = form_keys()
    if not stored or set(stored) != set(keys):
        return [gr.update()] * (1 + len(form_inputs) + n_rows)
    groups = {g: stored[f"group:{g}"] for g in form.GROUPS}
    try:
        defaults = compose_defaults(groups)
    except Exception:  # noqa: BLE001 - a kept group that conf/ no longer has: start afresh
        return [gr.update()] * (1 + len(form_inputs) + n_rows)
    updates = []
    for key, box in zip(keys, form_inputs):
        value = stored[key]
        if key in ("data.datasets", "data.eval_datasets"):
            names = form.dataset_names(stored.get("data.dataset_dir") or "")
            updates.append(gr.update(choices=list(dict.fromkeys(names + list(value or []))), value=value))
        else:
            updates.append(gr.update(value=value))
    return [defaults] + updates + row_updates(groups.get("method"))


SAVED_ARGS_DIR = "saved-args"
"""Where Save writes when no file is named: ROOT/saved-args/<run name or 'form'>.yaml."""


def saved_args_path(root, typed: str, name: str):
    """The file Save writes: the typed path (relative: under the root), else the run name's under the root."""
    from pathlib import Path

    typed = (typed or "").strip()
    if not typed:
        stem = form.model_short_name((name or "").strip() or "form")
        return Path(root) / SAVED_ARGS_DIR / f"{stem}.yaml"
    path = Path(typed).expanduser()
    return path if path.is_absolute() else Path(root) / path


def wire_saved_args(page: Page, tab: ComposeTab, form_inputs: list, last_defaults: gr.State, all_rows: list,
                    row_updates, overrides_of) -> None:
    """Save: the form's overrides (as Preview and Submit compose them) to a YAML file that ``launcher train
    --args-file`` runs; Load: such a file back into the form (its groups and fields in their boxes, the rest
    in the free and sweep boxes)."""
    from launcher.config.args_file import read_args_file, write_args_file

    root = page.root
    n = len(form.GROUPS) + len(form.FIELDS)

    def on_save(path_text, *values):
        *values, lang = values
        try:
            overrides, name = overrides_of(values)
            sweep = form.split_overrides(values[-1])
            plain = overrides[:len(overrides) - len(sweep) - 1] + overrides[-1:]  # the grid kept apart
            path = page.allowed.check(saved_args_path(root, path_text, name), "saved arguments file")
            write_args_file(path, plain, name, sweep)
        except Exception as exc:  # noqa: BLE001
            return gr.update(), failure(exc, lang)
        return str(path), message("args_saved", lang, path=path)

    page.on(tab.save_btn.click, on_save, [tab.args_path] + form_inputs, [tab.args_path, tab.args_result])

    def on_load(path_text, name, lang):
        """The named file, else the one Save writes for the run name in the form."""
        nothing = [gr.update()] * (1 + len(form_inputs) + len(all_rows))
        try:
            path = page.allowed.check(saved_args_path(root, path_text, name), "saved arguments file")
            saved = read_args_file(path)
            with actions.HYDRA_LOCK:
                groups, values, free = form.form_from_overrides(saved.overrides, compose_defaults,
                                                                ignore_keys=("run.output_root",))
        except Exception as exc:  # noqa: BLE001
            return nothing + [failure(exc, lang)]
        stored = {f"group:{g}": groups[g] for g in form.GROUPS}
        stored.update({f.key: values[f.key] for f in form.FIELDS})
        stored.update(run_name=saved.name or "", free=form.join_overrides(free),
                      sweep=form.join_overrides(saved.sweep))
        return form_updates(stored, form_inputs, len(all_rows), row_updates) + [message("args_loaded", lang, path=path)]

    page.on(tab.load_btn.click, on_load, [tab.args_path, tab.run_name], [last_defaults] + form_inputs + all_rows + [tab.args_result])
