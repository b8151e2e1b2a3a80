"""parallelism.sequence_parallel=2 on 2 gloo ranks (one sequence group) trains exactly as one rank does.

One torchrun launch trains the cases one after another (tests/seqpar/worker_seq.py); each is compared with
the same config trained by one process (sequence_parallel=1) in this process. Both see the same rows at every
step (one data-parallel rank either way), so the held-out loss before training, every step's loss and
gradient norm, and the held-out loss after must agree within float tolerance:
- Qwen2-VL, packed rows mixing video, image and text-only samples, full fine-tuning with a trainable vision
  tower, FSDP2 (sharded: checked);
- text, unpacked rows (padding), full fine-tuning, DDP;
- text, packed rows, full fine-tuning, FSDP2, checkpointed at step 2; then resumed from that checkpoint by a
  second run, whose step 3 and final held-out loss must be the uninterrupted run's, bit for bit;
- Qwen2.5-VL (video positions follow time), the same mixed packed rows, full fine-tuning, ZeRO-3;
- text, packed rows, LoRA, ZeRO-3.
The gradient norm is the norm of the whole gradient after the reduction over ranks; a step's loss after the first
depends on every earlier update, so equal losses over steps also say the gradients were equal.

The config checks (divisors of the world size and of the heads, methods) need no ranks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.checks.preflight import run_preflight
from launcher.config.compose import compose_config
from launcher.errors import ConfigError, PreflightError
from launcher.launch.rundir import make_run_dir, write_run_config

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker_seq.py")
COMMON = ["train.micro_batch_size=2", "train.grad_accum=1", "train.max_steps=3", "train.log_every=1",
          "train.eval_every=0", "train.exact_match_samples=0", "train.save_model=false", "train.warmup_steps=0",
          "logger=none", "train.eval_max_batches=1", "model.dtype=float32"]
VL = ["data.dataset_dir={mix}", "data.datasets=[mix]", "data.val_size=3", "data.packing=true",
      "data.cutoff_len=160", "model.freeze_vision_tower=false", "model.freeze_projector=false", "method.lr=3e-3"]
TEXT_PACKED = ["data.max_samples=32", "data.packing=true", "data.cutoff_len=64"]
CASES = {  # in this order: DeepSpeed's ZeRO-3 leaves patches behind in its process, so it trains last
    "vl_video_packed_full_fsdp": ["model=tiny_qwen2_vl", *VL, "parallelism=fsdp"],
    "text_unpacked_full_ddp": ["data.max_samples=32", "data.packing=false", "data.cutoff_len=48",
                               "method.lr=1e-3"],
    "text_packed_full_fsdp": [*TEXT_PACKED, "method.lr=1e-3", "train.save_every=2", "parallelism=fsdp"],
    "vl_video_packed_full_zero3": ["model=tiny_qwen2_5_vl", *VL, "parallelism=zero3"],
    "text_packed_lora_zero3": [*TEXT_PACKED, "method=lora", "method.lr=2e-3", "parallelism=zero3"],
}
GRAD_NORM_REL = 1e-4
"""The VL cases' gradient norms: at step 1 (equal weights) 4e-7 (FSDP2) and 3e-6 (ZeRO-3) relative from one
rank's, growing to 1e-5 / 2e-5 by step 3 while the losses stay within 2e-7 (text cases: 2e-7 throughout). The
vision tower runs on the whole row on both ranks and each rank's backward reaches it only through its own slice,
so its gradient is a sum of two partial ones, added in another order than one rank adds them."""
RESUMED = "text_packed_full_fsdp"
"""The case whose sequence-parallel run is resumed from its step-2 checkpoint by another run."""
ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images", "videos": "videos"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def mixed_video_dataset(folder: Path) -> Path:
    """12 samples: video, image and text-only ones in turn (small made videos and images, nothing shipped); packed
    at 160 tokens, a row holds samples of each kind."""
    from tests.vl.helpers import write_images, write_video

    folder.mkdir(parents=True, exist_ok=True)
    images = write_images(folder, [(56, 56), (84, 56)])
    videos = [write_video(folder / f"v{k}.mp4", frames=8, fps=4, seed=k).name for k in range(2)]

    def turn(question, answer):
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

    rows = []
    for k in range(12):
        if k % 3 == 0:
            rows.append({"messages": turn("<video>What moves?", "the colours"), "videos": [videos[k % 2]]})
        elif k % 3 == 1:
            rows.append({"messages": turn("<image>Colour?", "red and blue"), "images": [images[k % 2]]})
        else:
            rows.append({"messages": turn("Say hi.", "hi there")})
    (folder / "mix.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"mix": dict(ENTRY, file_name="mix.json")}))
    return folder


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def figures(run_dir: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r.get("loss"), r.get("grad_norm"), r.get("eval_loss")) for r in records(run_dir)]


@pytest.fixture(scope="module")
def sequence_parallel_runs(tmp_path_factory):
    """{case: (one-rank run dir, sequence-parallel run dir)}; RESUMED + "_resumed": (the uninterrupted
    sequence-parallel run dir, the run dir resumed from its step-2 checkpoint)."""
    from tests.recipe_runs import run_recipe
    from recipes.sft import SFTRecipe

    root = tmp_path_factory.mktemp("seqpar")
    mix = mixed_video_dataset(root / "mix")
    pairs = {}
    for name, overrides in CASES.items():
        overrides = [o.format(mix=mix) for o in overrides]
        # The reference: one process, nothing sharded (what "one rank" computes, whatever the parallelism).
        plain = [o for o in overrides if not o.startswith("parallelism=")]
        _, alone, _ = run_recipe(SFTRecipe, root / "alone", [*COMMON, *plain], name=name)
        cfg = compose_config([f"run.output_root={root / 'sp'}", *COMMON, *overrides,
                              "parallelism.sequence_parallel=2", "cluster.nproc_per_node=2"])
        run_dir = make_run_dir(root / "sp", name)
        write_run_config(run_dir, cfg)
        pairs[name] = (alone, run_dir)
        if name == RESUMED:
            # Trained right after the uninterrupted run, in the same launch: its step-2 checkpoint exists by then.
            cfg = compose_config([f"run.output_root={root / 'sp'}", *COMMON, *overrides,
                                  "parallelism.sequence_parallel=2", "cluster.nproc_per_node=2",
                                  f"run.resume={run_dir / 'checkpoints' / 'step-0000002'}"])
            resumed = make_run_dir(root / "sp", f"{name}_resumed")
            write_run_config(resumed, cfg)
            pairs[f"{name}_resumed"] = (run_dir, resumed)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           *[str(sp) for _, sp in pairs.values()]]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return pairs


@pytest.mark.parametrize("case", list(CASES))
def test_two_sequence_ranks_train_as_one_rank(sequence_parallel_runs, case):
    alone, split = sequence_parallel_runs[case]
    a, b = figures(alone), figures(split)
    assert [x[:2] for x in a] == [x[:2] for x in b] and len([x for x in a if x[0] == "train"]) == 3
    for one, two in zip(a, b):
        for x, y, rel in zip(one[2:], two[2:], (2e-5, GRAD_NORM_REL, 2e-5)):
            assert (x is None) == (y is None), (one, two)
            if x is not None:
                assert y == pytest.approx(x, rel=rel, abs=1e-5), (case, one, two)
    summary = json.loads((split / "summary.json").read_text())
    assert summary["trained_tokens"] == json.loads((alone / "summary.json").read_text())["trained_tokens"]
    engine = summary["parallelism"]
    if case.endswith("fsdp"):
        assert "fsdp" in json.dumps(engine).lower() and "shard" in json.dumps(engine).lower(), engine
    if case.endswith("zero3"):
        assert "3" in json.dumps(engine), engine


def test_a_sequence_parallel_run_resumes_as_it_would_have_gone_on(sequence_parallel_runs):
    """Resumed from the step-2 checkpoint (FSDP2 shards, optimizer, RNG, sample ledger), step 3 and the final
    held-out loss are the uninterrupted run's, bit for bit."""
    whole, resumed = sequence_parallel_runs[f"{RESUMED}_resumed"]
    assert (whole / "checkpoints" / "step-0000002").is_dir()
    after = [x for x in figures(resumed) if x[1] > 2]
    assert [x[:2] for x in after] == [("train", 3), ("eval", 3)], figures(resumed)
    assert after == [x for x in figures(whole) if x[1] > 2]
    assert json.loads((resumed / "summary.json").read_text())["trained_tokens"] == \
        json.loads((whole / "summary.json").read_text())["trained_tokens"]


def test_sequence_parallel_must_divide_the_world():
    with pytest.raises(ConfigError, match=r"parallelism.sequence_parallel: 3 ranks per row does not divide the world"
                                          r" size 4"):
        compose_config(["parallelism.sequence_parallel=3", "cluster.nproc_per_node=4"])


def test_sequence_parallel_is_for_causal_lm_methods():
    with pytest.raises(ConfigError, match="parallelism.sequence_parallel: method=dpo"):
        compose_config(["method=dpo", "data=prefs", "parallelism.sequence_parallel=2", "cluster.nproc_per_node=2"])


def test_preflight_refuses_sequence_ranks_that_do_not_divide_the_heads(tmp_path):
    # tiny_qwen2: 4 attention heads, 2 key/value heads: 4 ranks per row cannot share the key/value heads.
    cfg = compose_config([f"run.output_root={tmp_path}", "parallelism.sequence_parallel=4",
                          "cluster.nproc_per_node=4"])
    with pytest.raises(PreflightError, match=r"parallelism.sequence_parallel: 4 ranks per row must divide the model's"
                                             r" 2 key/value heads .*use one of \[1, 2\]"):
        run_preflight(cfg)


def test_memory_estimate_counts_a_rank_s_share_of_the_row():
    from launcher.checks.memory_estimate import ModelShape, estimate_memory_per_gpu

    shape = ModelShape(hidden=1024, layers=24, intermediate=2816, vocab=151936, heads=16, kv_heads=16, tied=True)
    overrides = ["data.cutoff_len=32768", "cluster.nproc_per_node=4", "train.loss_chunk_size=1"]
    one = estimate_memory_per_gpu(compose_config(overrides), shape)
    four = estimate_memory_per_gpu(compose_config([*overrides, "parallelism.sequence_parallel=4"]), shape)
    assert four.activations_gb == pytest.approx(one.activations_gb / 4, rel=0.01)
    assert four.weights_gb == one.weights_gb
