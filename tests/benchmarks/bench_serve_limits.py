"""launcher serve under oversized requests: the server's peak RSS and the slowest /health answer while a 10 MB
prompt, a 200 MB body with its Content-Length, and a 200 MB chunked body are sent (issue 29).

    PYTHONPATH=. python tests/benchmarks/bench_serve_limits.py [PATH] [--code DIR]

PATH: a model folder or run dir (default: a tiny Qwen2-VL saved to a temp folder). --code: the checkout whose
``launcher`` serves (default this one), to compare with another branch. Prints one line per case; asserts
nothing. Each case is cut off after --case-timeout seconds.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """Samples the server's RSS every 20 ms and /health's latency every 100 ms until stopped."""

    def __init__(self, pid: int, port: int):
        import httpx

        self.client = httpx.Client(timeout=30)  # made before the case starts: building one takes ~0.5 s
        self.pid, self.port, self.stop = pid, port, threading.Event()
        self.peak_rss, self.health = 0.0, []
        self.threads = [threading.Thread(target=self._rss, daemon=True),
                        threading.Thread(target=self._health, daemon=True)]
        for t in self.threads:
            t.start()

    def _rss(self):
        while not self.stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
            self.stop.wait(0.02)

    def _health(self):
        import httpx

        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                self.client.get(f"http://127.0.0.1:{self.port}/health")
                self.health.append(time.perf_counter() - start)
            except httpx.HTTPError:
                self.health.append(float("inf"))
            self.stop.wait(0.1)

    def finish(self) -> tuple[float, float]:
        self.stop.set()
        for t in self.threads:
            t.join(35)
        self.client.close()
        return self.peak_rss, max(self.health, default=float("nan"))


def send(port: int, head: bytes, body_parts, timeout: float) -> str:
    """Send a request on a bare socket (a writer thread, so the answer is read while the body still goes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def write():
        try:
            s.sendall(head)
            for part in body_parts:
                s.sendall(part)
        except OSError:
            pass  # the server answered and closed: the rest of the body is not wanted

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = s.recv(65536)
            if not more:
                break
            data += more
    except OSError as exc:
        return f"no answer ({type(exc).__name__})"
    finally:
        s.close()
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return line or "connection closed without an answer"


def body_of(size: int) -> bytes:
    """A chat request whose image data URL makes the JSON about ``size`` bytes."""
    payload = base64.b64encode(b"\0" * (size * 3 // 4)).decode()
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + payload}}]}]}).encode()


def chunks(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):
        part = data[i:i + size]
        yield b"%x\r\n" % len(part) + part + b"\r\n"
    yield b"0\r\n\r\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?")
    parser.add_argument("--code", default=str(REPO), help="checkout whose launcher package serves")
    parser.add_argument("--case-timeout", type=float, default=60)
    parser.add_argument("--cases", default="prompt,length,chunked",
                        help="which of prompt (10 MB), length (200 MB with Content-Length), chunked (200 MB) to run")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if args.path:
        path = Path(args.path)
    else:
        from tests.vl.helpers import save_tiny_vl_folder

        path = save_tiny_vl_folder(Path(tmp.name) / "tiny-qwen2-vl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": args.code, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(Path(tmp.name) / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "serve", str(path), "--port", str(port),
                             "--model-name", "m"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=args.code)  # python -m puts the working folder first on sys.path
    import httpx

    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        print(f"server up ({args.code}); idle RSS {rss_mb(proc.pid):.0f} MB")
        text = "hello " * ((10 << 20) // 6)
        prompt = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
        big = body_of(200 << 20)
        post = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        cases = {
            "prompt": ("10 MB prompt", post + b"Content-Length: %d\r\n\r\n" % len(prompt), [prompt]),
            "length": ("200 MB body, Content-Length", post + b"Content-Length: %d\r\n\r\n" % len(big),
                       [big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)]),
            "chunked": ("200 MB body, chunked", post + b"Transfer-Encoding: chunked\r\n\r\n", chunks(big)),
        }
        for key in args.cases.split(","):
            name, head, parts = cases[key]
            before = rss_mb(proc.pid)
            watch = Watch(proc.pid, port)
            start = time.perf_counter()
            answer = send(port, head, parts, args.case_timeout)
            took = time.perf_counter() - start
            time.sleep(0.5)
            peak, slowest = watch.finish()
            print(f"{name}: '{answer}' after {took:.2f} s | server RSS {before:.0f} -> peak {peak:.0f} MB"
                  f" | slowest /health {slowest:.3f} s over {len(watch.health)} polls")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
