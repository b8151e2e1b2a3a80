"""Where things are: the repository, and the names of what a run dir holds.

Every module that reads or writes a run dir takes these names from here, so the launcher (which writes the
config and reads results), the ranks (which write checkpoints, metrics and the model) and the after-training
tools (which read them back) cannot drift apart.
"""
from __future__ import annotations

from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[1]
"""Where the running code lives: the checkout, or a run's code snapshot (RUN_DIR/code) on the ranks."""

CODE_SNAPSHOT_DIR = "code"
"""In a run dir (or sweep dir): the launcher/, recipes/ and conf/ trees as they were at submit time; the
ranks run from it (cwd and PYTHONPATH), so a queued job runs the code it was submitted with."""
SNAPSHOT_SOURCE_FILE = "SOURCE_CHECKOUT"
"""In a code snapshot: the path of the checkout it was copied from (data/ and the cache stay there)."""


def _checkout_of(code_root: Path) -> Path:
    source = code_root / SNAPSHOT_SOURCE_FILE
    return Path(source.read_text().strip()) if source.is_file() else code_root


REPO_ROOT = _checkout_of(CODE_ROOT)
"""The checkout: conf/, data/ and the default cache live under it (also when the code runs from a snapshot)."""

LF_DATA_ENV = "LLAMAFACTORY_DATA"
"""The environment variable that names LLaMA-Factory's data folder (``data/`` of a LLaMA-Factory clone, with its
dataset_info.json and demo files), which the demo presets (data=alpaca_demo, kto_demo, c4_demo, mllm_demo,
wiki_demo) read; conf/data/*_demo.yaml name it and ``LF_DATA_BESIDE_CHECKOUT``, its fallback."""
LF_DATA_BESIDE_CHECKOUT = REPO_ROOT.parent / "shared" / "datasets" / "llamafactory-demo"
"""Where the demo presets look when LLAMAFACTORY_DATA is unset (``../shared/datasets/llamafactory-demo``)."""
LF_DATA_SOURCE = "git clone https://github.com/hiyouga/LLaMA-Factory: LLaMA-Factory/data"
"""Where LLaMA-Factory keeps dataset_info.json and its demo files, for messages."""

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
LORA_INIT_DIR = "lora_init"
"""PiSSA/OLoRA runs: the adapter as initialized, to convert the trained one back to plain LoRA on save."""
CHECKPOINTS_DIR = "checkpoints"
"""``step-NNNNNNN`` folders, each complete when it holds ``COMPLETE`` (what is inside: launcher.engines.checkpoint_layout)."""
LOG_DIR = "logs"
"""Per-rank (and per-node) logs: torchrun's ``logs/node<K>/<attempt>/<local rank>/{stdout,stderr}.log`` under
SLURM, ``logs/torchrun/...`` on one machine."""
NODE_COMMAND_FILE = "command.txt"
"""In ``logs/node<K>``: the torchrun command that node ran."""
SUBMITTED_SCRIPT = "submitted.sbatch"
"""The exact script given to sbatch."""
BENCH_FILE = "bench.json"
"""``launcher bench``'s report (speed, memory, MFU), unless --out names another file."""
