"""2 CPU processes (gloo), FSDP2 and ZeRO-3, a VL model with a trainable vision tower, and a dataset where every
step gives one rank an image row and the other a text-only row (the ranks swap roles between the steps):
without the dummy image the text rank would skip the tower's all-gathers and both would hang
(LlamaFactory#5616). The dummy image goes through the model's own forward as a masked span in the rows
(launcher.data.collate.with_dummy_image): a separate call of the tower ran the modules in another order, which
ZeRO-3's prefetch trace could not follow (step 2 hung). Runs to the end, losses finite."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from tests.vl.helpers import write_images

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker_vl.py")
ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def mixed_dataset(folder: Path) -> None:
    write_images(folder, [(56, 56)])
    rows = [{"messages": [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "red"}],
             "images": ["img0.png"]},
            {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}], "images": []}]
    (folder / "mix.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"mix": dict(ENTRY, file_name="mix.json")}))


@pytest.mark.parametrize("parallelism", ["fsdp", "zero3"])
def test_text_only_rank_does_not_hang(tmp_path, parallelism):
    mixed_dataset(tmp_path)
    root = tmp_path / "outputs"
    cfg = compose_config([f"run.output_root={root}", "model=tiny_qwen2_vl", f"parallelism={parallelism}",
                          f"data.dataset_dir={tmp_path}", "data.datasets=[mix]", "data.eval_datasets=[]",
                          "data.val_size=0", "data.cutoff_len=128", "train.micro_batch_size=1", "train.grad_accum=1",
                          "train.max_steps=2", "train.exact_match_samples=0", "train.eval_every=0",
                          "model.freeze_vision_tower=false", "model.freeze_projector=false", "train.save_model=false",
                          "method.lr=1e-3", "model.dtype=float32", "train.log_every=1"])
    run_dir = make_run_dir(root, parallelism)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((run_dir / f"batches_rank{r}.json").read_text()) for r in (0, 1)]
    for step in range(2):  # each step: one rank with the image, the other text-only with the dummy image
        pair = [ranks[r]["batches"][step] for r in (0, 1)]
        assert sorted(b["images"] for b in pair) == [False, True]
        assert all(b["dummy"] != b["images"] for b in pair)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
