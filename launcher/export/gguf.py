"""``launcher export RUN_DIR --format gguf``: one GGUF file (llama.cpp, Ollama, LM Studio) for Qwen2 and Llama.

Written with the ``gguf`` package (llama.cpp's own writer), the way llama.cpp's convert_hf_to_gguf.py lays
a model out: its tensor names (``gguf.get_tensor_name_map``), Llama's q/k rows permuted to GGML's rotary
layout, 1-D tensors (norms, biases) kept f32, ``q8_0`` falling back to f16 for a tensor whose rows are not
a multiple of the 32-value block. The LM head is always written (``output.weight``), tied or not, so readers
that do not tie (transformers' GGUF loader) get the same logits.

The tokenizer goes into the metadata with its chat template. GGUF describes byte-level BPE vocabularies
(``tokenizer.ggml.model = gpt2``) with a named pre-tokenizer; we write the two our models use: Qwen2's
and Llama 3's. Anything else (a WordLevel tokenizer, as runs made before the character tokenizer became byte-level saved, sentencepiece) is refused with
a message saying so, before anything is written.

Vision-language runs (Qwen2-VL, Qwen2.5-VL): the file holds the language model only, as a Qwen2 model (the
language model's weights under Qwen2's names; the vision tower and projector are left out and said so). For
text, Qwen2-VL's 3-D rope is plain rope (the three position rows are equal), so the file answers text prompts
as the run does; images need the HF export (``launcher serve``) or llama.cpp's own mmproj converter. Qwen3-VL's
language model is a Qwen3, which this writer does not lay out yet: refused with what to do.

We write this instead of calling llama.cpp's converter because that script is not a package (it lives in the
llama.cpp repository, with its own model registry); the ``gguf`` package it builds on is.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from launcher.disk_full import disk_full_guard, written_so_far
from launcher.errors import LauncherError
from launcher.paths import BASE_MODEL_DIR, CONFIG_FILE, MODEL_DIR

GGUF_DTYPES = ("f32", "f16", "q8_0")
ARCHS = {"qwen2": "QWEN2", "llama": "LLAMA"}
VL_LANGUAGE_ARCH = {"qwen2_vl": "qwen2", "qwen2_5_vl": "qwen2"}
"""Vision-language families whose language model we write, and as which architecture."""
VISION_PREFIXES = ("model.visual.",)
LANGUAGE_PREFIX = "model.language_model."

# The pre-tokenizer split regexes GGUF readers know by name (llama.cpp's tokenizer.ggml.pre).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class GGUFExportError(LauncherError):
    """The model or its tokenizer cannot be written as GGUF."""


@dataclass
class GGUFArgs:
    out: Optional[str] = None
    """A .gguf file, or a folder for <name>-<dtype>.gguf; default RUN_DIR/export-gguf/."""
    dtype: str = "f16"
    """f32, f16 or q8_0."""
    checkpoint: Optional[str] = None
    force: bool = False


def known_splits() -> dict:
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return {PRETOKENIZE_REGEX: "qwen2", LLAMA3_SPLIT: "llama-bpe"}


def tokenizer_spec(tokenizer, folders: list) -> dict:
    """The tokenizer.json the model was saved with (first of ``folders`` that has one), else the loaded one's.

    The file is the truth: transformers 5 reloads a saved tokenizer by the model's type (a qwen2 model gets a
    Qwen2Tokenizer built from the vocabulary), which turns the tiny models' WordLevel tokenizer into a BPE one
    that tokenizes differently.
    """
    for folder in folders:
        path = Path(folder) / "tokenizer.json"
        if path.is_file():
            return json.loads(path.read_text())
    return json.loads(tokenizer.backend_tokenizer.to_str())


def tokenizer_metadata(tokenizer, spec: dict, vocab_size: int) -> dict:
    """What GGUF stores of a byte-level BPE tokenizer: tokens, types, merges, pre-tokenizer, special ids."""
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFExportError(
            f"GGUF cannot hold this tokenizer: it is a {model.get('type')} tokenizer, and GGUF describes byte-level"
            " BPE (gpt2), sentencepiece, WordPiece or Unigram vocabularies. The tiny models' character tokenizer is"
            " WordLevel: train with model=tiny_qwen2_qwentok (the real Qwen tokenizer) or a real model to export GGUF")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    split = next((s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"), None)
    name = known_splits().get(split)
    if name is None or not any(s.get("type") == "ByteLevel" for s in steps):
        raise GGUFExportError("GGUF export supports the Qwen2 and Llama 3 byte-level BPE tokenizers; this"
                              " tokenizer's pre-tokenizer is neither (not supported yet)")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    vocab = {**model.get("vocab", {}), **{t["content"]: t["id"] for t in added.values()}}
    if len(vocab) > vocab_size:
        raise GGUFExportError(f"the tokenizer has {len(vocab)} tokens but the model's embedding only {vocab_size}")
    from gguf import TokenType

    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # embedding rows past the vocabulary (padded for speed)
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(TokenType.CONTROL if added[token].get("special") else TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(TokenType.NORMAL)
    return {"pre": name, "tokens": tokens, "types": types, "merges": merges,
            "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
            "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None}


def llama_permute(weights: np.ndarray, n_head: int, n_head_kv: Optional[int]) -> np.ndarray:
    """HF's rotary halves -> GGML's interleaved pairs, for Llama's q and k rows (llama.cpp's permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def encode_tensor(data: np.ndarray, dtype: str):
    """(array, raw GGML type or None): 1-D stays f32; q8_0 falls back to f16 where rows do not fit blocks."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    data = data.astype(np.float32)
    if data.ndim <= 1 or dtype == "f32":
        return data, None
    if dtype == "q8_0" and data.shape[-1] % 32 == 0:
        return quantize(data, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def language_model_view(model) -> tuple:
    """(config, arch key, state dict as numpy, note) of what goes into the file: the whole causal LM, or a
    vision-language model's language model under the text architecture's names (note says what is left out)."""
    config = model.config
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    if config.model_type not in VL_LANGUAGE_ARCH:
        arch_key = ARCHS.get(config.model_type)
        if arch_key is None:
            if hasattr(config, "vision_config"):
                raise GGUFExportError(
                    f"GGUF export writes the language model of Qwen2-VL and Qwen2.5-VL runs, not of"
                    f" '{config.model_type}' (its language model's architecture is not laid out here yet); use"
                    " `launcher export RUN_DIR` (HF, with the processor files) and serve that, or convert the HF"
                    " export with llama.cpp's convert_hf_to_gguf.py (--mmproj for the vision tower)")
            raise GGUFExportError(f"GGUF export supports Qwen2 and Llama, not '{config.model_type}'")
        return config, arch_key, state, None
    text = config.text_config
    out, vision = {}, 0
    for key, value in state.items():
        if key.startswith(VISION_PREFIXES):
            vision += 1
        elif key.startswith(LANGUAGE_PREFIX):
            out["model." + key[len(LANGUAGE_PREFIX):]] = value
        elif key == "lm_head.weight":
            out[key] = value
        else:
            raise GGUFExportError(f"no place in the language model for the tensor '{key}' of this {config.model_type}"
                                  " model")
    note = (f"{config.model_type}: the GGUF file holds the language model only (as {VL_LANGUAGE_ARCH[config.model_type]});"
            f" the vision tower and projector ({vision} tensors under model.visual) are not in it, so it answers"
            " text, not images. For images serve the HF export (`launcher export RUN_DIR`, then `launcher serve`)"
            " or convert the vision tower with llama.cpp's convert_hf_to_gguf.py --mmproj")
    return text, ARCHS[VL_LANGUAGE_ARCH[config.model_type]], out, note


def write_gguf(model, tokenizer, path: Path, dtype: str, name: str, tokenizer_folders: tuple = ()) -> dict:
    """Write ``model`` (a transformers Qwen2/Llama causal LM, or a Qwen2-VL/2.5-VL model's language model) and
    its tokenizer to ``path``; return a summary (``note``: what a VL model's file leaves out).

    ``tokenizer_folders``: where the tokenizer.json the tokenizer was loaded from lies (see tokenizer_spec)."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise GGUFExportError(f"--dtype: '{dtype}' is not one of {', '.join(GGUF_DTYPES)} for --format gguf")
    config, arch_key, state, note = language_model_view(model)
    arch = getattr(gguf.MODEL_ARCH, arch_key)
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    vocab_size = model.get_input_embeddings().weight.shape[0]
    tok = tokenizer_metadata(tokenizer, tokenizer_spec(tokenizer, list(tokenizer_folders)), vocab_size)
    n_layers, n_head = config.num_hidden_layers, config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope_theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")

    tmp = path.parent / f".tmp-{path.name}-{int(time.time() * 1000)}"
    writer = gguf.GGUFWriter(str(tmp), arch_name)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if rope_theta:
        writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    if not tok["merges"]:
        # A vocabulary of single symbols (the tiny models' characters) has no merges, and readers that find none
        # derive them from the token scores: give every token the same score, so none is derived.
        writer.add_token_scores([0.0] * len(tok["tokens"]))
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id)):
        if tok[key] is not None:
            add(tok[key])
    writer.add_add_bos_token(False)
    if tok["chat_template"]:
        writer.add_chat_template(tok["chat_template"])

    names = gguf.get_tensor_name_map(arch, n_layers)
    if "lm_head.weight" not in state:  # tied: write the head anyway (see the module docstring)
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    counts: dict = {}
    try:
        with disk_full_guard(path, "the GGUF file", lambda: written_so_far(tmp)):
            for hf_name, data in state.items():
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise GGUFExportError(f"no GGUF name for the tensor '{hf_name}' of this {config.model_type} model")
                if arch_key == "LLAMA" and hf_name.endswith("q_proj.weight"):
                    data = llama_permute(data, n_head, n_head)
                elif arch_key == "LLAMA" and hf_name.endswith("k_proj.weight"):
                    data = llama_permute(data, n_head, n_kv)
                encoded, raw = encode_tensor(data, dtype)
                kind = raw.name if raw is not None else str(encoded.dtype).replace("float", "f")
                counts[kind] = counts.get(kind, 0) + 1
                writer.add_tensor(gguf_name, encoded, raw_dtype=raw)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(path), "architecture": arch_name, "dtype": dtype, "tensors": counts,
            "tokenizer": f"gpt2/{tok['pre']}, {len(tok['tokens'])} tokens", "bytes": path.stat().st_size,
            "note": note}


def export_gguf(source: Path, args: GGUFArgs) -> dict:
    """A run dir (final model, merged adapter, or --checkpoint) or an HF model folder -> one .gguf file."""
    source = Path(source)
    if (source / CONFIG_FILE).is_file():
        from launcher.inference.trained import load_run_model

        model, tokenizer, cfg, _ = load_run_model(source, checkpoint=args.checkpoint, merge=True)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        name = cfg.run.name or source.parent.parent.name
        default_dir = source / "export-gguf"
        folders = (source / MODEL_DIR, source / BASE_MODEL_DIR)
    elif (source / "config.json").is_file():
        from launcher.models.tokenizers import load_saved_tokenizer
        from launcher.models.vision import auto_class_for

        model, tokenizer = auto_class_for(source).from_pretrained(source), load_saved_tokenizer(source)
        name, default_dir, folders = source.name, source.parent, (source,)
    else:
        raise GGUFExportError(f"{source}: neither a run dir (config.yaml) nor a Hugging Face model folder (config.json)")
    out = Path(args.out) if args.out else default_dir
    path = out if out.suffix == ".gguf" else out / f"{name}-{args.dtype}.gguf"
    if path.exists() and not args.force:
        raise GGUFExportError(f"{path} already exists; pass --force to replace it, or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gguf(model.eval(), tokenizer, path, args.dtype, name, folders)
