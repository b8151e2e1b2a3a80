"""The training loop, for every method: steps, accumulation, the schedule, eval and checkpoint cadence, the
preemption stop, metrics, progress, the final save.

What is particular to a method (batch -> loss, what "evaluate" means, what a finished run adds to its summary)
is its ``Objective`` (launcher.training.objectives); the parallelism is the engine's (launcher.engines). Timing
for the benchmark is a ``StepMeter`` beside the loop.

Why our own loop and not the HF Trainer: the loss is normalized by the trained tokens (or pairs) of the whole
optimizer step across micro-batches and ranks (the Trainer's per-micro-batch mean skews variable-length
batches, transformers#34191); resume restores the data plan and RNG exactly; a preemption signal stops every
rank at the same step boundary; and FSDP on CPU is real (the Trainer silently drops it there).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from launcher.config.schema import Config, save_every_minutes
from launcher.data.tokenize import row_length
from launcher.disk_full import DiskFullError, disk_full_guard, written_so_far
from launcher.engines.base import Engine
from launcher.engines.distributed import DistInfo, all_gather_object, all_reduce_sum
from launcher.engines.reshard import (checkpoint_global_batch, describe_reshard, reshard_line, reshard_refusal,
                                      sequence_parallel_reshard_refusal)
from launcher.engines.precision import Precision
from launcher.errors import ConfigError
from launcher.models.build import point_adapter_at_base
from launcher.paths import BASE_MODEL_DIR, MODEL_DIR, SUMMARY_FILE
from launcher.engines import checkpoint as ckpt
from launcher.training import preemption
from launcher.training import progress as rank_progress
from launcher.training.batching import epoch_plan
from launcher.training.flops import causal_pairs
from launcher.training.ledger import merged_ledger, read_ledger, rows_to_skip
from launcher.training.meter import StepMeter
from launcher.training.metrics import MetricsLogger, plot_loss
from launcher.training.objectives import Objective, to_device

log = logging.getLogger("launcher.train")


def segment_lengths(row: dict) -> list[int]:
    """Lengths of the samples a row holds (packed rows hold several; a preference row two sequences)."""
    if "chosen_input_ids" in row:
        return [len(row["chosen_input_ids"]), len(row["rejected_input_ids"])]
    return row.get("segment_lengths") or [len(row["input_ids"])]


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, dist: DistInfo, *, engine: Engine, data, objective: Objective,
                 tokenizer, precision: Precision, grad_accum: int, steps_per_epoch: int, total_steps: int,
                 meter: StepMeter, attn_implementation: str, evaluations: bool = True,
                 stop_flag: Optional[preemption.StopFlag] = None, sequence_parallel=None):
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist
        self.engine, self.data, self.objective, self.tokenizer = engine, data, objective, tokenizer
        self.precision = precision
        self.grad_accum, self.steps_per_epoch, self.total_steps = grad_accum, steps_per_epoch, total_steps
        self.meter = meter
        self.attn_implementation = attn_implementation
        self.evaluations = evaluations
        """False (launcher bench): no held-out loss, exact match or probes before, during or after training."""
        self.stop_flag = stop_flag
        """A preemption signal makes every rank checkpoint and stop at a step boundary."""
        self.sequence_parallel = sequence_parallel
        """parallelism.sequence_parallel > 1: this rank's sequence group, whose ranks read the same rows."""
        self.sequence_size = sequence_parallel.size if sequence_parallel is not None else 1
        self.data_rank, self.data_world = dist.rank // self.sequence_size, dist.world_size // self.sequence_size
        """This rank's place among the data-parallel ranks (each sequence group is one of them)."""
        self.step = 0
        self.trained_tokens_total = 0
        self.evals: list[dict] = []
        self.metrics: Optional[MetricsLogger] = None
        self._plan: Optional[list] = None
        self._plan_epoch = -1
        self._resume_skip: Optional[tuple] = None
        """(epoch, step index, rows): the resumed epoch's rows already trained (its ledger's), left out of its plan."""
        self._ledger_base: Optional[dict] = None
        self._recorded: dict = {}
        """This rank's trained rows of ``_recorded_epoch``, by step index in the epoch, since the start or resume."""
        self._recorded_epoch = -1
        self.save_minutes = save_every_minutes(cfg)
        """Timed checkpoints (train.save_every_minutes; 0: off), decided on rank 0's clock."""
        self._last_save = time.monotonic()

    @property
    def model(self):
        return self.engine.model

    # ------------------------------------------------------------------------------------ resume

    def resume(self) -> None:
        """Continue from a checkpoint (run.resume, or this run dir's latest after a requeue/restart), then open
        the metrics log. Runs after the engine is built and before the first step."""
        source = self.cfg.run.resume
        # A requeued/restarted attempt continues from this run dir's own latest checkpoint (preemption.py): the
        # newest one whose files still match their manifest (a damaged newer one is skipped, in one line).
        latest = ckpt.latest_valid_checkpoint(self.run_dir, self.dist)
        directory = preemption.choose_resume_checkpoint(source, self.run_dir, latest)
        if directory is None:
            if self.dist.is_main:  # records of an attempt that died before its first checkpoint
                preemption.forget_metrics_after(self.run_dir, -1)
        else:
            if directory != latest:
                ckpt.check_resume_checkpoint(directory)  # run.resume=PATH: complete and undamaged, or refused
            self._load_checkpoint(directory)
        self.metrics = MetricsLogger(self.cfg, self.run_dir, enabled=self.dist.is_main)

    def _load_checkpoint(self, directory: Path) -> None:
        if not (directory / ckpt.COMPLETE).is_file():
            raise ConfigError(f"run.resume: {directory} is not a complete checkpoint (no {ckpt.COMPLETE} marker)")
        meta = json.loads((directory / "meta.json").read_text())
        resharded = self._check_topology(directory, meta)
        self.engine.load_checkpoint(directory)
        ckpt.load_rng(directory, self.dist.rank)
        state = ckpt.load_objective_state(directory, self.dist.rank)
        if state is not None:
            self.objective.load_state_dict(state)
        self.step = meta["step"]
        self.trained_tokens_total = meta["trained_tokens"]
        self._continue_ledger(directory, meta)
        if resharded is not None and self.dist.is_main:
            rank_progress.record_reshard(self.run_dir, resharded)
            log.info("resume %s", reshard_line(resharded))
        if self.dist.is_main:
            # Steps logged after this checkpoint by the attempt that died are trained again: log them once.
            preemption.forget_metrics_after(self.run_dir, self.step)
            log.info("resumed from %s (step %d)", directory, self.step)

    def _check_topology(self, directory: Path, meta: dict) -> Optional[dict]:
        """None on the checkpoint's own topology; else refused (launcher.engines.reshard says why) or the record of
        the reshard, once the global batch is checked to be the checkpoint's."""
        parallelism, world = self.cfg.parallelism.name, self.dist.world_size
        if meta["world_size"] == world and meta.get("parallelism", parallelism) == parallelism \
                and meta.get("sequence_parallel", 1) == self.sequence_size:
            return None
        problem = sequence_parallel_reshard_refusal(directory, meta, self.cfg) or \
            reshard_refusal(directory, meta, parallelism, world)
        if problem:
            raise ConfigError(problem)
        global_batch = self.cfg.train.micro_batch_size * self.grad_accum * self.data_world
        if global_batch != checkpoint_global_batch(meta):  # the recipe planned from another checkpoint
            raise ConfigError(
                f"run.resume: checkpoint {directory.name} has global batch {checkpoint_global_batch(meta)}, this"
                f" run planned {global_batch}; resume from the checkpoint the run was planned on")
        return describe_reshard(meta, parallelism, world, self.grad_accum)

    def _continue_ledger(self, directory: Path, meta: dict) -> None:
        """The rows of the resumed epoch already trained (the checkpoint's ledger), left out of its plan."""
        ledger = read_ledger(directory)
        self._ledger_base = ledger
        epoch, index = divmod(self.objective.data_step(self.step), self.steps_per_epoch)
        t = self.cfg.train
        global_batch = t.micro_batch_size * self.grad_accum * self.data_world
        where = f"world size {meta['world_size']}, this run has {self.dist.world_size}"
        trained = rows_to_skip(ledger, directory.name, epoch, index, global_batch, len(self.data.train), t.seed, where)
        self._resume_skip = (epoch, index, trained) if trained else None

    def _ledger(self) -> Optional[dict]:
        """Collective: the sample ledger of the epoch of the last trained step (every rank's rows gathered)."""
        if self.step == 0:
            return None
        epoch = self.objective.data_step(self.step - 1) // self.steps_per_epoch
        next_epoch, next_index = divmod(self.objective.data_step(self.step), self.steps_per_epoch)
        # Only data steps that are done: one that several optimizer steps share (GRPO's num_iterations) and
        # that goes on after this checkpoint is trained again by a resume, from the same rows.
        done = next_index if next_epoch == epoch else self.steps_per_epoch
        mine = {i: rows for i, rows in self._recorded.items() if i < done} if self._recorded_epoch == epoch else {}
        if self.dist.rank % self.sequence_size:  # the ranks of a sequence group train the same rows: one records
            mine = {}
        per_rank = all_gather_object(mine)
        return merged_ledger(self._ledger_base, epoch, len(self.data.train), self.cfg.train.seed, per_rank)

    # ------------------------------------------------------------------------------------ one step

    def micro_batches_for_step(self, step: int) -> list[tuple[dict, int, int]]:
        """This rank's collated micro-batches for ``step``, each with its real (non-pad) tokens and the causal
        (query, key) pairs its samples attend (for FLOP counts)."""
        epoch, index = divmod(self.objective.data_step(step), self.steps_per_epoch)
        if self._plan is None or self._plan_epoch != epoch:
            t = self.cfg.train
            skip = self._resume_skip if self._resume_skip and self._resume_skip[0] == epoch else (epoch, 0, [])
            self._plan = epoch_plan(len(self.data.train), t.seed, epoch, self.data_rank, self.data_world,
                                    t.micro_batch_size, self.grad_accum, trained=skip[2], first_step=skip[1])
            self._plan_epoch = epoch
        if self._recorded_epoch != epoch:
            self._recorded, self._recorded_epoch = {}, epoch
        self._recorded[index] = [i for idx in self._plan[index] for i in idx]
        out = []
        # Online RL turns the planned prompts into the rows it trains on (its completions); others keep them.
        micro_rows = self.objective.rows_for_step(self, step, [[self.data.train[i] for i in idx]
                                                               for idx in self._plan[index]])
        for rows in micro_rows:
            pairs = causal_pairs([n for r in rows for n in segment_lengths(r)])
            # A sequence group's ranks share the rows: each counts its share of the tokens and pairs.
            tokens = sum(row_length(r) for r in rows) / self.sequence_size
            out.append((self.objective.collate(rows), tokens, pairs / self.sequence_size))
        return out

    def train_step(self, step: int) -> dict:
        rank_progress.report(rank_progress.FORWARD_BACKWARD)
        batches = self.micro_batches_for_step(step)
        norms = self.objective.normalizers([b for b, _, _ in batches])
        counts = torch.tensor(norms + [sum(n for _, n, _ in batches), sum(p for _, _, p in batches)],
                              dtype=torch.float64, device=self.dist.device)
        rank_progress.report(rank_progress.COLLECTIVE)
        all_reduce_sum(counts)
        rank_progress.report(rank_progress.FORWARD_BACKWARD)
        sums = torch.zeros(len(self.objective.stat_keys), dtype=torch.float64, device=self.dist.device)
        for i, (batch, _, _) in enumerate(batches):
            batch = to_device(batch, self.dist.device)
            with self.engine.accumulation_context(i == len(batches) - 1), self.precision.autocast():
                loss, stats = self.objective.micro_batch_loss(self.engine.module, batch, counts,
                                                              self.dist.world_size)
                self.engine.backward(loss)
            sums += stats
        rank_progress.report(rank_progress.COLLECTIVE)
        all_reduce_sum(sums)
        rank_progress.report(rank_progress.FORWARD_BACKWARD)
        lr = self.engine.lr
        grad_norm = self.engine.step()
        metrics = self.objective.step_metrics(sums, counts)
        return {**metrics, "lr": lr, "grad_norm": grad_norm, "tokens": int(counts[-2]),
                "attended_pairs": int(counts[-1])}

    # ------------------------------------------------------------------------------------ evaluation

    def log_eval(self) -> Optional[float]:
        """The objective's evaluation, logged as an ``eval`` record (``probe`` when it has no held-out loss)."""
        rank_progress.report(rank_progress.EVAL)
        fields = self.objective.evaluate(self)
        record: dict = {"kind": "eval", "step": self.step, **(fields or {})}
        if "eval_loss" not in record:  # "eval" records carry an eval_loss (the loss plot reads it)
            record["kind"] = "probe"
        self.evals.append(record)
        if self.metrics and len(record) > 2:
            self.metrics.log(record)
        return record.get("eval_loss")

    def exact_match(self) -> Optional[dict]:
        """Held-out prompts answered greedily on rank 0, scored by exact match (train.exact_match_samples)."""
        n = self.cfg.train.exact_match_samples
        if not n or not self.data.eval_samples:
            return None
        if self.engine.forward_is_collective or self.sequence_parallel is not None:
            if self.dist.is_main:
                log.warning("train.exact_match_samples: skipped under parallelism=%s (rank-0 generation would"
                            " wait on sharded weights); evaluate the saved model instead", self.cfg.parallelism.name)
            return None
        if not self.dist.is_main:
            return None
        samples = [s for s in self.data.eval_samples if any(m["role"] == "assistant" for m in s.get("messages", []))]
        if not samples:  # pretraining text has no prompt/answer to check
            return None
        from launcher.inference.generation import exact_match_eval
        from launcher.inference.prompts import prompt_renderer

        from launcher.training.probes import ScoringProgress

        samples = samples[:n]
        batch_size = 16
        when = "before training" if self.step == 0 else f"step {self.step}"
        # Each batch generates up to max_new_tokens tokens: one forward each.
        progress = ScoringProgress(f"exact match {when}: {len(samples)} prompts", -(-len(samples) // batch_size),
                                   self.cfg.train.max_new_tokens, True)
        with self.precision.autocast():
            result = exact_match_eval(self.model, self.tokenizer, samples, self.cfg.train.max_new_tokens,
                                      self.dist.device, prompt_renderer(self.tokenizer, self.cfg), batch_size=batch_size,
                                      vision=getattr(self.data, "vision", None), on_batch=progress.update)
        progress.close()
        return result

    # ------------------------------------------------------------------------------------ saving

    def save_checkpoint(self) -> None:
        rank_progress.report(rank_progress.CHECKPOINT)
        meta = {"step": self.step, "world_size": self.dist.world_size, "trained_tokens": self.trained_tokens_total,
                "epoch": self.step // self.steps_per_epoch, "step_in_epoch": self.step % self.steps_per_epoch,
                # what a resume on another topology needs (launcher.engines.reshard)
                "parallelism": self.cfg.parallelism.name, "micro_batch_size": self.cfg.train.micro_batch_size,
                "grad_accum": self.grad_accum, "sequence_parallel": self.sequence_size}
        path = ckpt.save_checkpoint(self.run_dir, self.step, self.engine, meta, self.dist,
                                    self.cfg.train.keep_checkpoints, objective_state=self.objective.state_dict(),
                                    ledger=self._ledger())
        self._last_save = time.monotonic()
        if self.dist.is_main:
            log.info("checkpoint saved: %s", path)

    def save_final(self) -> None:
        rank_progress.report(rank_progress.FINAL_SAVE)
        directory = self.run_dir / MODEL_DIR
        try:
            with disk_full_guard(directory, "the final model", lambda: written_so_far(directory)):
                self.engine.save_final(directory, self.tokenizer)
                if self.dist.is_main:
                    from launcher.models.vision import save_vision_files

                    save_vision_files(directory, self.cfg, self.tokenizer)  # VL: processor config, image chat template
        except DiskFullError:
            if self.dist.is_main:  # a model cut short must not pass for the run's result
                shutil.rmtree(directory, ignore_errors=True)
            raise
        if self.dist.is_main and self.cfg.method.finetuning in ("lora", "oft") and self.cfg.model.name_or_path is None:
            # Point the adapter at the random-init base saved beside it, so standard PEFT loading works;
            # load_trained_model also finds it there if the run dir has moved.
            point_adapter_at_base(directory, self.run_dir / BASE_MODEL_DIR)
        if self.dist.is_main:
            log.info("model saved: %s", directory)
        if self.dist.is_main and self.cfg.run.link_model_to:
            from launcher.training.model_links import link_final_model

            for line in link_final_model(directory, Path(self.cfg.run.link_model_to)):
                log.warning("%s", line)
            log.info("model linked into %s (where LLaMA-Factory's follow-up YAMLs look for it)",
                     self.cfg.run.link_model_to)

    # ------------------------------------------------------------------------------------ the loop

    def fit(self) -> dict:
        """Train from ``self.step`` (0, or where ``resume`` left it) to ``total_steps``; returns the summary that
        rank 0 also writes to the run dir. Evaluates before and after unless ``evaluations`` is off."""
        summary: dict = {"run_dir": str(self.run_dir), "total_steps": self.total_steps}
        if self.step == 0 and self.evaluations:
            summary.update(self._evaluate_before())
        progress = self._progress_bar()
        self.engine.train()
        self.meter.start_window()
        self._last_save = time.monotonic()  # the clock of timed saves counts training time, not setup
        last_loss = None
        try:
            while self.step < self.total_steps:
                stats = self._train_one_step(progress)
                last_loss = stats["loss"]
                self._log_train(stats)
                saved = self._scheduled_eval_and_save()
                stop, save_due = self._boundary_decision()
                if stop:
                    return self._stop_early(progress, summary)
                if save_due and not saved:
                    if self.dist.is_main:
                        log.info("train.save_every_minutes=%g passed since the last checkpoint", self.save_minutes)
                    self.save_checkpoint()
        except BaseException:
            # The bar's line ends before the error is printed: `error: ...` on a line of its own, not after a
            # half-drawn bar where a user skimming the log misses it.
            if progress is not None:
                progress.close()
            raise
        if progress is not None:
            progress.close()
        return self._finish(summary, last_loss)

    def _evaluate_before(self) -> dict:
        """The held-out loss and exact match of the untrained model (a fresh run's step 0)."""
        before = self.log_eval()
        em_before = self.exact_match()
        if self.dist.is_main and em_before is not None:
            self.metrics.log({"kind": "exact_match", "step": 0, "exact_match": em_before["exact_match"]})
        return {"eval_loss_before": before, "exact_match_before": em_before and em_before["exact_match"]}

    def _progress_bar(self):
        """Rank 0's tqdm bar, starting at the resumed step; None on the other ranks."""
        if not self.dist.is_main:
            return None
        from tqdm import tqdm

        # In a log file (SLURM, torchrun --tee) a bar redrawn every second is noise: update twice a minute.
        return tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                    dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def _train_one_step(self, progress) -> dict:
        """One optimizer step, timed, counted and shown on the bar."""
        self.meter.begin_step()
        stats = self.train_step(self.step)
        self.meter.end_step(stats)
        self.step += 1
        self.trained_tokens_total += stats["trained_tokens"]
        rank_progress.report(rank_progress.FORWARD_BACKWARD, self.step)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}")
        return stats

    def _log_train(self, stats: dict) -> None:
        """A ``train`` record every train.log_every steps and at the last step."""
        if not (self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps):
            return
        trained_per_s, tokens_per_s = self.meter.window_rates()
        record = {
            "kind": "train", "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
            "loss": stats["loss"], "lr": stats["lr"], "grad_norm": stats["grad_norm"],
            "trained_tokens_per_s": trained_per_s, "tokens_per_s": tokens_per_s,
            "trained_tokens_seen": self.trained_tokens_total,
        }
        record.update(self.objective.extra_train_metrics(stats))
        if self.metrics:
            self.metrics.log(record)

    def _scheduled_eval_and_save(self) -> bool:
        """train.eval_every and train.save_every; the last step is left to ``_finish``. True when it saved."""
        t = self.cfg.train
        if self.evaluations and t.eval_every and self.step % t.eval_every == 0 and self.step != self.total_steps:
            self.log_eval()
        if t.save_every and self.step % t.save_every == 0 and self.step != self.total_steps:
            self.save_checkpoint()
            return True
        return False

    def _finish(self, summary: dict, last_loss: Optional[float]) -> dict:
        """After the last step: the measured figures, the final evaluation, the saved model, the summary."""
        # Measured before the final evaluation and save, so that throughput and memory are training's own.
        summary.update(self.meter.summary(self.model.config, time.time()))
        if self.dist.device.type == "cuda":
            summary["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
            summary["cuda_max_reserved_gb"] = torch.cuda.max_memory_reserved(self.dist.device) / 2**30
        summary["data_stats"] = {k: v for k, v in self.data.stats.items() if isinstance(v, (int, float, str))}
        final_eval = self.log_eval() if self.evaluations else None
        em_after = self.exact_match() if self.evaluations else None
        if em_after is not None and self.metrics:
            self.metrics.log({"kind": "exact_match", "step": self.step, "exact_match": em_after["exact_match"]})
        if self.cfg.train.save_model:
            self.save_final()
            rank_progress.report(rank_progress.FINAL_SAVE)  # the model is written: progress
        summary.update(
            final_step=self.step, final_train_loss=last_loss, eval_loss_after=final_eval,
            exact_match_after=em_after and em_after["exact_match"],
            exact_match_examples=em_after and em_after["examples"],
            trained_tokens=self.trained_tokens_total, setup_seconds=round(self.meter.setup_seconds, 2),
            parallelism=self.engine.report(), attention=self.attn_implementation,
            compute_dtype=str(self.precision.compute_dtype).replace("torch.", ""),
        )
        self.objective.finish(self, summary)
        if self.dist.is_main:
            self._write_summary(summary, final_eval, em_after)
        return summary

    def _write_summary(self, summary: dict, final_eval: Optional[float], em_after: Optional[dict]) -> None:
        """Rank 0: summary.json, loss.png, and the before -> after figures in the log."""
        # summary.json says the run finished: written whole or not at all.
        path = self.run_dir / SUMMARY_FILE
        with disk_full_guard(path, "the run summary"):
            try:
                path.with_name(path.name + ".tmp").write_text(json.dumps(summary, indent=1))
                os.replace(path.with_name(path.name + ".tmp"), path)
            finally:
                path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        rank_progress.report(rank_progress.FINAL_SAVE)  # the summary is written: progress (the plot comes next)
        plot = plot_loss(self.run_dir)
        log.info("done: %s", self.run_dir)
        if summary.get("eval_loss_before") is not None and final_eval is not None:
            log.info("eval loss %.4f -> %.4f", summary["eval_loss_before"], final_eval)
        if summary.get("exact_match_before") is not None and em_after is not None:
            log.info("held-out exact match %.1f%% -> %.1f%% (%d prompts)", 100 * summary["exact_match_before"],
                     100 * em_after["exact_match"], em_after["n"])
        self.objective.log_result(self)
        if plot:
            log.info("loss plot: %s", plot)

    def _boundary_decision(self) -> tuple[bool, bool]:
        """(stop, timed save) agreed by all ranks; no collective when neither can happen (no flag, no timer)."""
        if self.step >= self.total_steps or (self.stop_flag is None and not self.save_minutes):
            return False, False
        due = bool(self.save_minutes) and self.dist.is_main and \
            time.monotonic() - self._last_save >= self.save_minutes * 60
        rank_progress.report(rank_progress.COLLECTIVE)
        decision = preemption.boundary_decision(self.stop_flag, due, self.dist.device)
        rank_progress.report(rank_progress.FORWARD_BACKWARD)
        return decision

    def _stop_early(self, progress, summary: dict) -> dict:
        """All ranks agreed to stop (preemption or time limit near): checkpoint this step and leave."""
        if progress is not None:
            progress.close()
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None or latest.name != ckpt.step_dir_name(self.step):
            self.save_checkpoint()
        if self.dist.is_main:
            preemption.mark_stopped(self.run_dir, self.step, ckpt.latest_checkpoint(self.run_dir),
                                    getattr(self.stop_flag, "received", None))
            log.warning("stopped at step %d of %d on a stop signal; checkpoint saved: %s", self.step,
                        self.total_steps, ckpt.latest_checkpoint(self.run_dir))
        summary.update(preempted=True, final_step=self.step, trained_tokens=self.trained_tokens_total)
        return summary

    def close(self) -> None:
        if self.metrics:
            self.metrics.finish()

