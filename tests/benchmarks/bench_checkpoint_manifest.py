"""What the checkpoint manifest costs: sealing (sizes + sha256) and checking a checkpoint of given file sizes.

    PYTHONPATH=. python tests/benchmarks/bench_checkpoint_manifest.py [--sizes-mb 10,200,2000]

Files up to 64 MiB are hashed whole; a bigger one only in its first and last 16 MiB (its size is recorded
too), so the cost per file is capped at reading 64 MiB whatever the shard size. Prints MB/s and seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.engines import checkpoint as ckpt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", default="10,200,2000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for mb in (int(x) for x in args.sizes_mb.split(",")):
            d = Path(tmp) / f"step-{mb}"
            d.mkdir()
            with open(d / "shard.bin", "wb") as fh:
                block = bytes(range(256)) * 4096  # 1 MiB
                for _ in range(mb):
                    fh.write(block)
            t0 = time.perf_counter()
            ckpt.mark_complete(d)
            sealed = time.perf_counter() - t0
            t0 = time.perf_counter()
            assert ckpt.checkpoint_problem(d) is None
            checked = time.perf_counter() - t0
            read_mb = mb if mb << 20 <= ckpt.HASH_WHOLE_MAX else 2 * (ckpt.HASH_EDGE_BYTES >> 20)
            print(f"{mb:>6} MB file: seal {sealed:6.2f} s, check {checked:6.2f} s"
                  f" ({read_mb} MB read each, {read_mb / max(sealed, 1e-9):.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
