"""What every recipe shares: the run it belongs to, the pieces of setup every method does the same way, and
the Trainer it hands the loop to. A recipe (recipes/<method>.py) reads top to bottom: it says which data,
objective and reference it uses, and builds the rest from here.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from launcher.config.schema import Config, resolve_grad_accum
from launcher.engines.base import build_engine
from launcher.engines.distributed import DistInfo
from launcher.engines.model_build import build_model
from launcher.engines.precision import resolve_precision
from launcher.engines.sequence_parallel import data_parallel_coordinates, init_sequence_parallel
from launcher.errors import ConfigError, DataError
from launcher.models.build import choose_attn_implementation, count_parameters
from launcher.models.tokenizers import load_tokenizer
from launcher.paths import BASE_MODEL_DIR
from launcher.training import progress
from launcher.training.host_heap import return_freed_memory, sharded_cpu_rank
from launcher.training.batching import steps_per_epoch
from launcher.training.meter import StepMeter
from launcher.training.preemption import StopFlag
from launcher.training.trainer import Trainer

log = logging.getLogger("launcher.recipe")


class Recipe:
    """setup() -> train() -> cleanup(), on every rank. Subclasses write ``setup``."""

    def __init__(self, cfg: Config, run_dir: Path, dist_info: DistInfo):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = dist_info
        self.trainer: Optional[Trainer] = None
        self.sequence_parallel = None
        """parallelism.sequence_parallel > 1: this rank's sequence group (made in ``start_setup``)."""
        self._stop_flag: Optional[StopFlag] = None
        self.evaluations = True
        """False (launcher bench): no held-out loss, exact match or probes before, during or after training."""
        if sharded_cpu_rank(cfg.parallelism.strategy, dist_info.device.type, dist_info.world_size):
            return_freed_memory()  # before the model: freed gathers must leave the rank (launcher.training.host_heap)

    # -------------------------------------------------------------------- what tests and the entry point use

    @property
    def stop_flag(self):
        return self._stop_flag

    @stop_flag.setter
    def stop_flag(self, flag) -> None:
        """A preemption signal makes every rank checkpoint and stop at a step boundary (set by the entry point)."""
        self._stop_flag = flag
        if self.trainer is not None:
            self.trainer.stop_flag = flag

    @property
    def step(self) -> int:
        return self.trainer.step if self.trainer is not None else 0

    @property
    def engine(self):
        return self.trainer.engine

    @property
    def model(self):
        return self.trainer.engine.model

    def train(self) -> dict:
        return self.trainer.fit()

    def cleanup(self) -> None:
        if self.trainer is not None:
            self.trainer.close()

    # -------------------------------------------------------------------- setup pieces

    def start_setup(self) -> None:
        """Seed, the start-up clock, tokenizer, precision and attention: the first steps of every setup."""
        cfg, dist = self.cfg, self.dist
        # Where start-up time goes, for the bench report: process start -> setup (interpreter, imports,
        # config), each phase of setup, then to the first step.
        self.meter = StepMeter()
        self.meter.phase("before_setup")
        torch.manual_seed(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg.model)
        self.meter.phase("tokenizer")
        self.attn_impl = choose_attn_implementation(cfg.model.attn_implementation, dist.device)
        self.precision = resolve_precision(cfg.model.dtype, dist.device, cfg.method.pure_bf16)
        # parallelism.sequence_parallel: this rank's sequence group (None: each rank its own rows)
        self.sequence_parallel = init_sequence_parallel(cfg.parallelism.sequence_parallel, dist.rank, dist.world_size)
        if dist.is_main:
            log.info("attention: %s, dtype: %s, device: %s, world size: %d, CPU threads per rank: %d",
                     self.attn_impl, self.precision.describe(), dist.device,
                     dist.world_size, torch.get_num_threads())
        progress.report(progress.DATA)

    def log_data(self, data) -> None:
        if self.dist.is_main:
            log.info("data: %s", ", ".join(f"{k}={v}" for k, v in data.stats.items() if not isinstance(v, dict)))

    def log_model(self, model) -> None:
        total, trainable = count_parameters(model)
        if self.dist.is_main:
            log.info("model: %.2fM parameters, %.2fM trainable (%s)", total / 1e6, trainable / 1e6,
                     self.cfg.method.name)

    def plan_steps(self, n_rows: int) -> None:
        """Accumulation, steps per epoch and total steps, from the data and train.* (same on every rank)."""
        cfg, dist = self.cfg, self.dist
        # The ranks of a sequence group share rows: the data is split over the data-parallel ranks only.
        _, data_world = data_parallel_coordinates(dist.rank, dist.world_size, cfg.parallelism.sequence_parallel)
        self.grad_accum = self.resumed_grad_accum() or resolve_grad_accum(cfg, data_world)
        self.steps_per_epoch = steps_per_epoch(n_rows, data_world, cfg.train.micro_batch_size, self.grad_accum)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"data: {n_rows} training rows are fewer than one global batch"
                f" ({cfg.train.micro_batch_size} x {self.grad_accum} x {data_world}); lower train.micro_batch_size"
            )
        if cfg.train.max_steps > 0:
            self.total_steps = cfg.train.max_steps
        else:
            self.total_steps = max(1, int(math.ceil(cfg.train.epochs * self.steps_per_epoch)))

    def resumed_grad_accum(self) -> Optional[int]:
        """On a resume onto another world size or parallelism (launcher.engines.reshard): the grad_accum that keeps
        the checkpoint's global batch, said in the log; None otherwise. The checkpoint is the one the trainer will
        pick (its integrity is checked there)."""
        from launcher.engines.checkpoint_layout import latest_checkpoint
        from launcher.engines.reshard import (ignored_grad_accum, kept_grad_accum, read_meta, reshard_refusal,
                                              sequence_parallel_reshard_refusal)
        from launcher.training.preemption import choose_resume_checkpoint

        cfg, world = self.cfg, self.dist.world_size
        directory = choose_resume_checkpoint(cfg.run.resume, self.run_dir, latest_checkpoint(self.run_dir))
        meta = read_meta(directory) if directory is not None else None
        if meta is None or (meta.get("world_size") == world and meta.get("parallelism", cfg.parallelism.name)
                            == cfg.parallelism.name
                            and meta.get("sequence_parallel", 1) == cfg.parallelism.sequence_parallel):
            return None
        problem = sequence_parallel_reshard_refusal(directory, meta, cfg) or \
            reshard_refusal(directory, meta, cfg.parallelism.name, world)
        if problem:
            raise ConfigError(problem)
        accum = kept_grad_accum(meta, cfg.train.micro_batch_size, world, Path(directory).name)
        if self.dist.is_main:
            log.info("resuming %s (world size %d, parallelism=%s) at world size %d, parallelism=%s: train.grad_accum"
                     " %d -> %d keeps the global batch %d (micro_batch_size %d x grad_accum x world size)",
                     Path(directory).name, meta["world_size"], meta.get("parallelism"), world, cfg.parallelism.name,
                     meta["grad_accum"], accum, cfg.train.micro_batch_size * accum * world,
                     cfg.train.micro_batch_size)
            ignored = ignored_grad_accum(cfg.train.grad_accum, meta, accum, cfg.train.micro_batch_size * accum * world)
            if ignored:
                log.warning("%s", ignored)
        return accum

    def build_policy(self, prepare: Optional[Callable[[nn.Module], None]] = None) -> nn.Module:
        """The model this run trains (launcher.engines.model_build.build_model; master weights stay fp32, a GPU
        computes in bf16 under the precision policy), its parameters logged, and the run's steps planned from
        ``self.data.train``. ``prepare``: a change to the built model before its trainable parameters are counted.

        A run that saves a model (train.save_model or train.save_every) keeps a random-init LoRA base in
        run_dir/BASE_MODEL_DIR: it exists nowhere else, and the saved adapter must be reloadable."""
        cfg = self.cfg
        progress.report(progress.MODEL_LOAD)
        saves_model = cfg.train.save_model or cfg.train.save_every
        model = build_model(cfg, self.tokenizer, self.dist, self.attn_impl, self.precision,
                            save_base_to=self.run_dir / BASE_MODEL_DIR if saves_model else None)
        if prepare is not None:
            prepare(model)
        self.meter.phase("model")
        self.log_model(model)
        self.plan_steps(len(self.data.train))
        return model

    def build_engine(self, model: nn.Module, objective):
        """The engine (DDP, DeepSpeed ZeRO or FSDP2, as parallelism.* says) around the objective's loss module."""
        progress.report(progress.ENGINE)
        return build_engine(self.cfg, model, self.dist, self.total_steps, loss_module=objective.loss_module,
                            precision=self.precision)

    def make_trainer(self, engine, data, objective) -> Trainer:
        """The Trainer for this run, resumed from a checkpoint when there is one to continue."""
        self.meter.phase("engine")
        self.trainer = Trainer(
            self.cfg, self.run_dir, self.dist, engine=engine, data=data, objective=objective,
            tokenizer=self.tokenizer, precision=self.precision, grad_accum=self.grad_accum,
            steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps, meter=self.meter,
            attn_implementation=self.attn_impl, evaluations=self.evaluations, stop_flag=self._stop_flag,
            sequence_parallel=self.sequence_parallel,
        )
        self.trainer.resume()
        self.meter.phase("resume_and_metrics")
        self.meter.end_setup()
        return self.trainer
