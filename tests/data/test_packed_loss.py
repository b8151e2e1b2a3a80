"""The per-sample loss of a packed batch equals the loss of the same samples run one by one."""
import pytest
import torch

from launcher.data import build_datasets
from launcher.data.collate import collate_rows
from tests.data.helpers import qwen_tokenizer, make_config, write_dataset

ROWS = [
    {"instruction": "Say hi.", "input": "", "output": "Hi there!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5."},
    {"instruction": "Name a colour.", "input": "", "output": "Blue, like the sky on a clear day."},
    {"instruction": "Translate to French.", "input": "good morning", "output": "Bonjour."},
    {"instruction": "Count to five.", "input": "", "output": "1, 2, 3, 4, 5."},
    {"instruction": "What is the capital of Italy?", "input": "", "output": "Rome."},
]


def make_model(vocab_size: int, attn: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=vocab_size, max_position_embeddings=512)
    config._attn_implementation = attn
    return Qwen2ForCausalLM(config).eval()


def per_segment_losses(model, batch, segments):
    """Mean CE over each segment's trained positions, keyed by the segment's token ids."""
    with torch.no_grad():
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             position_ids=batch["position_ids"]).last_hidden_state
        logits = model.lm_head(hidden).float()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["shift_labels"], ignore_index=-100,
                                           reduction="none")
    out = {}
    for b, (ids, lengths) in enumerate(segments):
        offset = 0
        for n in lengths:
            trained = batch["shift_labels"][b, offset: offset + n] != -100
            out[tuple(ids[offset: offset + n])] = (ce[b, offset: offset + n].sum() / trained.sum()).item()
            offset += n
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_one_by_one(tmp_path, attn):
    tok = qwen_tokenizer()
    write_dataset(tmp_path, "mini", ROWS)
    cfg = make_config(tmp_path, ["mini"], cutoff_len=96, packing=True, use_cache=False)
    bundle = build_datasets(cfg, tok, attn_implementation=attn)
    assert any(len(r["segment_lengths"]) > 1 for r in bundle.train), "the test needs rows that hold several samples"
    model = make_model(len(tok), attn)

    alone = {}
    for row in bundle.train:
        offset = 0
        for n in row["segment_lengths"]:
            sample = {"input_ids": row["input_ids"][offset: offset + n], "labels": row["labels"][offset: offset + n]}
            offset += n
            alone.update(per_segment_losses(model, collate_rows([sample], tok.pad_token_id, attn),
                                            [(sample["input_ids"], [n])]))
    assert len(alone) == len(ROWS)

    for micro_batch in (1, 2):
        packed = {}
        for i in range(0, len(bundle.train), micro_batch):
            rows = bundle.train[i: i + micro_batch]
            batch = bundle.collate(rows)
            assert batch["attention_mask"].shape == (len(rows), 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
            packed.update(per_segment_losses(model, batch, [(r["input_ids"], r["segment_lengths"]) for r in rows]))
        assert packed.keys() == alone.keys()
        for key in alone:
            assert abs(packed[key] - alone[key]) <= 1e-5, (attn, micro_batch, packed[key], alone[key])


def test_without_mask_packed_samples_leak(tmp_path):
    """The control: the same packed batch with a plain causal mask gives different losses."""
    tok = qwen_tokenizer()
    write_dataset(tmp_path, "mini", ROWS)
    bundle = build_datasets(make_config(tmp_path, ["mini"], cutoff_len=96, packing=True, use_cache=False), tok)
    model = make_model(len(tok), "sdpa")
    row = next(r for r in bundle.train if len(r["segment_lengths"]) > 1)
    batch = bundle.collate([row])
    with_mask = per_segment_losses(model, batch, [(row["input_ids"], row["segment_lengths"])])
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["position_ids"] = torch.arange(len(row["input_ids"]))[None]
    leaked = per_segment_losses(model, batch, [(row["input_ids"], row["segment_lengths"])])
    assert any(abs(with_mask[k] - leaked[k]) > 1e-3 for k in with_mask)


def test_flash_attention_gets_no_mask(tmp_path):
    tok = qwen_tokenizer()
    write_dataset(tmp_path, "mini", ROWS)
    bundle = build_datasets(make_config(tmp_path, ["mini"], cutoff_len=96, packing=True, use_cache=False), tok,
                            attn_implementation="flash_attention_2")
    batch = bundle.collate(bundle.train[:2])
    assert batch["attention_mask"] is None
    row = bundle.train[0]
    assert batch["position_ids"][0, : row["segment_lengths"][0]].tolist() == list(range(row["segment_lengths"][0]))
