"""Held-out prompts for generation after training, rendered the way training rendered them.

The one place the after-training tools (and the training loop's exact-match check) touch the data package:
which samples a run held out (its ``data.eval_datasets``, or the ``data.val_size`` split of its training
mix) and how a conversation becomes prompt text (the renderer training used, named template included).
"""
from __future__ import annotations

from typing import Callable, Optional

from launcher.config.schema import Config, DatasetEntry
from launcher.errors import DataError


def _mix(cfg: Config, entries: list) -> list:
    from launcher.data import load_mix, resolve_dataset_dir
    from launcher.data.registry import load_registry, lookup

    dataset_dir = resolve_dataset_dir(cfg.data)
    registry = load_registry(dataset_dir)
    specs = [lookup(registry, e.name, dataset_dir) for e in entries]
    samples = load_mix(cfg.data, entries, specs, cfg.train.seed)
    for s in samples:
        s.pop("where", None)
    return samples


def _val_split(samples: list, val_size: float, seed: int) -> list:
    from launcher.data.mixing import split_eval

    return split_eval(samples, val_size, seed)[1]


def held_out_samples(cfg: Config, names: Optional[list] = None) -> tuple[str, list]:
    """(label, canonical samples): the named datasets, else the run's eval datasets, else its val split."""
    if names:
        entries = [n if isinstance(n, DatasetEntry) else DatasetEntry(name=str(n)) for n in names]
        return "+".join(e.name for e in entries), _mix(cfg, entries)
    if cfg.data.eval_datasets:
        return "+".join(e.name for e in cfg.data.eval_datasets), _mix(cfg, cfg.data.eval_datasets)
    if cfg.data.val_size > 0:
        return "val", _val_split(_mix(cfg, cfg.data.datasets), cfg.data.val_size, cfg.train.seed)
    raise DataError(
        "predict: the run has no held-out data (data.eval_datasets is empty and data.val_size is 0);"
        " name one with --dataset NAME or data.eval_datasets=[NAME]"
    )


def prompt_renderer(tokenizer, cfg: Optional[Config]) -> Callable[[list, Optional[list]], str]:
    """messages, tools -> prompt text ending with the assistant's generation prompt."""
    from launcher.data.templates import choose_renderer, parse_tools
    from launcher.models.vision import vision_info

    template = cfg.data.template if cfg is not None else None
    from launcher.models.audio import audio_info

    info = (vision_info(cfg.model) or audio_info(cfg.model)) if cfg is not None else None
    if info is not None and not template:
        template = info.template  # as training chose it (launcher.data.build_datasets)
    renderer, _ = choose_renderer(tokenizer, template)

    def render(messages: list, tools=None) -> str:
        return renderer.render(messages, parse_tools(tools, "prompt"), True)

    return render
