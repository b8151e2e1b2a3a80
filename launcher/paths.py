"""Where things are: the repository, and the names of what a run dir holds.

Every module that reads or writes a run dir takes these names from here, so the launcher (which writes the
config and reads results), the ranks (which write checkpoints, metrics and the model) and the after-training
tools (which read them back) cannot drift apart.
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout: conf/, data/ and the default cache live under it."""

CONFIG_FILE = "config.yaml"
"""The resolved config, written by the launcher; what every rank reads (no Hydra on the ranks)."""
METRICS_FILE = "metrics.jsonl"
"""One JSON object per logged event (train step, eval, exact match), appended by rank 0."""
SUMMARY_FILE = "summary.json"
"""What a finished run reports: eval before/after, throughput, how parameters were sharded."""
MODEL_DIR = "model"
"""The final model in HF format, or the PEFT adapter."""
BASE_MODEL_DIR = "base_model"
"""LoRA on a random-init model: the base the adapter belongs to (it exists nowhere else)."""
CHECKPOINTS_DIR = "checkpoints"
"""``step-NNNNNNN`` folders, each complete when it holds ``COMPLETE``."""
CHECKPOINT_STATE_FILE = "state.pt"
"""In a checkpoint: the trainable weights (DDP) or the scheduler and metadata (sharded engines)."""
LOG_DIR = "logs"
"""Per-rank (and per-node) logs."""
