"""Row-for-row equality with the pipeline as it was before the data-at-scale rewrite (issue 17, item 5).

tests/data/golden/rows.json holds, per dataset and tokenizer, sha256 hashes of the train rows
(input_ids, labels, and position_ids/segment_lengths when packed), of the held-out rows and samples, and
the counts, as the list-of-dicts pipeline produced them (commit 52434a9). Any change in a token, a label,
a row's order or the packing plan changes a hash.

kto_en_demo's entries were regenerated when KTO came (issue 19): its rows are KTO rows now (only the last answer
trained, never packed), which SFT refuses; and again when each KTO row gained its KL partner (kl_input_ids,
kl_prompt_len: LLaMA-Factory's previous-sample answer, issue 33), the other columns unchanged.

Regenerate only when a change of the rows is intended:  PYTHONPATH=. python tests/data/test_golden.py
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.data import build_datasets  # noqa: E402
from tests.data.helpers import REPO, char_tokenizer, lf_demo_dir, make_config, qwen_tokenizer  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "rows.json"
STAT_KEYS = ("samples", "dropped", "rows", "tokens", "trained_tokens", "packing_fill", "eval_samples", "eval_dropped")

# (dataset dir, dataset names, extra data options): every local text dataset of LLaMA-Factory's demo
# (the image/video/audio ones are vl's), the repo's own data, and a mix + held-out split.
DEMO_TEXT = ["identity", "alpaca_en_demo", "alpaca_zh_demo", "glaive_toolcall_en_demo", "glaive_toolcall_zh_demo",
             "dpo_en_demo", "dpo_zh_demo", "kto_en_demo", "wiki_demo", "c4_demo"]
PREFERENCE = {"dpo_en_demo", "dpo_zh_demo", "prefs"}
LAYOUTS = {"rows1024": {"cutoff_len": 1024}, "packed1024": {"cutoff_len": 1024, "packing": True},
           "packed512": {"cutoff_len": 512, "packing": True}}


def cases() -> list[tuple[str, str, list, dict]]:
    """(case id, dataset dir key, datasets, options)."""
    out = []
    for name in DEMO_TEXT:
        for layout, options in LAYOUTS.items():
            if name in PREFERENCE and layout != "rows1024":
                continue  # preference rows are never packed
            out.append((f"demo/{name}/{layout}", "demo", [name], options))
    out.append(("demo/mix-interleave-val/packed1024", "demo",
                [{"name": "alpaca_en_demo", "weight": 2, "max_samples": 400}, {"name": "identity", "weight": 1}],
                {"cutoff_len": 1024, "packing": True, "mix_strategy": "interleave", "val_size": 0.1}))
    out.append(("demo/alpaca-resample-val/rows512", "demo", ["alpaca_en_demo", "identity"],
                {"cutoff_len": 512, "val_size": 25, "max_samples": 300}))
    for layout, options in LAYOUTS.items():
        out.append((f"repo/tasks/{layout}", "repo", ["tasks"], {**options, "eval_datasets": ["tasks_eval"]}))
    out.append(("repo/prefs/rows1024", "repo", ["prefs"], {"cutoff_len": 1024, "eval_datasets": ["prefs_eval"]}))
    out.append(("repo/tasks-val/rows256", "repo", ["tasks"], {"cutoff_len": 256, "val_size": 0.05}))
    return out


TOKENIZERS = {"qwen": qwen_tokenizer, "char": char_tokenizer}


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items or []:
        h.update(json.dumps(item, sort_keys=True, ensure_ascii=False, default=_plain).encode())
        h.update(b"\n")
    return h.hexdigest()[:20]


def _plain(value):
    """numpy arrays/ints as JSON lists/ints, so the hash depends on values, not on the container type."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _rows(rows) -> list:
    return [dict(rows[i]) for i in range(len(rows))] if rows else []


def fingerprint(dirkey: str, datasets: list, options: dict, tokenizer) -> dict:
    folder = lf_demo_dir() if dirkey == "demo" else REPO / "data"
    cfg = make_config(folder, datasets, use_cache=False, **options)
    try:
        bundle = build_datasets(cfg, tokenizer, progress=False)
    except Exception as exc:  # a tokenizer that does not apply (tools with a tool-less template): record that
        return {"error": type(exc).__name__}
    stats = {k: bundle.stats[k] for k in STAT_KEYS if k in bundle.stats}
    return {"train": _digest(_rows(bundle.train)), "eval": _digest(_rows(bundle.eval)),
            "eval_samples": _digest(bundle.eval_samples), "stats": stats}


def all_cases():
    for case, dirkey, datasets, options in cases():
        for tok in TOKENIZERS:
            if tok == "char" and "_zh_" in case:
                continue  # the char tokenizer has no CJK characters: every token would be unk
            yield f"{case}/{tok}", dirkey, datasets, options, tok


def _golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


@pytest.mark.parametrize("key,dirkey,datasets,options,tok", list(all_cases()), ids=[c[0] for c in all_cases()])
def test_rows_equal_golden(key, dirkey, datasets, options, tok):
    if dirkey == "demo" and lf_demo_dir() is None:
        pytest.skip("LLaMA-Factory demo data not found (set LAUNCHER_LF_DEMO_DIR)")
    golden = _golden()
    assert key in golden, f"{key} missing from {GOLDEN}; regenerate it"
    assert fingerprint(dirkey, datasets, options, TOKENIZERS[tok]()) == golden[key]


def main() -> int:
    if lf_demo_dir() is None:
        print("LLaMA-Factory demo data not found; set LAUNCHER_LF_DEMO_DIR")
        return 1
    out = {}
    for key, dirkey, datasets, options, tok in all_cases():
        out[key] = fingerprint(dirkey, datasets, options, TOKENIZERS[tok]())
        print(key, out[key])
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(out)} cases to {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
