"""method=pretrain on plain text, tiny model: documents packed with the end-of-text token and no attention
across them, long documents cut at cutoff_len, every token trained; the loss falls and the saved model
reloads with the same logits. LLaMA-Factory's c4_demo and wiki_demo read unchanged (skipped where absent)."""
from __future__ import annotations

import json
import random

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.data import build_text_datasets
from launcher.engines.distributed import init_distributed
from launcher.errors import ConfigError, DataError
from launcher.inference.trained import load_trained_model
from launcher.models.tokenizers import build_char_tokenizer
from launcher.launch.rundir import make_run_dir, write_run_config
from recipes.pretrain import PretrainRecipe
from tests.conftest import SHARED_DEMO

SMALL_MODEL = ["model.config.hidden_size=64", "model.config.intermediate_size=192", "model.config.num_hidden_layers=2"]


def write_text_data(folder):
    """Short documents that repeat a pattern (learnable in a few steps), one of them longer than cutoff_len."""
    rng = random.Random(0)
    docs = [" ".join(rng.choice(["the cat sat.", "a dog ran.", "we ate rice."]) for _ in range(rng.randint(2, 6)))
            for _ in range(60)]
    docs.append("the cat sat. " * 20)  # 260 characters: cut into pieces of cutoff_len
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs.txt").write_text("\n".join(docs) + "\n")
    (folder / "dataset_info.json").write_text(json.dumps({
        "docs": {"file_name": "docs.txt", "columns": {"prompt": "text"}},
        "tasks": {"file_name": "tasks.json"}}))
    (folder / "tasks.json").write_text(json.dumps([{"instruction": "Say hi.", "output": "hi"}] * 8))
    return folder, docs


def text_overrides(folder):
    return ["method=pretrain", f"data.dataset_dir={folder}", "data.datasets=[docs]", "data.eval_datasets=[]",
            "data.val_size=8", "data.cutoff_len=96", "data.packing=true", "data.use_cache=false",
            "train.exact_match_samples=0", "train.micro_batch_size=4", "train.log_every=1", "train.eval_every=0",
            "train.warmup_ratio=0", "train.lr_scheduler=constant", "method.lr=3e-3", *SMALL_MODEL]


def test_documents_are_packed_apart_and_long_ones_cut(tmp_path):
    folder, docs = write_text_data(tmp_path / "data")
    cfg = compose_config([*text_overrides(folder), "data.val_size=0"])
    tok = build_char_tokenizer()
    bundle = build_text_datasets(cfg, tok)
    assert bundle.kind == "pt" and bundle.packed
    eos = tok.eos_token_id
    rows = bundle.train
    assert all(len(r["input_ids"]) <= 96 and r["labels"] == r["input_ids"] for r in rows)  # every token trained
    segments = [tuple(r["input_ids"][sum(r["segment_lengths"][:k]): sum(r["segment_lengths"][: k + 1])])
                for r in rows for k in range(len(r["segment_lengths"]))]
    ids = [tok(d, add_special_tokens=False)["input_ids"] + [eos] for d in docs]
    # each short document is one segment ending with the end-of-text token; the long one (261 tokens) is cut
    # into pieces of cutoff_len (96, 96, 69), the last of which ends with it
    expected = [tuple(i) for i in ids[:-1]] + [tuple(ids[-1][k: k + 96]) for k in range(0, len(ids[-1]), 96)]
    assert len(ids[-1]) > 2 * 96 and sorted(segments) == sorted(expected)
    # no attention across documents: the mask of a packed row is block-diagonal
    batch = bundle.collate(rows[:1])
    lengths = rows[0]["segment_lengths"]
    if len(lengths) > 1:
        first = lengths[0]
        assert not batch["attention_mask"][0, 0, first:, :first].any()
        assert batch["position_ids"][0, first] == 0


def test_pretrain_learns_and_reloads(tmp_path, output_root):
    folder, _ = write_text_data(tmp_path / "data")
    cfg = compose_config([f"run.output_root={output_root}", *text_overrides(folder), "train.max_steps=30"])
    run_dir = make_run_dir(output_root, "pt")
    write_run_config(run_dir, cfg)
    recipe = PretrainRecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    summary = recipe.train()
    recipe.cleanup()
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["kind"] == "train"]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    rows = recipe.data.eval[:2]
    batch = recipe.data.collate(rows)
    recipe.model.eval()
    with torch.no_grad():
        expected = recipe.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                position_ids=batch["position_ids"]).logits
    reloaded, _ = load_trained_model(run_dir)
    with torch.no_grad():
        got = reloaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_pretrain_refuses_instruction_data_and_unpacked_text(tmp_path, output_root):
    folder, _ = write_text_data(tmp_path / "data")
    with pytest.raises(ConfigError, match="data.packing"):
        compose_config([*text_overrides(folder), "data.packing=false"])
    cfg = compose_config([f"run.output_root={output_root}", *text_overrides(folder), "data.datasets=[tasks]",
                          "data.val_size=0"])
    with pytest.raises(DataError, match="method=pretrain trains on plain text"):
        build_text_datasets(cfg, build_char_tokenizer())


@pytest.mark.parametrize("name,suffix", [("c4_demo", "jsonl"), ("wiki_demo", "txt")])
def test_llamafactory_text_demos(name, suffix):
    if not (SHARED_DEMO / f"{name}.{suffix}").is_file():
        pytest.skip(f"no {name} in {SHARED_DEMO}")
    cfg = compose_config(["method=pretrain", f"data={name}", f"data.dataset_dir={SHARED_DEMO}", "data.cutoff_len=512",
                          "data.use_cache=false", "data.max_samples=40", "data.val_size=0"])
    bundle = build_text_datasets(cfg, build_char_tokenizer())
    tok_eos = build_char_tokenizer().eos_token_id
    docs = bundle.stats["samples"]
    assert bundle.kind == "pt" and bundle.packed and 0 < docs <= 40
    assert all(len(r["input_ids"]) <= 512 for r in bundle.train)
    ends = sum(1 for r in bundle.train for k in range(len(r["segment_lengths"]))
               if r["input_ids"][sum(r["segment_lengths"][: k + 1]) - 1] == tok_eos)
    assert ends == docs  # every document ends with the end-of-text token, once


def test_dry_run_refuses_pretrain_on_instruction_data(tmp_path):
    from launcher.errors import PreflightError
    from launcher.checks.preflight import run_preflight

    folder, _ = write_text_data(tmp_path / "data")
    cfg = compose_config([*text_overrides(folder), "data.datasets=[tasks]"], check=False)
    with pytest.raises(PreflightError, match=r"data\.datasets: method=pretrain trains on plain text, but 'tasks'"
                                             r" \(in .*\) is instruction data"):
        run_preflight(cfg)
    assert run_preflight(compose_config([*text_overrides(folder), f"run.output_root={tmp_path / 'out'}"])) is not None
