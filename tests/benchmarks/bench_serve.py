"""launcher serve: time from the command to the first answered request, and tokens/s of a streamed answer.

    PYTHONPATH=. python tests/benchmarks/bench_serve.py [PATH] [--model tiny_qwen2] [--tokens 200]

PATH is a run dir or a model folder; without it, the named model config (random init: it rarely ends an
answer early, so the streamed answer has the full length) is saved as a Hugging Face folder and served.
Prints the figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def save_model(model_option: str, out: Path) -> Path:
    import torch

    from launcher.config.compose import compose_config
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config([f"model={model_option}"])
    tokenizer = load_tokenizer(cfg.model)
    build_base_model(cfg, tokenizer, "sdpa", torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?")
    parser.add_argument("--model", default="tiny_qwen2", help="model config to save and serve when no PATH")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the server (1 avoids thread thrashing on a busy machine)")
    args = parser.parse_args()
    import httpx
    import openai

    tmp = tempfile.TemporaryDirectory()
    path = Path(args.path) if args.path else save_model(args.model, Path(tmp.name) / args.model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "serve", str(path), "--port", str(port),
                             "--model-name", "m"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": "Write a long story about a cat."}]
    try:
        while True:
            if proc.poll() is not None:
                print(proc.stdout.read())
                return 1
            try:
                client.chat.completions.create(model="m", messages=messages, max_tokens=1, temperature=0)
                break
            except (openai.APIConnectionError, httpx.HTTPError):
                time.sleep(0.1)
        first_answer = time.perf_counter() - start
        times, usage = [], None
        t0 = time.perf_counter()
        for chunk in client.chat.completions.create(model="m", messages=messages, max_tokens=args.tokens,
                                                    temperature=1.0, seed=0, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.perf_counter())
            if chunk.usage:
                usage = chunk.usage
        total = time.perf_counter() - t0
        n = usage.completion_tokens
        first = f"{times[0] - t0:.2f} s" if times else "- (no text)"
        threads = f", OMP_NUM_THREADS={args.threads}" if args.threads else ""
        print(f"served: {path} ({'given' if args.path else 'model=' + args.model + ', random init'}{threads})")
        print(f"command -> first answered request: {first_answer:.1f} s")
        # Text arrives in pieces (the streamer holds a word until it is complete), so only the whole answer's
        # rate is a rate.
        print(f"streamed answer: {n} tokens in {total:.2f} s = {n / total:.1f} tokens/s; first text after {first}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
