"""A LLaMA-Factory prediction, merge/export, chat or API YAML -> the arguments of ``launcher predict/export/chat/
serve``.

LLaMA-Factory users score with ``llamafactory-cli train`` and a ``do_predict`` file
(``examples/extras/nlg_eval/*_predict.yaml``), merge with ``llamafactory-cli export``
(``examples/merge_lora/*.yaml``) and chat or serve with ``llamafactory-cli chat/api``
(``examples/inference/*.yaml``). Here ``launcher predict|export|chat|serve --from-llamafactory FILE`` reads
such a file, prints the equivalent command and runs it (``launcher train --from-llamafactory`` hands a
``do_predict`` file to predict). The rules are those of the training translation
(``launcher.config.llamafactory``): every key is translated, taken as built in (one printed note), or refused
in one line naming the file, line and key; nothing is dropped silently.

The model: these files name it by ``model_name_or_path`` and ``adapter_name_or_path``, which point at the
``output_dir`` of a training file. A run trained by ``launcher train --from-llamafactory`` links its final model
into that ``output_dir`` (``run.link_model_to``), so the links lead back to the run dir, which is what our
commands take; a run dir or its ``model/`` folder is taken as well. ``launcher serve`` also serves a plain
local Hugging Face model folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from launcher.config.llamafactory import TEMPLATES, _Reading, _names, _path, read_yaml
from launcher.config.schema import TEXT_TEMPLATES
from launcher.errors import ConfigError
from launcher.paths import BASE_MODEL_DIR, CONFIG_FILE, MODEL_DIR

COMMANDS = ("predict", "export", "chat", "serve")

# Keys that only tune LLaMA-Factory's own process or say what is built in here; one note lists them.
BUILT_IN = {
    "trust_remote_code": "the run's model.trust_remote_code applies",
    "overwrite_cache": "tokenized data is cached by content hash",
    "overwrite_output_dir": "every prediction gets a new folder; earlier ones are kept",
    "preprocessing_num_workers": "prompts are rendered in the predicting process",
    "dataloader_num_workers": "prompts are rendered in the predicting process",
    "ddp_timeout": "prediction runs in one process",
    "predict_with_generate": "launcher predict always generates",
    "do_predict": "prediction is what `launcher predict` does",
    "stage": "sft: the run's prompts and answers",
    "export_legacy_format": "false: the export is written as safetensors",
    "export_device": "the merge runs where the model was loaded (CPU here, or the first GPU)",
    "report_to": "none: predictions and scores are written to files",
}
# Keys refused with what to do.
REFUSED = {
    "export_quantization_bit": "not supported: GPTQ-quantized export; export unquantized (remove the key), or"
                               " `launcher export RUN_DIR --format gguf --dtype q8_0` for llama.cpp",
    "export_quantization_dataset": "not supported: GPTQ-quantized export; remove the key",
    "export_hub_model_id": "not supported: pushing to the hub; export to a folder and upload it",
    "quantization_bit": "not supported after training: the model is loaded unquantized; remove the key",
    "do_train": "training and prediction together: run `launcher train --from-llamafactory` on the training"
                " file, then predict on its output_dir; remove do_train here",
    "do_eval": "not supported: launcher predict generates and scores (ROUGE/BLEU); use do_predict",
    "top_k": "not supported: sampling here takes temperature and top_p; remove the key",
    "repetition_penalty": "not supported: remove the key",
    "default_system": "not supported here: launcher chat --system TEXT, or the run's template's system prompt",
    "enable_thinking": "not supported: the run's template decides; remove the key",
    "image_max_pixels": "not supported after training: images are resized as the run's data.image_max_pixels says",
    "video_fps": "not supported after training: videos are sampled as the run's data.video_fps says",
    "video_maxlen": "not supported after training: videos are sampled as the run's data.video_maxlen says",
}
# Generation keys: LLaMA-Factory's generating arguments -> our flags, per command.
GENERATION = {"max_new_tokens": "--max-new-tokens", "do_sample": "--do-sample", "temperature": "--temperature",
              "top_p": "--top-p"}
GENERATION_BY_COMMAND = {"predict": set(GENERATION), "chat": set(GENERATION), "serve": {"max_new_tokens"},
                         "export": set()}
INFER_DTYPES = {"auto": "auto", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


@dataclass
class AfterTranslation:
    command: str
    """predict, export, chat or serve."""
    argv: list = field(default_factory=list)
    """The arguments of ``launcher <command>`` (the path first)."""
    notes: list = field(default_factory=list)
    """One line each: what was taken as built in, or resolved in a way worth saying."""


def run_dir_of(path: Path) -> Optional[Path]:
    """The run dir a path leads to: the run dir itself, its ``model/`` folder, or a folder holding the links
    ``run.link_model_to`` made to a run's final model (LLaMA-Factory's output_dir); None otherwise."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    if path.name == MODEL_DIR and (path.parent / CONFIG_FILE).is_file():
        return path.parent
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            if entry.is_symlink():
                target = entry.resolve().parent
                if target.name == MODEL_DIR and (target.parent / CONFIG_FILE).is_file():
                    return target.parent
    return None


def _same_model(given: str, trained: str, cwd: Path) -> bool:
    if given == trained:
        return True
    a, b = Path(_path(given, cwd)), Path(_path(trained, cwd))
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def locate_model(r: _Reading, command: str, cwd: Path) -> tuple[Optional[str], Optional[Any]]:
    """(the path to give the command, the run's config or None) from model_name_or_path and
    adapter_name_or_path."""
    from launcher.config.schema import load_run_config

    model = r.take("model_name_or_path")
    adapter = r.take("adapter_name_or_path")
    if not model:
        r.fail("model_name_or_path", "required: the model to load (the output_dir of a training file, or a folder)")
        return None, None
    if adapter is not None:
        adapters = _names(adapter)
        if len(adapters) != 1:
            r.fail("adapter_name_or_path", f"{len(adapters)} adapters: one adapter per run here; merge the others"
                                           " first (launcher export) and give the merged folder as model_name_or_path")
            return None, None
        run_dir = run_dir_of(Path(_path(adapters[0], cwd)))
        if run_dir is None:
            r.fail("adapter_name_or_path", f"{_path(adapters[0], cwd)} holds no launcher run's model; give the"
                                           " output_dir of `launcher train --from-llamafactory`, or a run dir")
            return None, None
        cfg = load_run_config(run_dir)
        if not (run_dir / MODEL_DIR / "adapter_config.json").is_file():
            r.fail("adapter_name_or_path", f"run {run_dir} trained all weights (no adapter); give its output_dir"
                                           " as model_name_or_path and remove adapter_name_or_path")
        else:
            # a random-init base exists only in the run dir (base_model/); a moved hub/local base is found there too
            bases = [b for b in (cfg.model.name_or_path, str(run_dir / BASE_MODEL_DIR)) if b]
            if not any(_same_model(str(model), base, cwd) for base in bases):
                r.fail("model_name_or_path", f"'{model}', but the adapter at {adapters[0]} was trained on"
                                             f" '{bases[0]}'; set model_name_or_path to that")
        return str(run_dir), cfg
    run_dir = run_dir_of(Path(_path(model, cwd)))
    if run_dir is not None:
        if (run_dir / MODEL_DIR / "adapter_config.json").is_file():
            r.fail("model_name_or_path", f"run {run_dir} saved a LoRA adapter: give its output_dir as"
                                         " adapter_name_or_path and the base model as model_name_or_path")
        return str(run_dir), load_run_config(run_dir)
    folder = Path(_path(model, cwd))
    if command == "serve" and (folder / "config.json").is_file():
        return str(folder), None
    what = ("a run dir, the output_dir of `launcher train --from-llamafactory`, or a local Hugging Face model folder"
            if command == "serve" else
            "a run dir or the output_dir of `launcher train --from-llamafactory` (this command works on a trained"
            " run; `launcher serve` also takes a plain model folder)")
    r.fail("model_name_or_path", f"'{model}' is not {what}")
    return None, None


def template(r: _Reading, command: str, cfg) -> None:
    """The chat template: the run's unless the file names another, which predict and serve can force."""
    if "template" not in r.lf or "template" in r.seen:
        return
    lf_name = str(r.take("template"))
    ours = TEMPLATES.get(lf_name, "auto")
    trained = cfg.data.template if cfg is not None else None
    if cfg is not None and ours in (trained, "auto"):
        r.notes.append(f"template: '{lf_name}' -> the run's (data.template={trained or 'the tokenizer' + chr(39) + 's'})")
    elif command == "predict":
        r.put("data.template", ours)
    elif command == "serve" and ours in TEXT_TEMPLATES:
        r.out += ["--template", ours]
    elif command == "serve" and ours == "auto":
        r.notes.append(f"template: '{lf_name}' -> the model folder's own chat template")
    else:
        r.fail("template", f"'{lf_name}' (ours: {ours}) differs from the run's data.template={trained}; launcher"
                           f" {command} uses the run's template: remove the key")


def generation(r: _Reading, command: str) -> None:
    for key, flag in GENERATION.items():
        if key not in r.lf:
            continue
        value = r.take(key)
        if key not in GENERATION_BY_COMMAND[command]:
            r.fail(key, f"not supported by launcher {command}"
                        + ("; clients set it per request" if command == "serve" else "; remove the key"))
        elif key == "do_sample":
            if value:
                r.out.append(flag)
        else:
            r.out += [flag, str(value)]
    if "infer_dtype" in r.lf:
        dtype = str(r.take("infer_dtype"))
        if dtype in INFER_DTYPES and command != "export":
            r.out += ["--dtype", INFER_DTYPES[dtype]]
        elif command == "export" and dtype in INFER_DTYPES:
            r.out += ["--dtype", "keep" if dtype == "auto" else dtype]
        else:
            r.fail("infer_dtype", f"'{dtype}' is not one of {', '.join(INFER_DTYPES)}")
    if "infer_backend" in r.lf:
        backend = r.take("infer_backend")
        if backend != "huggingface":
            r.fail("infer_backend", f"'{backend}' is not supported: launcher {command} runs transformers"
                                    " (huggingface); vLLM serves an exported folder (launcher export)")


def predict_keys(r: _Reading, cfg, cwd: Path) -> None:
    """eval_dataset, dataset_dir, cutoff_len, max_samples, the batch size and output_dir."""
    lf = r.lf
    if not lf.get("do_predict"):
        r.fail("do_predict", "a prediction file sets do_predict: true")
    if "finetuning_type" in lf:
        kind = r.take("finetuning_type")
        trained = "lora" if cfg is not None and cfg.method.finetuning in ("lora", "qlora") else \
            (cfg.method.finetuning if cfg is not None else None)
        if trained is not None and kind != trained and not (kind == "full" and trained == "freeze"):
            r.fail("finetuning_type", f"{kind}, but the run trained {trained}; set finetuning_type: {trained}")
    names = _names(r.take("eval_dataset")) if "eval_dataset" in lf else []
    if "dataset" in lf:
        r.fail("dataset", "a prediction file names its data in eval_dataset (as LLaMA-Factory reads it for"
                          " do_predict); rename the key")
    for name in names:
        r.out += ["--dataset", name]
    if not names:
        r.notes.append("eval_dataset: not given; the run's eval data (or its val_size split) is predicted")
    if names or "dataset_dir" in lf:  # LLaMA-Factory reads eval_dataset from dataset_dir, ./data by default
        r.put("data.dataset_dir", _path(r.take("dataset_dir", "data"), cwd))
    if "cutoff_len" in lf:
        r.put("data.cutoff_len", r.take("cutoff_len"))
    if "max_samples" in lf:
        r.out += ["--limit", str(r.take("max_samples"))]
    if "per_device_eval_batch_size" in lf:
        r.out += ["--batch-size", str(r.take("per_device_eval_batch_size"))]
    if lf.get("output_dir"):
        target = _path(r.take("output_dir"), cwd)
        r.out += ["--link-to", target]
    r.take("output_dir")


def export_keys(r: _Reading, cwd: Path) -> None:
    if not r.lf.get("export_dir"):
        r.fail("export_dir", "required: the folder to write the merged model to")
    else:
        r.out += ["--out", _path(r.take("export_dir"), cwd)]
    if "export_size" in r.lf:
        r.out += ["--max-shard-size", f"{r.take('export_size')}GB"]
    if r.lf.get("export_legacy_format"):
        r.take("export_legacy_format")
        r.fail("export_legacy_format", "true (pickled .bin) is not supported: the export is safetensors; set false")


def untaken(r: _Reading, command: str) -> None:
    built_in = []
    for key in r.lf:
        if key in r.seen:
            continue
        if key == "report_to" and _names(r.lf[key] or "none") == ["none"]:
            built_in.append(key)
        elif key in BUILT_IN and not (key == "stage" and r.lf[key] != "sft"):
            built_in.append(key)
        elif key in REFUSED:
            r.fail(key, REFUSED[key])
        elif key == "report_to":
            r.fail(key, "not supported after training: predictions and scores are written to files; set none")
        else:
            r.fail(key, f"not a key launcher {command} --from-llamafactory reads; remove it, or pass the equivalent"
                        f" flag after the file (see `launcher {command} --help`)")
    if built_in:
        r.notes.append("built in here, nothing to translate: "
                       + "; ".join(f"{k} ({BUILT_IN[k]})" for k in built_in))


def translate_after(lf: dict, command: str, *, source: str = "llamafactory.yaml", lines: Optional[dict] = None,
                    cwd: Optional[Path] = None) -> AfterTranslation:
    """LLaMA-Factory keys -> ``launcher <command>`` arguments. Raises ConfigError listing every key it cannot take."""
    if command not in COMMANDS:
        raise ValueError(command)
    cwd = Path(cwd or Path.cwd())
    r = _Reading(lf, source, lines or {})
    path, cfg = locate_model(r, command, cwd)
    if command == "predict":
        predict_keys(r, cfg, cwd)
    elif command == "export":
        export_keys(r, cwd)
    for key in ("export_dir", "export_size") if command != "export" else ():
        if key in lf:
            r.take(key)
            r.fail(key, f"an export key: use launcher export --from-llamafactory {source}")
    if command != "predict":
        for key in ("do_predict", "eval_dataset", "max_samples", "per_device_eval_batch_size", "output_dir"):
            if key in lf:
                r.take(key)
                r.fail(key, "a prediction key: use launcher predict --from-llamafactory (with do_predict: true)")
    if "finetuning_type" in lf and command != "predict":
        r.take("finetuning_type")
        r.notes.append("finetuning_type: the run's own (its model/ says lora or full)")
    if path is None:
        r.take("template")  # which template goes with a model that was not found: nothing to say yet
    template(r, command, cfg)
    generation(r, command)
    untaken(r, command)
    if r.errors:
        raise ConfigError("\n".join(r.errors))
    return AfterTranslation(command=command, argv=[path, *r.out], notes=r.notes)


def translate_after_file(path: Path, command: str, cwd: Optional[Path] = None) -> AfterTranslation:
    data, lines = read_yaml(Path(path))
    return translate_after(data, command, source=str(path), lines=lines, cwd=cwd)


def command_for(lf: dict) -> str:
    """Which command a LLaMA-Factory file is for: export (export_dir), predict (do_predict), train, or chat."""
    if lf.get("export_dir"):
        return "export"
    if lf.get("do_predict") and not lf.get("do_train"):
        return "predict"
    if lf.get("do_train") or "stage" in lf or "dataset" in lf:
        return "train"
    return "chat"
