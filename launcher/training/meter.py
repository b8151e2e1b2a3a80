"""Throughput and start-up timing, measured beside the training loop (not inside it).

The loop calls ``begin_step`` / ``end_step`` around each optimizer step and ``window_rates`` when it logs; the
recipe marks its setup phases with ``phase``. ``summary`` gives what ``launcher bench`` reports: steady-state
tokens/s and model FLOP/s (the steps after the first, which pays for warm-up and lazy allocation), the time
from the command (process start) to the first step and where it went, the first step's own time, peak memory.
"""
from __future__ import annotations

import time
from typing import Optional

from launcher.training.flops import training_flops
from launcher.training.process_stats import PhaseClock, peak_rss_gb, process_start_time


class StepMeter:
    def __init__(self, started_at: Optional[float] = None):
        self.startup = PhaseClock(started_at=started_at if started_at is not None else process_start_time())
        self.first_step_started: Optional[float] = None
        self.first_step_done: Optional[float] = None
        self.steady = {"trained": 0, "tokens": 0, "pairs": 0}
        self.steps = 0
        self.setup_started = time.time()
        self.setup_seconds = 0.0
        self._window_start, self._window_trained, self._window_tokens = time.time(), 0, 0

    def phase(self, name: str) -> None:
        """A setup phase ended now (tokenizer, data, model, engine, ...)."""
        self.startup.done(name)

    def end_setup(self) -> None:
        """Setup is over (the meter was made when it began)."""
        self.setup_seconds = time.time() - self.setup_started

    def start_window(self) -> None:
        self._window_start, self._window_trained, self._window_tokens = time.time(), 0, 0

    def begin_step(self) -> None:
        if self.first_step_started is None:
            self.startup.done("after_setup")
            self.first_step_started = time.time()

    def end_step(self, stats: dict) -> None:
        if self.first_step_done is None:
            self.first_step_done = time.time()
        else:
            self.steady["trained"] += stats["trained_tokens"]
            self.steady["tokens"] += stats["tokens"]
            self.steady["pairs"] += stats.get("attended_pairs", 0)
        self.steps += 1
        self._window_trained += stats["trained_tokens"]
        self._window_tokens += stats["tokens"]

    def window_rates(self) -> tuple[float, float]:
        """(trained tokens/s, non-pad tokens/s) since the last call; starts a new window."""
        elapsed = max(time.time() - self._window_start, 1e-9)
        rates = (self._window_trained / elapsed, self._window_tokens / elapsed)
        self.start_window()
        return rates

    def summary(self, model_config, train_end: float) -> dict:
        out: dict = {}
        if self.first_step_done is not None and self.steps > 1:
            steady = max(train_end - self.first_step_done, 1e-9)
            s = self.steady
            flops = training_flops(model_config, s["tokens"], s["trained"], s["pairs"])
            out.update(steady_trained_tokens_per_s=s["trained"] / steady, steady_tokens_per_s=s["tokens"] / steady,
                       steady_steps=self.steps - 1, steady_seconds=steady, model_flops_per_s=flops / steady)
        if self.first_step_done is not None:
            out["time_to_first_step_s"] = round(self.first_step_started - self.startup.started_at, 3)
            out["startup_seconds"] = {k: round(v, 3) for k, v in self.startup.phases.items()}
            out["first_step_seconds"] = round(self.first_step_done - self.first_step_started, 3)
        out["peak_rss_gb"] = round(peak_rss_gb(), 3)
        return out
