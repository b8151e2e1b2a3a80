"""Supervised fine-tuning, full or LoRA, on every rank.

Features: chat-template tokenization with assistant-only labels (launcher.data), optional packing, loss only
at trained positions in chunks, normalized by the trained tokens of the whole optimizer step across
micro-batches and ranks; gradient accumulation; warmup + cosine/linear schedule; gradient checkpointing;
eval loss every N steps; exact-match on held-out prompts before and after; atomic checkpoints every N steps
with automatic resume; metrics.jsonl, a progress bar with ETA, W&B on rank 0, a loss plot; the final model
in HF format (or a PEFT adapter, with the random-init base beside it when there is no hub base).

Raises ConfigError / DataError (one line, naming the key or row) before any training starts.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

import torch

from launcher.config.schema import Config, resolve_grad_accum
from launcher.errors import ConfigError, DataError
from launcher.paths import BASE_MODEL_DIR, MODEL_DIR
from launcher.training import checkpoint as ckpt
from launcher.training import preemption
from launcher.training.batching import epoch_plan, eval_batches, steps_per_epoch
from launcher.engines.distributed import DistInfo, all_reduce_max, all_reduce_sum
from launcher.training.flops import causal_pairs, training_flops
from launcher.training.process_stats import PhaseClock, peak_rss_gb, process_start_time
from launcher.engines.base import build_engine
from launcher.models.build import (
    apply_lora,
    build_base_model,
    choose_attn_implementation,
    choose_dtype,
    count_parameters,
)
from launcher.models.tokenizers import load_tokenizer
from launcher.data.tokenize import row_length
from launcher.training.metrics import MetricsLogger, plot_loss

log = logging.getLogger("launcher.sft")



def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _trained_tokens(batch: dict) -> int:
    return int((batch["shift_labels"] != -100).sum())


def _segment_lengths(row: dict) -> list[int]:
    """Lengths of the samples a row holds (packed rows hold several; a preference row two sequences)."""
    if "chosen_input_ids" in row:
        return [len(row["chosen_input_ids"]), len(row["rejected_input_ids"])]
    return row.get("segment_lengths") or [len(row["input_ids"])]


class SFTRecipe:
    def __init__(self, cfg: Config, run_dir: Path, dist_info: DistInfo):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = dist_info
        self.metrics: Optional[MetricsLogger] = None
        self.stop_flag: Optional[preemption.StopFlag] = None
        """Set by launcher.training.entry: a preemption signal makes every rank checkpoint and stop at a step boundary."""
        self.evaluations = True
        """False (launcher bench): no held-out loss, exact match or probes before, during or after training."""

    # ------------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        t0 = time.time()
        # Where start-up time goes, for the bench report: process start -> setup (interpreter, imports,
        # config), each phase of setup, then to the first step.
        self.startup = PhaseClock(started_at=process_start_time())
        self.startup.done("before_setup")
        torch.manual_seed(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg.model)
        self.startup.done("tokenizer")
        self.attn_impl = choose_attn_implementation(cfg.model.attn_implementation, dist.device)
        self.dtype = choose_dtype(cfg.model.dtype, dist.device)
        if dist.is_main:
            log.info("attention: %s, dtype: %s, device: %s, world size: %d",
                     self.attn_impl, str(self.compute_dtype).replace("torch.", ""), dist.device, dist.world_size)

        self.data = self.build_data()
        self.startup.done("data")
        if dist.is_main:
            log.info("data: %s", ", ".join(f"{k}={v}" for k, v in self.data.stats.items() if not isinstance(v, dict)))

        # Master weights stay fp32; bf16 runs under autocast (full fine-tuning in pure bf16 loses updates).
        model = build_base_model(cfg, self.tokenizer, self.attn_impl, torch.float32)
        if cfg.method.finetuning == "lora":
            if cfg.model.name_or_path is None and dist.is_main and (cfg.train.save_model or cfg.train.save_every):
                # A random-init base exists nowhere else: keep it so a saved adapter can be reloaded.
                model.save_pretrained(self.run_dir / BASE_MODEL_DIR, safe_serialization=True)
                self.tokenizer.save_pretrained(self.run_dir / BASE_MODEL_DIR)
            model = apply_lora(model, cfg.method.lora)
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.method.finetuning == "lora":
                model.enable_input_require_grads()
        self.startup.done("model")
        total, trainable = count_parameters(model)
        if dist.is_main:
            log.info("model: %.2fM parameters, %.2fM trainable (%s)", total / 1e6, trainable / 1e6,
                     cfg.method.name)

        self.grad_accum = resolve_grad_accum(cfg, dist.world_size)
        n_rows = len(self.data.train)
        self.steps_per_epoch = steps_per_epoch(n_rows, dist.world_size, cfg.train.micro_batch_size, self.grad_accum)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"data: {n_rows} training rows are fewer than one global batch"
                f" ({cfg.train.micro_batch_size} x {self.grad_accum} x {dist.world_size}); lower train.micro_batch_size"
            )
        if cfg.train.max_steps > 0:
            self.total_steps = cfg.train.max_steps
        else:
            self.total_steps = max(1, int(math.ceil(cfg.train.epochs * self.steps_per_epoch)))
        self.engine = self.build_engine(model)
        self.model = self.engine.model
        self.startup.done("engine")
        self.step = 0
        self.trained_tokens_total = 0
        self._resume()
        self.metrics = MetricsLogger(cfg, self.run_dir, enabled=dist.is_main)
        self.startup.done("resume_and_metrics")
        self.setup_seconds = time.time() - t0

    def build_data(self):
        """Hook: the DataBundle this recipe trains on."""
        from launcher.data import build_datasets

        return build_datasets(self.cfg, self.tokenizer, attn_implementation=self.attn_impl)

    def build_engine(self, model):
        """Hook: wrap the model for the parallelism (runs before a checkpoint is resumed)."""
        return build_engine(self.cfg, model, self.dist, self.total_steps)

    def _resume(self) -> None:
        source = self.cfg.run.resume
        # A requeued/restarted attempt continues from this run dir's own latest checkpoint (launcher.training.preemption).
        directory = preemption.choose_resume_checkpoint(source, self.run_dir, ckpt.latest_checkpoint(self.run_dir))
        if directory is None:
            if self.dist.is_main:  # records of an attempt that died before its first checkpoint
                preemption.forget_metrics_after(self.run_dir, -1)
            return
        if not (directory / ckpt.COMPLETE).is_file():
            raise ConfigError(f"run.resume: {directory} is not a complete checkpoint (no {ckpt.COMPLETE} marker)")
        meta = json.loads((directory / "meta.json").read_text())
        if meta["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"run.resume: checkpoint {directory.name} was written with world size {meta['world_size']},"
                f" this run has {self.dist.world_size}; resume with the same nodes x nproc_per_node,"
                " or start fresh with run.resume=never"
            )
        self.engine.load_checkpoint(directory)
        ckpt.load_rng(directory, self.dist.rank)
        self.step = meta["step"]
        self.trained_tokens_total = meta["trained_tokens"]
        if self.dist.is_main:
            # Steps logged after this checkpoint by the attempt that died are trained again: log them once.
            preemption.forget_metrics_after(self.run_dir, self.step)
            log.info("resumed from %s (step %d)", directory, self.step)

    # ------------------------------------------------------------------------------------ train

    def _micro_batches_for_step(self, step: int) -> list[tuple[dict, int, int]]:
        """This rank's collated micro-batches for ``step``, each with its real (non-pad) tokens and the
        causal (query, key) pairs its samples attend (for FLOP counts)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if not hasattr(self, "_plan") or self._plan_epoch != epoch:
            t = self.cfg.train
            self._plan = epoch_plan(len(self.data.train), t.seed, epoch, self.dist.rank, self.dist.world_size,
                                    t.micro_batch_size, self.grad_accum)
            self._plan_epoch = epoch
        out = []
        for idx in self._plan[index]:
            rows = [self.data.train[i] for i in idx]
            pairs = causal_pairs([n for r in rows for n in _segment_lengths(r)])
            out.append((self.collate(rows), sum(row_length(r) for r in rows), pairs))
        return out

    def collate(self, rows: list[dict]) -> dict:
        """Hook: rows -> one micro-batch."""
        return self.data.collate(rows)

    @property
    def compute_dtype(self) -> torch.dtype:
        """What the matmuls run in: the requested low precision under autocast on a GPU; fp32 on a CPU."""
        if self.dtype in (torch.bfloat16, torch.float16) and self.dist.device.type == "cuda":
            return self.dtype
        return torch.float32

    def _autocast(self):
        if self.compute_dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.compute_dtype)
        import contextlib

        return contextlib.nullcontext()

    def train_step(self, step: int) -> dict:
        batches = self._micro_batches_for_step(step)
        counts = torch.tensor(
            [sum(_trained_tokens(b) for b, _, _ in batches), sum(n for _, n, _ in batches),
             sum(p for _, _, p in batches)],
            dtype=torch.float64, device=self.dist.device,
        )
        all_reduce_sum(counts)
        global_trained, global_real, global_pairs = float(counts[0]), float(counts[1]), float(counts[2])
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        for i, (batch, _, _) in enumerate(batches):
            batch = _to_device(batch, self.dist.device)
            with self.engine.accumulation_context(i == len(batches) - 1), self._autocast():
                token_loss_sum = self.engine.module(**batch)
                # DDP averages gradients over ranks; scaling by world size makes the result a mean over
                # every trained token of the step, whatever the micro-batch or rank it came from.
                loss = token_loss_sum * self.dist.world_size / max(global_trained, 1.0)
                self.engine.backward(loss)
            loss_sum += token_loss_sum.detach().double()
        all_reduce_sum(loss_sum)
        lr = self.engine.lr
        grad_norm = self.engine.step()
        return {
            "loss": float(loss_sum) / max(global_trained, 1.0),
            "lr": lr,
            "grad_norm": grad_norm,
            "trained_tokens": int(global_trained),
            "tokens": int(global_real),
            "attended_pairs": int(global_pairs),
        }

    @torch.no_grad()
    def evaluate(self) -> Optional[float]:
        rows = self.data.eval
        if not rows:
            return None
        self.engine.eval()
        t = self.cfg.train
        batches = eval_batches(len(rows), self.dist.rank, self.dist.world_size, t.micro_batch_size)
        if t.eval_max_batches:
            batches = batches[: t.eval_max_batches]
        totals = torch.zeros(2, dtype=torch.float64, device=self.dist.device)
        loss_module = self.engine.module.module if hasattr(self.engine.module, "no_sync") else self.engine.module
        n_forwards = len(batches)
        if getattr(self.engine, "forward_is_collective", False):
            # Sharded engines (FSDP, ZeRO-3) gather weights in forward: every rank must run as many forwards;
            # a rank with fewer eval rows runs a filler batch that is not counted.
            n_forwards = int(all_reduce_max(torch.tensor(len(batches), device=self.dist.device)))
        for k in range(n_forwards):
            idx = batches[k] if k < len(batches) else [0]
            batch = _to_device(self.data.collate([rows[i] for i in idx]), self.dist.device)
            with self._autocast():
                token_loss = loss_module(**batch).double()
            if k < len(batches):
                totals[0] += token_loss
                totals[1] += _trained_tokens(batch)
        all_reduce_sum(totals)
        self.engine.train()
        return float(totals[0] / max(float(totals[1]), 1.0))

    def exact_match(self) -> Optional[dict]:
        n = self.cfg.train.exact_match_samples
        if not n or not self.data.eval_samples:
            return None
        if getattr(self.engine, "forward_is_collective", False):
            if self.dist.is_main:
                log.warning("train.exact_match_samples: skipped under parallelism=%s (rank-0 generation would"
                            " wait on sharded weights); evaluate the saved model instead", self.cfg.parallelism.name)
            return None
        if not self.dist.is_main:
            return None
        samples = [s for s in self.data.eval_samples if any(m["role"] == "assistant" for m in s.get("messages", []))]
        if not samples:  # pretraining text has no prompt/answer to check
            return None
        from launcher.inference.prompts import prompt_renderer
        from launcher.inference.generation import exact_match_eval

        with self._autocast():
            return exact_match_eval(self.model, self.tokenizer, samples[:n], self.cfg.train.max_new_tokens,
                                    self.dist.device, prompt_renderer(self.tokenizer, self.cfg))

    def save_checkpoint(self) -> None:
        meta = {"step": self.step, "world_size": self.dist.world_size, "trained_tokens": self.trained_tokens_total,
                "epoch": self.step // self.steps_per_epoch, "step_in_epoch": self.step % self.steps_per_epoch}
        path = ckpt.save_checkpoint(self.run_dir, self.step, self.engine, meta, self.dist,
                                    self.cfg.train.keep_checkpoints)
        if self.dist.is_main:
            log.info("checkpoint saved: %s", path)

    def train(self) -> dict:
        t = self.cfg.train
        summary: dict = {"run_dir": str(self.run_dir), "total_steps": self.total_steps}
        start_step = self.step
        if start_step == 0 and self.evaluations:
            before = self._log_eval()
            em_before = self.exact_match()
            if self.dist.is_main:
                if em_before is not None:
                    self.metrics.log({"kind": "exact_match", "step": 0, "exact_match": em_before["exact_match"]})
            summary.update(eval_loss_before=before, exact_match_before=em_before and em_before["exact_match"])

        progress = None
        if self.dist.is_main:
            from tqdm import tqdm

            import sys

            # In a log file (SLURM, torchrun --tee) a bar redrawn every second is noise: update twice a minute.
            progress = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step",
                            dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
        self.engine.train()
        window_start, window_trained, window_tokens = time.time(), 0, 0
        first_step_at = first_step_started = None
        last_loss = None
        while self.step < self.total_steps:
            if first_step_started is None:
                self.startup.done("after_setup")
                first_step_started = time.time()
            stats = self.train_step(self.step)
            if first_step_at is None:
                first_step_at = time.time()
                steady_start, steady_trained, steady_tokens, steady_pairs = first_step_at, 0, 0, 0
            else:
                steady_trained += stats["trained_tokens"]
                steady_tokens += stats["tokens"]
                steady_pairs += stats.get("attended_pairs", 0)
            self.step += 1
            self.trained_tokens_total += stats["trained_tokens"]
            window_trained += stats["trained_tokens"]
            window_tokens += stats["tokens"]
            last_loss = stats["loss"]
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}")
            if self.step % t.log_every == 0 or self.step == self.total_steps:
                elapsed = max(time.time() - window_start, 1e-9)
                record = {
                    "kind": "train", "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                    "loss": stats["loss"], "lr": stats["lr"], "grad_norm": stats["grad_norm"],
                    "trained_tokens_per_s": window_trained / elapsed, "tokens_per_s": window_tokens / elapsed,
                    "trained_tokens_seen": self.trained_tokens_total,
                }
                record.update(self.extra_train_metrics(stats))
                if self.metrics:
                    self.metrics.log(record)
                window_start, window_trained, window_tokens = time.time(), 0, 0
            if self.evaluations and t.eval_every and self.step % t.eval_every == 0 and self.step != self.total_steps:
                self._log_eval()
            if t.save_every and self.step % t.save_every == 0 and self.step != self.total_steps:
                self.save_checkpoint()
            if self.stop_flag is not None and self.step < self.total_steps \
                    and self.stop_flag.should_stop(self.dist.device):
                return self._stop_early(progress, summary)
        if progress is not None:
            progress.close()

        train_end = time.time()
        if first_step_at is not None and self.step - start_step > 1:
            # Throughput over the steps after the first (which pays for warm-up and lazy allocation).
            steady = max(train_end - steady_start, 1e-9)
            flops = training_flops(self.model.config, steady_tokens, steady_trained, steady_pairs)
            summary.update(steady_trained_tokens_per_s=steady_trained / steady,
                           steady_tokens_per_s=steady_tokens / steady, steady_steps=self.step - start_step - 1,
                           steady_seconds=steady, model_flops_per_s=flops / steady)
        if first_step_at is not None:
            # From the command (process start) to the moment training starts, and the first step's own time.
            summary["time_to_first_step_s"] = round(first_step_started - self.startup.started_at, 3)
            summary["startup_seconds"] = {k: round(v, 3) for k, v in self.startup.phases.items()}
            summary["first_step_seconds"] = round(first_step_at - first_step_started, 3)
        summary["peak_rss_gb"] = round(peak_rss_gb(), 3)
        if self.dist.device.type == "cuda":
            summary["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
            summary["cuda_max_reserved_gb"] = torch.cuda.max_memory_reserved(self.dist.device) / 2**30
        summary["data_stats"] = {k: v for k, v in self.data.stats.items() if isinstance(v, (int, float, str))}
        final_eval = self._log_eval() if self.evaluations else None
        em_after = self.exact_match() if self.evaluations else None
        if em_after is not None and self.metrics:
            self.metrics.log({"kind": "exact_match", "step": self.step, "exact_match": em_after["exact_match"]})
        if self.cfg.train.save_model:
            self.save_final()
        summary.update(
            final_step=self.step, final_train_loss=last_loss, eval_loss_after=final_eval,
            exact_match_after=em_after and em_after["exact_match"],
            exact_match_examples=em_after and em_after["examples"],
            trained_tokens=self.trained_tokens_total, setup_seconds=round(self.setup_seconds, 2),
            parallelism=self.engine.report(), attention=self.attn_impl,
            compute_dtype=str(self.compute_dtype).replace("torch.", ""),
        )
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            plot = plot_loss(self.run_dir)
            log.info("done: %s", self.run_dir)
            if summary.get("eval_loss_before") is not None and final_eval is not None:
                log.info("eval loss %.4f -> %.4f", summary["eval_loss_before"], final_eval)
            if summary.get("exact_match_before") is not None and em_after is not None:
                log.info("held-out exact match %.1f%% -> %.1f%% (%d prompts)", 100 * summary["exact_match_before"],
                         100 * em_after["exact_match"], em_after["n"])
            if plot:
                log.info("loss plot: %s", plot)
        return summary

    def extra_train_metrics(self, stats: dict) -> dict:
        """Hook: more values for a step's metrics record, from what ``train_step`` returned."""
        return {}

    def _stop_early(self, progress, summary: dict) -> dict:
        """All ranks agreed to stop (preemption or time limit near): checkpoint this step and leave."""
        if progress is not None:
            progress.close()
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None or latest.name != ckpt.step_dir_name(self.step):
            self.save_checkpoint()
        if self.dist.is_main:
            preemption.mark_stopped(self.run_dir, self.step, ckpt.latest_checkpoint(self.run_dir))
            log.warning("stopped at step %d of %d on a preemption signal; checkpoint saved, the job requeues",
                        self.step, self.total_steps)
        summary.update(preempted=True, final_step=self.step, trained_tokens=self.trained_tokens_total)
        return summary

    def _log_eval(self) -> Optional[float]:
        value = self.evaluate()
        if value is not None and self.metrics:
            self.metrics.log({"kind": "eval", "step": self.step, "eval_loss": value})
        return value

    def save_final(self) -> None:
        directory = self.run_dir / MODEL_DIR
        self.engine.save_final(directory, self.tokenizer)
        if self.dist.is_main and self.cfg.method.finetuning == "lora" and self.cfg.model.name_or_path is None:
            # Point the adapter at the random-init base saved beside it, so standard PEFT loading works;
            # load_trained_model also finds it there if the run dir has moved.
            path = directory / "adapter_config.json"
            adapter_cfg = json.loads(path.read_text())
            adapter_cfg["base_model_name_or_path"] = str((self.run_dir / BASE_MODEL_DIR).resolve())
            path.write_text(json.dumps(adapter_cfg, indent=2))
        if self.dist.is_main:
            log.info("model saved: %s", directory)

    def cleanup(self) -> None:
        if self.metrics:
            self.metrics.finish()
