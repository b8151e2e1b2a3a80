"""The range of every number in the config, in one table, checked before anything runs.

``range_problems(cfg)`` returns one line per value outside its range (all of them, so one round trip fixes
them all). Every int/float field of the schema has an entry: tests/checks/test_ranges.py walks the
dataclasses, so a new numeric key without a range fails a test instead of reaching a rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from launcher.config.schema import Config


@dataclass(frozen=True)
class Range:
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    """The low bound itself is refused (> low instead of >= low)."""
    high_open: bool = False
    phrase: str = ""
    """Says the range in words instead of the bounds (``a positive rank``)."""
    note: str = ""
    """What a special value means, appended to the message (``0: no clipping``)."""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def describe(self) -> str:
        if self.phrase:
            return self.phrase
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'<' if self.high_open else '<='} {high}"


def _num(value: Optional[float]) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


POSITIVE = Range(0, low_open=True)
AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
FRACTION = Range(0, 1, high_open=True)

# key -> range; None values (optional keys left unset) are not checked.
RANGES: dict[str, Range] = {
    "data.val_size": Range(0),  # fraction or count: see val_size_problem
    "data.cutoff_len": Range(8),
    # A Qwen-VL image is at least one merged 2x2 patch of 14-16 px, so fewer pixels than that cannot be asked for.
    "data.image_max_pixels": Range(1024, phrase="at least 1024 pixels (32 x 32)"),
    "data.image_min_pixels": Range(1024, phrase="at least 1024 pixels (32 x 32)"),
    "data.video_max_pixels": Range(256, phrase="at least 256 pixels (16 x 16)"),
    "data.video_min_pixels": AT_LEAST_1,
    "data.video_fps": POSITIVE,
    "data.video_maxlen": AT_LEAST_1,
    "data.max_samples": AT_LEAST_1,
    "data.num_proc": AT_LEAST_1,
    "data.preprocess_batch_size": AT_LEAST_1,
    "method.lr": POSITIVE,
    "method.weight_decay": NOT_NEGATIVE,
    "method.adam_beta1": FRACTION,
    "method.adam_beta2": FRACTION,
    "method.adam_eps": POSITIVE,
    "method.lora.r": Range(1, phrase="a positive rank"),
    "method.lora.alpha": Range(0, low_open=True, note=" (the update is scaled by alpha/r; twice the rank is usual)"),
    "method.lora.dropout": FRACTION,
    "method.lora.plus_lr_ratio": Range(1, note=" (LoRA+: B matrices at ratio x lr; 16 is usual; null: plain LoRA)"),
    "method.freeze.trainable_layers": Range(phrase="a layer count", note=" (N > 0: the last N, N < 0: the first |N|)"),
    "method.dpo.beta": POSITIVE,
    "method.dpo.label_smoothing": Range(0, 0.5, high_open=True),
    "method.dpo.simpo_gamma": NOT_NEGATIVE,
    "method.dpo.probe_pairs": Range(0, note=" (0: off)"),
    "method.kto.beta": POSITIVE,
    "method.kto.desirable_weight": POSITIVE,
    "method.kto.undesirable_weight": POSITIVE,
    "method.kto.probe_rows": Range(0, note=" (0: off)"),
    "method.rm.probe_pairs": Range(0, note=" (0: off)"),
    "method.token_loss.asft_alpha": NOT_NEGATIVE,
    "method.token_loss.eaft_alpha": NOT_NEGATIVE,
    "method.llama_pro.expand": Range(0, note=" (0: no expansion)"),
    "method.oft.block_size": Range(0, note=" (0: derived from method.oft.r)"),
    "method.oft.r": Range(0, note=" (0: derived from method.oft.block_size)"),
    "method.oft.module_dropout": FRACTION,
    "method.grpo.num_generations": Range(2, note=" (an advantage compares a completion with its group: G >= 2)"),
    "method.grpo.max_completion_length": AT_LEAST_1,
    "method.grpo.temperature": POSITIVE,
    "method.grpo.top_p": Range(0, 1, low_open=True),
    "method.grpo.length_target": AT_LEAST_1,
    "method.grpo.epsilon": Range(0, 1, low_open=True),
    "method.grpo.epsilon_high": Range(0, low_open=True),
    "method.grpo.beta": NOT_NEGATIVE,
    "method.grpo.num_iterations": AT_LEAST_1,
    "method.grpo.eval_prompts": Range(0, note=" (0: off)"),
    "method.ppo.max_completion_length": AT_LEAST_1,
    "method.ppo.temperature": POSITIVE,
    "method.ppo.top_p": Range(0, 1, low_open=True),
    "method.ppo.ppo_epochs": AT_LEAST_1,
    "method.ppo.kl_coef": NOT_NEGATIVE,
    "method.ppo.cliprange": Range(0, 1, low_open=True),
    "method.ppo.cliprange_value": Range(0, low_open=True),
    "method.ppo.vf_coef": NOT_NEGATIVE,
    "method.ppo.gamma": Range(0, 1),
    "method.ppo.lam": Range(0, 1),
    "method.ppo.missing_eos_penalty": NOT_NEGATIVE,
    "method.ppo.eval_prompts": Range(0, note=" (0: off)"),
    "method.galore.rank": AT_LEAST_1,
    "method.galore.update_interval": AT_LEAST_1,
    "method.galore.scale": POSITIVE,
    "method.apollo.rank": AT_LEAST_1,
    "method.apollo.update_interval": AT_LEAST_1,
    "method.apollo.scale": POSITIVE,
    "method.badam.start_block": Range(0, phrase="a decoder layer index", note=" (null: switch_mode's first)"),
    "method.badam.switch_interval": AT_LEAST_1,
    "train.seed": Range(0, 2**32 - 1),
    "train.max_steps": Range(-1, note="; -1 trains for train.epochs"),  # 0 and < -1: see validate
    "train.epochs": NOT_NEGATIVE,  # > 0 when max_steps is -1: see validate
    "train.micro_batch_size": AT_LEAST_1,
    "train.grad_accum": AT_LEAST_1,
    "train.global_batch_size": AT_LEAST_1,
    "train.warmup_steps": NOT_NEGATIVE,
    "train.warmup_ratio": FRACTION,
    "train.min_lr_ratio": Range(0, 1),
    "train.max_grad_norm": Range(0, note=" (0: no clipping)"),
    "train.log_every": AT_LEAST_1,
    "train.eval_every": Range(0, note=" (0: only at the end)"),
    "train.save_every": Range(0, note=" (0: only the final model)"),
    "train.save_every_minutes": Range(0, note=" (0: off; unset: 30 on SLURM, off locally)"),
    "train.stall_timeout_s": Range(0, note=" (0: the hang watchdog is off; unset: per-phase defaults)"),
    "train.startup_stall_timeout_s": Range(0, note=" (0: start-up is not timed; unset: per-phase defaults)"),
    "train.keep_checkpoints": AT_LEAST_1,
    "train.eval_max_batches": Range(0, note=" (0: the whole eval set)"),
    "train.exact_match_samples": Range(0, note=" (0: off)"),
    "train.max_new_tokens": AT_LEAST_1,
    "train.loss_chunk_size": AT_LEAST_1,
    "parallelism.zero_stage": Range(0, 3),
    "parallelism.sequence_parallel": Range(1, note="1: off"),
    "cluster.nodes": AT_LEAST_1,
    "cluster.rendezvous_timeout_s": AT_LEAST_1,
    "cluster.nproc_per_node": AT_LEAST_1,
    "cluster.gpus_per_node": NOT_NEGATIVE,
    "cluster.cpus_per_task": AT_LEAST_1,
    "cluster.mem_gb": Range(0, low_open=True, note=" (or null for the partition default)"),
    "cluster.time_min": Range(1, phrase=">= 1 minute"),
    "cluster.gpu_memory_gb": POSITIVE,
    "cluster.signal_delay_s": NOT_NEGATIVE,
    "cluster.max_requeues": NOT_NEGATIVE,
    "cluster.max_restarts": NOT_NEGATIVE,
    "cluster.array_parallelism": AT_LEAST_1,
    "generation.vllm_kv_cache_gib": POSITIVE,
}
# Per-dataset entries of data.datasets / data.eval_datasets.
ENTRY_RANGES: dict[str, Range] = {"max_samples": AT_LEAST_1, "weight": NOT_NEGATIVE}


def lookup_value(cfg: Any, key: str) -> Any:
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def val_size_problem(value: Any) -> Optional[str]:
    """data.val_size follows LLaMA-Factory: a float is a fraction in [0, 1), an integer is a count of samples."""
    if isinstance(value, bool):
        return f"data.val_size: expected a fraction or a count, got {value!r}"
    if isinstance(value, int):
        return None if value >= 0 else f"data.val_size: a count must be >= 0, got {value}"
    if not 0.0 <= value < 1.0:
        hint = f" to hold out {int(value)} sample(s) write the integer data.val_size={int(value)}" \
            if value >= 1 and float(value).is_integer() else " to hold out a number of samples write an integer"
        return (f"data.val_size: {value} is a fraction of the training mix and must be in [0, 1);{hint}"
                " (an integer is a count)")
    return None


def range_problems(cfg: "Config") -> list[str]:
    problems = []
    for key, allowed in RANGES.items():
        value = lookup_value(cfg, key)
        if key == "data.val_size":
            problem = val_size_problem(value)
            if problem:
                problems.append(problem)
            continue
        if value is not None and not allowed.contains(value):
            problems.append(f"{key}: must be {allowed.describe()}{allowed.note}, got {value}")
    for group in ("datasets", "eval_datasets"):
        for i, entry in enumerate(getattr(cfg.data, group)):
            for field, allowed in ENTRY_RANGES.items():
                value = getattr(entry, field, None)
                if value is not None and not allowed.contains(value):
                    problems.append(f"data.{group}[{i}].{field}: must be {allowed.describe()}, got {value}")
    return problems
