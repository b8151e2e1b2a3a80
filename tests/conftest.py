"""Shared fixtures: runs go to a temporary output root; tiny models, few steps."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DEMO = Path(os.environ.get("LAUNCHER_LF_DEMO_DIR", REPO_ROOT.parent / "shared" / "datasets" / "llamafactory-demo"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def output_root(tmp_path) -> Path:
    root = tmp_path / "outputs"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory) -> Path:
    """The default tiny Qwen2 (random init) with its character tokenizer and ChatML template, saved as HF: what
    a ``model_name_or_path`` or ``model.name_or_path`` names."""
    import torch

    from launcher.config.compose import compose_config
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config([])
    tokenizer = load_tokenizer(cfg.model)
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    out = tmp_path_factory.mktemp("hf") / "tiny-qwen2"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- trained run dirs
# A tiny LoRA run and a tiny full run, a few steps each: what the after-training tests (export, predict,
# chat, serve) and the LLaMA-Factory prediction/merge files read.

FAST = ["train.micro_batch_size=4", "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0",
        "data.max_samples=200", "train.eval_max_batches=1", "logger=none", "train.exact_match_samples=0"]


def train_run(root, name, overrides):
    from launcher.config.compose import compose_config
    from launcher.engines.distributed import init_distributed
    from launcher.launch.rundir import make_run_dir, write_run_config
    from recipes.sft import SFTRecipe

    cfg = compose_config([f"run.output_root={root}", *FAST, *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    recipe = SFTRecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    recipe.train()
    recipe.cleanup()
    return run_dir


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("after-lora")
    # lr high enough that the adapter moves the logits visibly within a few steps.
    return train_run(root, "lora", ["method=lora", "method.lr=2e-2", "train.max_steps=4", "train.save_every=2"])


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("after-full")
    return train_run(root, "full", ["method=sft_full", "method.lr=2e-3", "train.max_steps=2", "train.save_every=1"])


# ----------------------------------------------------------------------------- the SLURM test cluster
# One real cluster per test session: ``slurm/start-cluster.sh --nodes 2`` runs once (a second call is a
# no-op of about a second) and SLURM_CONF is exported. Where slurm is not installed, cluster tests skip
# with the reason; pure tests (rendering, preflight) still run.

SLURM_HOME = Path(os.environ.get("LAUNCHER_SLURM_HOME", "/var/tmp/launcher-slurm"))


def _slurm_installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in ("slurmctld", "slurmd", "sbatch", "munged"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running two-node test cluster; yields the SLURM_CONF path."""
    if not _slurm_installed():
        pytest.skip("slurm is not installed here: run slurm/start-cluster.sh once (it installs slurmctld, slurmd,"
                    " slurmdbd, munge and mariadb with apt-get), then rerun")
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "slurm" / "start-cluster.sh"), "--nodes", "2"],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"slurm/start-cluster.sh failed:\n{done.stdout}\n{done.stderr}")
    conf = str(SLURM_HOME / "etc" / "slurm.conf")
    os.environ["SLURM_CONF"] = conf
    os.environ["PATH"] = "/usr/sbin:" + os.environ.get("PATH", "")
    yield conf


@pytest.fixture
def runs_root(tmp_path_factory) -> Path:
    """A fresh output root per test: job ids restart at 1 after a purge, so never reuse a submitit folder."""
    return tmp_path_factory.mktemp("runs")


# ----------------------------------------------------------------------------- one VL server
# tests/vl/test_serve_vl.py and tests/vl/test_serve_limits.py ask the same `launcher serve` over a tiny Qwen2-VL
# folder: one server per session instead of one per module.


@pytest.fixture(scope="session")
def vl_serve(tmp_path_factory):
    """(server, image root): ``launcher serve`` over a tiny Qwen2-VL whose weights are redrawn at std 0.5 (its
    greedy answer depends on the picture), ``--image-root`` a folder with one real image, a FIFO, a symlink out
    of the root and a subfolder, and a sibling folder outside it that shares its name as a prefix."""
    pytest.importorskip("openai")
    pytest.importorskip("httpx")
    from PIL import Image

    from tests.after.test_serve_api import Server
    from tests.vl.helpers import REPO, save_tiny_vl_folder

    root = tmp_path_factory.mktemp("images")
    Image.new("RGB", (56, 56), (220, 30, 30)).save(root / "red.png")
    os.mkfifo(root / "pipe.png")
    (root / "out.png").symlink_to("/etc/hostname")
    (root / "sub").mkdir()
    outside = root.parent / (root.name + "-sibling")
    outside.mkdir()
    Image.new("RGB", (56, 56), (0, 0, 0)).save(outside / "black.png")

    folder = save_tiny_vl_folder(tmp_path_factory.mktemp("hf") / "tiny-qwen2-vl", weight_std=0.5)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    server = Server([str(folder), "--model-name", "vl", "--image-root", str(root)], env,
                    tmp_path_factory.mktemp("serve") / "server.log")
    yield server, root
    server.stop()
