"""Held-out prompts for generation after training, rendered the way training rendered them.

The one place the after-training tools touch the data package: which samples a run held out (its
``data.eval_datasets``, or the ``data.val_size`` split of its training mix) and how a conversation becomes
prompt text. The data package is being rewritten (``load_samples(spec, caps, seed)``, named templates via
``choose_renderer``); both shapes are handled here so predict/chat need no change when it lands.
"""
from __future__ import annotations

import random
from typing import Callable, Optional

from launcher.config.schema import Config, DatasetEntry
from launcher.errors import DataError


def _mix(cfg: Config, entries: list) -> list:
    import recipes.data as data_pkg

    if hasattr(data_pkg, "load_mix"):  # the rewritten package
        from recipes.data.registry import load_registry, lookup

        dataset_dir = data_pkg.resolve_dataset_dir(cfg.data)
        registry = load_registry(dataset_dir)
        specs = [lookup(registry, e.name, dataset_dir) for e in entries]
        samples = data_pkg.load_mix(cfg.data, entries, specs, cfg.train.seed)
        for s in samples:
            s.pop("where", None)
        return samples
    return data_pkg.load_samples(cfg.data, entries)


def _val_split(samples: list, val_size: float, seed: int) -> list:
    try:
        from recipes.data.mixing import split_eval
    except ImportError:
        split_eval = None
    if split_eval is not None:
        return split_eval(samples, val_size, seed)[1]
    # Same seeded draw as the current build_datasets: the held-out rows, in their original order.
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_eval = int(val_size) if val_size >= 1 else max(1, int(round(len(samples) * val_size)))
    held = set(order[:n_eval])
    return [s for i, s in enumerate(samples) if i in held]


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
    template = cfg.data.template if cfg is not None else None
    try:
        from recipes.data.templates import choose_renderer, parse_tools
    except ImportError:
        choose_renderer = None
    if choose_renderer is not None:
        renderer, _ = choose_renderer(tokenizer, template)

        def render(messages: list, tools=None) -> str:
            return renderer.render(messages, parse_tools(tools, "prompt"), True)

        return render
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template; chat and predict need one")

    def render_with_tokenizer(messages: list, tools=None) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render_with_tokenizer
