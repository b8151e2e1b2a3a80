"""Reward functions for online RL (GRPO): built from ``method.grpo.rewards`` / ``reward_weights``, each scoring
one completion of one prompt row.

Built-ins: ``exact_match`` (the stripped completion equals the row's answer), ``format`` (re.fullmatch of
``method.grpo.format_pattern`` on the stripped completion), ``length`` (1 - |tokens - length_target| /
max_completion_length, not below 0); ``module:function``, a Python callable called as
``f(prompt=..., completion=..., row=...)`` returning a number; ``rm:RUN_DIR``, the score of a method=rm run's
saved model on prompt + completion (launcher.models.reward's AutoModelForSequenceClassification).

A function that raises (or returns something that is not a finite number) either stops the run with a
``RewardError`` naming the function and the row, or, with ``method.grpo.reward_errors=zero``, scores 0 and is
counted. Empty and truncated completions are scored like any other.
"""
from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from launcher.errors import ConfigError, LauncherError


class RewardError(LauncherError):
    """A reward function failed on a row (named in the message)."""


@dataclass
class Completion:
    """What a reward function may look at: the prompt row (prompt text, answer, dataset row, where it was read),
    the completion's text and its token count, and whether it was cut at max_completion_length."""

    row: dict
    text: str
    tokens: int
    truncated: bool


class RewardFunction:
    name = "reward"

    def score(self, items: list[Completion]) -> list[float]:
        raise NotImplementedError


class ExactMatch(RewardFunction):
    name = "exact_match"

    def score(self, items):
        out = []
        for c in items:
            if c.row.get("answer") is None:
                raise RewardError(f"reward exact_match: row {c.row.get('where', '?')} has no answer to compare with;"
                                  " use data whose answer column is filled, or another reward")
            out.append(float(c.text.strip() == c.row["answer"].strip()))
        return out


class FormatMatch(RewardFunction):
    name = "format"

    def __init__(self, pattern: str):
        try:
            self.pattern = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ConfigError(f"method.grpo.format_pattern: {pattern!r} is not a regular expression ({exc})") from None

    def score(self, items):
        return [float(self.pattern.fullmatch(c.text.strip()) is not None) for c in items]


class LengthReward(RewardFunction):
    name = "length"

    def __init__(self, target: int, max_tokens: int):
        self.target, self.max_tokens = target, max_tokens

    def score(self, items):
        return [max(0.0, 1.0 - abs(c.tokens - self.target) / self.max_tokens) for c in items]


class CallableReward(RewardFunction):
    """``module:function``: called once per completion with keyword arguments prompt, completion and row."""

    def __init__(self, spec: str):
        self.name = spec
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"method.grpo.rewards: cannot import module '{module_name}' of reward '{spec}' ({exc});"
                              " it must be importable from the run's code (the repo root, or PYTHONPATH)") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ConfigError(f"method.grpo.rewards: '{attr}' in module '{module_name}' is not a function (reward"
                              f" '{spec}')")
        # Found here, at the dry run, rather than at the first generation batch of a queued job (or, with
        # reward_errors=zero, never: every completion would quietly score 0).
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # no signature to read (some builtins): the first call will tell
            signature = None
        if signature is not None:
            try:
                signature.bind(prompt="", completion="", row={})
            except TypeError as exc:
                raise ConfigError(f"method.grpo.rewards: reward '{spec}' cannot be called as {attr}(prompt=...,"
                                  f" completion=..., row=...) ({exc}); define it as def {attr}(prompt: str,"
                                  " completion: str, row: dict) -> float (or add **kwargs)") from None
        self.fn: Callable = fn

    def score(self, items):
        return [self.fn(prompt=c.row["prompt"], completion=c.text, row=c.row["row"]) for c in items]


class RewardModelReward(RewardFunction):
    """``rm:RUN_DIR``: a reward model trained with method=rm scores prompt + completion (its last token); a
    completion that ended (not truncated) gets the template's end of answer, as every answer the reward model
    was trained on had it."""

    def __init__(self, spec: str, device, tokenizer):
        from launcher.inference.trained import load_trained_model

        self.name = spec
        run_dir = Path(spec.partition(":")[2]).expanduser()
        if not (run_dir / "config.yaml").is_file() and not (run_dir / "model").is_dir():
            raise ConfigError(f"method.grpo.rewards: '{spec}': {run_dir} is not a run dir of method=rm (no"
                              " config.yaml or model/)")
        model, own_tokenizer = load_trained_model(run_dir, device=device)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = own_tokenizer or tokenizer  # the text is tokenized as the reward model was trained
        self.device = device

    @torch.no_grad()
    def score(self, items):
        texts = [c.row["prompt"] + c.text + ("" if c.truncated else c.row.get("answer_suffix", "")) for c in items]
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"  # scored at the last non-pad token, as in training
        try:
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        finally:
            self.tokenizer.padding_side = side
        return self.model(**enc).logits[:, 0].float().tolist()


def build_reward_functions(cfg, tokenizer=None, device=None) -> list[tuple[RewardFunction, float]]:
    """(function, weight) for each entry of ``method.grpo.rewards``."""
    g = cfg.method.grpo
    weights = [float(w) for w in g.reward_weights] or [1.0] * len(g.rewards)
    out = []
    for name, weight in zip(g.rewards, weights):
        if name == "exact_match":
            fn: RewardFunction = ExactMatch()
        elif name == "format":
            fn = FormatMatch(g.format_pattern)
        elif name == "length":
            fn = LengthReward(g.length_target, g.max_completion_length)
        elif name.startswith("rm:"):
            fn = RewardModelReward(name, device or torch.device("cpu"), tokenizer)
        elif ":" in name:
            fn = CallableReward(name)
        else:
            raise ConfigError(f"method.grpo.rewards: unknown reward '{name}'; use exact_match, format, length,"
                              " module:function or rm:RUN_DIR")
        out.append((fn, weight))
    return out


def _check_value(value, fn: RewardFunction, item: Completion) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RewardError(f"reward {fn.name} returned {value!r} for row {item.row.get('where', '?')}, not a"
                          " number") from None
    if not math.isfinite(v):
        raise RewardError(f"reward {fn.name} returned {v} for row {item.row.get('where', '?')}")
    return v


def score_completions(functions: list[tuple[RewardFunction, float]], items: list[Completion],
                      on_error: str = "raise") -> tuple[torch.Tensor, dict]:
    """([len(items), len(functions)] float64 rewards, errors per function name). ``on_error``: raise (a
    RewardError naming the function and the row) or zero (the failing completion scores 0 for that function)."""
    table = torch.zeros(len(items), len(functions), dtype=torch.float64)
    errors = {fn.name: 0 for fn, _ in functions}
    for j, (fn, _) in enumerate(functions):
        try:
            values = fn.score(items)
            if len(values) != len(items):
                raise RewardError(f"reward {fn.name} gave {len(values)} scores for {len(items)} completions")
            table[:, j] = torch.tensor([_check_value(v, fn, it) for v, it in zip(values, items)], dtype=torch.float64)
            continue
        except (RewardError, ConfigError):
            if on_error == "raise":
                raise
        except Exception as exc:  # noqa: BLE001 - a user's function may raise anything; say which and where
            if on_error == "raise":
                bad = _first_failing(fn, items)
                where = bad.row.get("where", "?") if bad is not None else "?"
                text = bad.text if bad is not None else ""
                raise RewardError(f"reward {fn.name} raised {type(exc).__name__}: {exc} on row {where} (completion"
                                  f" {text[:80]!r}); fix the function, or set method.grpo.reward_errors=zero to"
                                  " score such completions 0") from exc
        # zero: score one completion at a time, so only the failing ones score 0
        for i, it in enumerate(items):
            try:
                table[i, j] = _check_value(fn.score([it])[0], fn, it)
            except Exception:  # noqa: BLE001 - counted, as method.grpo.reward_errors=zero asks
                errors[fn.name] += 1
    return table, errors


def _first_failing(fn: RewardFunction, items: list[Completion]) -> Optional[Completion]:
    for it in items:
        try:
            fn.score([it])
        except Exception:  # noqa: BLE001
            return it
    return None


def weighted_total(table: torch.Tensor, functions: list[tuple[RewardFunction, float]]) -> torch.Tensor:
    weights = torch.tensor([w for _, w in functions], dtype=table.dtype)
    return table @ weights


def reward_spec_problems(cfg) -> list[str]:
    """The dry run's lines for ``method.grpo.rewards`` entries that cannot be built: an unknown name, a
    ``module:function`` that does not import or is not callable, an ``rm:RUN_DIR`` without a saved model.
    Nothing is loaded but the named modules."""
    out = []
    for name in cfg.method.grpo.rewards:
        if name in ("exact_match", "format", "length"):
            continue
        if name.startswith("rm:"):
            run_dir = Path(name[3:]).expanduser()
            if not (run_dir / "model").is_dir():
                out.append(f"method.grpo.rewards: '{name}': {run_dir} holds no model/ (the saved model of a finished"
                           " method=rm run); give the run dir of a method=rm run")
            continue
        if ":" not in name:
            out.append(f"method.grpo.rewards: unknown reward '{name}'; use exact_match, format, length,"
                       " module:function or rm:RUN_DIR")
            continue
        try:
            CallableReward(name)
        except ConfigError as exc:
            out.append(str(exc))
    if "format" in cfg.method.grpo.rewards:
        try:
            FormatMatch(cfg.method.grpo.format_pattern)
        except ConfigError as exc:
            out.append(str(exc))
    return out
