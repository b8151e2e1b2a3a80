"""The Evaluate & export tab: score a run (or one of its checkpoints) on its held-out data or picked datasets
(``launcher predict``), and export it as a Hugging Face folder or a GGUF file (``launcher export``).

Each button calls ``launcher.ui.after``, which calls the CLI's own functions with the CLI's arguments."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from launcher.ui import after
from launcher.ui.i18n import message
from launcher.ui.tabs.page import Page, failure

FINAL = "final"
"""The checkpoint choice that means the run's final model."""
SCORES = ("rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match")


@dataclass
class EvaluateTab:
    run: gr.Dropdown
    checkpoint: gr.Dropdown
    datasets: gr.Dropdown
    limit: gr.Number
    batch_size: gr.Number
    max_new_tokens: gr.Number
    temperature: gr.Number
    top_p: gr.Number
    predict_btn: gr.Button
    result: gr.Textbox
    scores: gr.Dataframe
    predictions: gr.File
    export_dir: gr.Textbox
    shard_size: gr.Textbox
    export_dtype: gr.Dropdown
    gguf_dtype: gr.Dropdown
    overwrite: gr.Checkbox
    export_btn: gr.Button
    gguf_btn: gr.Button
    export_result: gr.Textbox


def layout(t) -> EvaluateTab:
    with gr.Tab(t("tab_evaluate"), id="evaluate", elem_id="tab-evaluate"):
        with gr.Row():
            run = gr.Dropdown([], label=t("eval_run"), elem_id="eval-run", scale=3)
            checkpoint = gr.Dropdown([FINAL], value=FINAL, label=t("checkpoint"), elem_id="eval-checkpoint", scale=1)
            datasets = gr.Dropdown([], value=[], multiselect=True, label=t("eval_datasets"), elem_id="eval-datasets",
                                   scale=2)
        with gr.Row():
            limit = gr.Number(value=20, precision=0, label=t("predict_limit"), elem_id="predict-limit")
            batch_size = gr.Number(value=8, precision=0, minimum=1, label=t("batch_size"), elem_id="eval-batch-size")
            max_new_tokens = gr.Number(value=64, precision=0, minimum=1, label=t("max_new_tokens"),
                                       elem_id="eval-max-new-tokens")
            temperature = gr.Number(value=0.0, minimum=0, label=t("temperature"), elem_id="eval-temperature")
            top_p = gr.Number(value=0.7, minimum=0, maximum=1, label=t("top_p"), elem_id="eval-top-p")
        predict_btn = gr.Button(t("predict"), variant="primary", elem_id="predict-btn")
        result = gr.Textbox(label=t("after_result"), lines=2, interactive=False, elem_id="after-result")
        scores = gr.Dataframe(headers=list(SCORES), interactive=False, elem_id="eval-scores", label=t("scores"))
        predictions = gr.File(label=t("predictions_file"), elem_id="predictions-file", interactive=False)
        gr.Markdown(t("export_help"))
        with gr.Row():
            export_dir = gr.Textbox(label=t("export_dir"), placeholder="RUN_DIR/export", elem_id="export-dir", scale=2)
            shard_size = gr.Textbox(value="2GB", label=t("shard_size"), elem_id="export-shard-size")
            export_dtype = gr.Dropdown(["keep", "bfloat16", "float16", "float32"], value="keep",
                                       label=t("export_dtype"), elem_id="export-dtype")
            gguf_dtype = gr.Dropdown(["f16", "f32", "q8_0"], value="f16", label=t("gguf_dtype"), elem_id="gguf-dtype")
            overwrite = gr.Checkbox(value=False, label=t("overwrite"), elem_id="export-overwrite")
        with gr.Row():
            export_btn = gr.Button(t("export"), elem_id="export-btn")
            gguf_btn = gr.Button(t("export_gguf"), elem_id="gguf-btn")
        export_result = gr.Textbox(label=t("after_result"), lines=2, interactive=False, elem_id="export-result")
    return EvaluateTab(run, checkpoint, datasets, limit, batch_size, max_new_tokens, temperature, top_p, predict_btn,
                       result, scores, predictions, export_dir, shard_size, export_dtype, gguf_dtype, overwrite,
                       export_btn, gguf_btn, export_result)


def checkpoint_arg(choice):
    return None if not choice or choice == FINAL else choice


def wire(page: Page, tab: EvaluateTab) -> None:
    on, run_path = page.on, page.run_path

    def on_run(rel, lang):
        """The run's checkpoints and the datasets of its data folder (its own eval set when none is picked)."""
        from launcher.config.schema import load_run_config
        from launcher.ui import form

        path = run_path(rel)
        if path is None:
            return gr.update(choices=[FINAL], value=FINAL), gr.update(choices=[], value=[]), "", None, None
        try:
            names = form.dataset_names(load_run_config(path).data.dataset_dir)
        except Exception:  # noqa: BLE001 - a run whose config no longer loads: its own eval set only
            names = []
        return (gr.update(choices=[FINAL] + after.checkpoints(path), value=FINAL),
                gr.update(choices=names, value=[]), "", None, None)

    on(tab.run.change, on_run, [tab.run], [tab.checkpoint, tab.datasets, tab.result, tab.scores, tab.predictions],
       show_progress="hidden", trigger_mode="always_last")

    def on_predict(rel, checkpoint, datasets, limit, batch_size, max_new_tokens, temperature, top_p, lang,
                   progress=gr.Progress(track_tqdm=True)):
        path = run_path(rel)
        if path is None:
            return message("no_finished_run", lang), None, None
        progress(0, desc=message("loading_model", lang))
        try:
            from launcher.config.schema import load_run_config
            from launcher.ui.roots import check_config

            check_config(load_run_config(path), page.allowed, data_only=True)  # predict reads the run's eval data
            m = after.predict(path, limit=int(limit) if limit else None, max_new_tokens=int(max_new_tokens or 64),
                              datasets=tuple(datasets or ()), batch_size=int(batch_size or 8),
                              temperature=float(temperature or 0), top_p=float(top_p or 0.7),
                              checkpoint=checkpoint_arg(checkpoint))
        except Exception as exc:  # noqa: BLE001
            return failure(exc, lang), None, None
        import pandas as pd

        scores = ", ".join(f"{k} {m[k]:.2f}" for k in SCORES)
        table = pd.DataFrame([[round(float(m[k]), 2) for k in SCORES]], columns=list(SCORES))
        from pathlib import Path

        out = Path(m["output_dir"]) / "predictions.jsonl"
        text = message("predicted", lang, dataset=m["dataset"], n=m["n"], scores=scores, out=m["output_dir"])
        return text, table, str(out) if out.is_file() else None

    on(tab.predict_btn.click, on_predict,
       [tab.run, tab.checkpoint, tab.datasets, tab.limit, tab.batch_size, tab.max_new_tokens, tab.temperature,
        tab.top_p], [tab.result, tab.scores, tab.predictions])

    def export_target(path, text):
        """The export dir a user typed, confined to the output root (a page writes nowhere else)."""
        if not (text or "").strip():
            return None
        from pathlib import Path

        target = Path(text.strip())
        target = target if target.is_absolute() else path / target
        page.allowed.check(target.parent, "export dir")
        return str(target)

    def on_export(rel, checkpoint, out, shard, dtype, overwrite, lang, progress=gr.Progress()):
        path = run_path(rel)
        if path is None:
            return message("no_finished_run", lang)
        progress(0.1, desc=message("exporting", lang))
        try:
            return after.export(path, out=export_target(path, out), max_shard_size=(shard or "2GB").strip(),
                                dtype=dtype, checkpoint=checkpoint_arg(checkpoint), force=bool(overwrite)).text(lang)
        except Exception as exc:  # noqa: BLE001
            return failure(exc, lang)

    def on_gguf(rel, checkpoint, out, dtype, overwrite, lang, progress=gr.Progress()):
        path = run_path(rel)
        if path is None:
            return message("no_finished_run", lang)
        progress(0.1, desc=message("exporting_gguf", lang))
        try:
            return after.export_gguf(path, out=export_target(path, out), dtype=dtype,
                                     checkpoint=checkpoint_arg(checkpoint), force=bool(overwrite)).text(lang)
        except Exception as exc:  # noqa: BLE001
            return failure(exc, lang)

    on(tab.export_btn.click, on_export,
       [tab.run, tab.checkpoint, tab.export_dir, tab.shard_size, tab.export_dtype, tab.overwrite], [tab.export_result])
    on(tab.gguf_btn.click, on_gguf, [tab.run, tab.checkpoint, tab.export_dir, tab.gguf_dtype, tab.overwrite],
       [tab.export_result])
