"""GRPO side by side: ours (method=grpo) and TRL's GRPOTrainer on the same tiny model, prompts, G, max completion
length, steps, learning rate and seed; a benchmark that prints figures, not a CI test.

Each side runs in a process of its own (so that peak RSS is its own) on the same threads. Printed per side:
the mean step time (the first step, which warms up, left out), the split between generation, reward scoring
and the update (ours: from metrics.jsonl; TRL: its ``_generate`` and ``_calculate_rewards`` timed from the
outside, the rest of ``training_step`` counted as update), and peak RSS.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_grpo.py [--model HF_DIR] [--steps 8] [--prompts 4]
        [--G 8] [--max-completion 16] [--threads 1] [--no-vllm]

Where the vLLM venv is there (make vllm-env), ours runs a second time with generation.engine=vllm (side
``vllm``): the generation share of the step with each engine is printed (vLLM's time includes pushing the
weights after each update; its start-up falls in the first step, left out; its server's memory is not in the
peak RSS).

Without --model a random-init copy of the default tiny model is saved and used (its completions rarely end
early: every completion runs to --max-completion on both sides, the fairest comparison of the loops).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def tiny_model(out: Path) -> Path:
    import torch

    from launcher.config.compose import compose_config
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config([])
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def task_prompts(n: int) -> list[dict]:
    rows = json.loads((REPO / "data" / "tasks_train.json").read_text())[:n]
    return [{"prompt": f"{r['instruction']}\n{r['input']}", "answer": r["output"]} for r in rows]


def run_ours(a, engine: str = "transformers") -> dict:
    from recipes.grpo import GRPORecipe
    from tests.recipe_runs import run_recipe

    root = Path(a.work) / f"ours-{engine}"
    overrides = [
        "method=grpo", f"model.name_or_path={a.model}", f"train.max_steps={a.steps}", f"train.seed={a.seed}",
        f"train.micro_batch_size={a.prompts}", "train.grad_accum=1", f"data.max_samples={a.prompts * a.steps}",
        "data.eval_datasets=[]", "train.exact_match_samples=0", "method.grpo.eval_prompts=0", "train.log_every=1",
        f"method.grpo.num_generations={a.G}", f"method.grpo.max_completion_length={a.max_completion}",
        f"method.lr={a.lr}", "train.lr_scheduler=constant", "train.warmup_ratio=0", "train.save_model=false",
        "method.grpo.loss_type=dapo", "method.grpo.beta=0.0", "data.use_cache=false", f"generation.engine={engine}",
    ]
    _, run_dir, _ = run_recipe(GRPORecipe, root, overrides, "bench")
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "train"' in line][1:]
    split = {k: sum(r[f"time/{k}"] for r in steps) / len(steps) for k in ("generation", "scoring", "update")}
    return {"step_s": sum(split.values()), **split,
            "completion_length": sum(r["completion_length"] for r in steps) / len(steps)}


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(a.seed)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    rows = task_prompts(a.prompts * a.steps)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
                              for r in rows])

    def exact_match(completions, answer, **_):
        return [float(c[0]["content"].strip() == ans.strip()) for c, ans in zip(completions, answer)]

    args = GRPOConfig(
        output_dir=str(Path(a.work) / "trl"), per_device_train_batch_size=a.prompts * a.G, num_generations=a.G,
        gradient_accumulation_steps=1, max_completion_length=a.max_completion, max_steps=a.steps,
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, beta=0.0, loss_type="dapo",
        logging_steps=1, report_to="none", save_strategy="no", seed=a.seed, use_cpu=True, bf16=False,
        shuffle_dataset=False, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=args, train_dataset=data,
                          processing_class=tokenizer)
    spent = {"generation": 0.0, "scoring": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    trainer._generate = timed("generation", trainer._generate)
    trainer._calculate_rewards = timed("scoring", trainer._calculate_rewards)
    marks: list = []

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            marks.append((time.perf_counter(), dict(spent)))

        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), dict(spent)))

    trainer.add_callback(Steps())
    trainer.train()
    pairs = [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)][1:]
    step = sum(e[0] - b[0] for b, e in pairs) / len(pairs)
    gen = sum(e[1]["generation"] - b[1]["generation"] for b, e in pairs) / len(pairs)
    score = sum(e[1]["scoring"] - b[1]["scoring"] for b, e in pairs) / len(pairs)
    return {"step_s": step, "generation": gen, "scoring": score, "update": step - gen - score}


def child(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    result = run_trl(a) if a.side == "trl" else run_ours(a, "vllm" if a.side == "vllm" else "transformers")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--max-completion", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; the fastest is shown")
    ap.add_argument("--no-vllm", action="store_true", help="leave out ours on the vLLM engine")
    ap.add_argument("--side", choices=("ours", "trl", "vllm"))
    ap.add_argument("--work")
    a = ap.parse_args(argv)
    if a.side:
        child(a)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        a.work = tmp
        a.model = a.model or str(tiny_model(Path(tmp) / "tiny"))
        results: dict = {}
        # The sides alternate, each run --repeats times; the fastest run of each side is compared (the machine
        # is shared: load that comes and goes hits both sides alike this way).
        from launcher.inference.vllm_engine import INSTALL_COMMAND, vllm_python

        sides = ("ours", "trl")
        if not a.no_vllm and vllm_python() is not None:
            sides += ("vllm",)
        elif not a.no_vllm:
            print(f"the vLLM venv is absent ({INSTALL_COMMAND} makes it): ours on vLLM left out")
        for side in sides * a.repeats:
            cmd = [sys.executable, __file__, "--side", side, "--work", tmp, "--model", a.model,
                   "--steps", str(a.steps), "--prompts", str(a.prompts), "--G", str(a.G),
                   "--max-completion", str(a.max_completion), "--lr", str(a.lr), "--seed", str(a.seed),
                   "--threads", str(a.threads)]
            env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=str(REPO),
                       TOKENIZERS_PARALLELISM="false")
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{side} failed:\n{proc.stderr[-3000:]}")
                return 1
            got = json.loads(line[7:])
            print(f"{side}: {got['step_s']:.3f} s per step", flush=True)
            if side not in results or got["step_s"] < results[side]["step_s"]:
                results[side] = got
    print(f"GRPO, {a.prompts} prompts x G={a.G}, up to {a.max_completion} tokens, {a.steps} steps (first left"
          f" out), {a.threads} thread(s), fastest of {a.repeats} runs per side, model {a.model}")
    print(f"{'':6} {'step s':>8} {'generation':>11} {'share':>6} {'scoring':>8} {'update':>8} {'peak RSS MB':>12}")
    for side, r in results.items():
        print(f"{side:6} {r['step_s']:8.3f} {r['generation']:11.3f} {r['generation'] / r['step_s']:6.0%}"
              f" {r['scoring']:8.3f} {r['update']:8.3f} {r['peak_rss_mb']:12.0f}")
    print(f"ours / TRL step time: {results['ours']['step_s'] / results['trl']['step_s']:.2f}x")
    if "vllm" in results:
        print(f"generation share of our step: {results['ours']['generation'] / results['ours']['step_s']:.0%} on"
              f" transformers, {results['vllm']['generation'] / results['vllm']['step_s']:.0%} on vLLM; step time"
              f" vLLM / transformers: {results['vllm']['step_s'] / results['ours']['step_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
