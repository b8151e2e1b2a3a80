"""3-D (mrope) positions from the model's own get_rope_index, and packing of VL rows: the per-sample loss of a
packed batch equals each sample run alone through the model's plain forward (which computes its positions
itself), for sdpa and eager, on tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL."""
import json

import pytest
import torch

from launcher.models.vision import model_config, rope_index_for
from launcher.data import build_datasets
from launcher.training.loss import backbone_hidden
from tests.vl.helpers import FAMILIES, tiny_model, tokenizer_for, vl_config, write_images

ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def write_vl_dataset(folder, name="vl"):
    imgs = write_images(folder, [(56, 56), (84, 56), (60, 100), (40, 40)])
    rows = [
        {"messages": [user("<image>What colour is it?"), bot("Mostly one colour with a few dots.")], "images": [imgs[0]]},
        {"messages": [user("Compare <image> and <image>."), bot("The second is wider.")], "images": [imgs[1], imgs[2]]},
        {"messages": [user("Say hi."), bot("Hi!")], "images": []},
        {"messages": [user("<image>Describe."), bot("A small square."), user("Again?"), bot("Still a square.")],
         "images": [imgs[3]]},
        {"messages": [user("Count to three."), bot("1, 2, 3.")], "images": []},
    ]
    (folder / f"{name}.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({name: dict(ENTRY, file_name=f"{name}.json")}))
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_index_without_the_model_equals_the_models(tmp_path, family):
    write_vl_dataset(tmp_path)
    bundle = build_datasets(vl_config(family, tmp_path, ["vl"], cutoff_len=512), tokenizer_for(family))
    model = tiny_model(family)
    standalone = rope_index_for(model_config(vl_config(family, tmp_path, ["vl"]).model))
    for row in bundle.train:
        if not row.get("images"):
            continue
        ids = torch.tensor([row["input_ids"]])
        types = (ids == bundle.vision.ids["image_pad"]).long()
        grid = torch.tensor(row["image_grid_thw"])
        ours, _ = standalone(ids, types, image_grid_thw=grid)
        theirs, _ = model.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=grid)
        assert torch.equal(ours, theirs)
        assert not torch.equal(ours[1], ours[2]), "the image must get 2-D positions"


def alone_losses(model, bundle, rows):
    """Mean CE over each sample's trained tokens, from the model's own forward (positions computed by it)."""
    out = {}
    for row in rows:
        batch = bundle.collate([row])
        kwargs = {}
        if batch["pixel_values"] is not None:
            kwargs = {"pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"]}
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           mm_token_type_ids=batch["mm_token_type_ids"], use_cache=False, **kwargs).logits.float()
        ce = torch.nn.functional.cross_entropy(logits[0], batch["shift_labels"][0], ignore_index=-100, reduction="sum")
        out[tuple(row["input_ids"])] = ce.item() / int((batch["shift_labels"] != -100).sum())
    return out


def packed_losses(model, bundle, rows):
    batch = bundle.collate(rows)
    assert batch["position_ids"].shape[:2] == (4, len(rows))
    with torch.no_grad():
        hidden, _ = backbone_hidden(model, batch["input_ids"], batch["attention_mask"], batch["position_ids"], batch)
        logits = model.lm_head(hidden).float()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["shift_labels"], ignore_index=-100,
                                           reduction="none")
    out = {}
    for b, row in enumerate(rows):
        offset = 0
        for n in row["segment_lengths"]:
            trained = int((batch["shift_labels"][b, offset: offset + n] != -100).sum())
            out[tuple(row["input_ids"][offset: offset + n])] = ce[b, offset: offset + n].sum().item() / trained
            offset += n
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_vl_loss_equals_each_sample_alone(tmp_path, family, attn):
    samples = write_vl_dataset(tmp_path)
    tok = tokenizer_for(family)
    unpacked = build_datasets(vl_config(family, tmp_path, ["vl"], cutoff_len=512), tok, attn_implementation=attn)
    packed = build_datasets(vl_config(family, tmp_path, ["vl"], cutoff_len=512, packing=True), tok,
                            attn_implementation=attn)
    assert any(len(r["segment_lengths"]) > 1 and r["images"] for r in packed.train), "need rows packing images"
    model = tiny_model(family, attn).eval()
    alone = alone_losses(model, unpacked, unpacked.train)
    assert len(alone) == len(samples)
    together = {}
    for i in range(0, len(packed.train), 2):
        together.update(packed_losses(model, packed, packed.train[i: i + 2]))
    assert together.keys() == alone.keys()
    for key in alone:
        assert abs(together[key] - alone[key]) <= 1e-4, (family, attn, together[key], alone[key])


def test_unpacked_explicit_positions_equal_the_models_own(tmp_path):
    """Unpacked, padded batch: our [3, B, T] positions give the logits of the model's own position path."""
    write_vl_dataset(tmp_path)
    family = "tiny_qwen2_5_vl"  # the family that silently falls back to 1-D positions without token types
    bundle = build_datasets(vl_config(family, tmp_path, ["vl"], cutoff_len=512), tokenizer_for(family))
    model = tiny_model(family).eval()
    batch = bundle.collate(bundle.train[:3])
    assert batch["position_ids"].shape[0] == 3
    common = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                  mm_token_type_ids=batch["mm_token_type_ids"], use_cache=False)
    with torch.no_grad():
        own = model(**common).logits
        model.model.rope_deltas = None
        explicit = model(position_ids=batch["position_ids"], **common).logits
        flat = model(position_ids=batch["position_ids"][0], **common).logits  # 1-D: what a fallback would do
    real = batch["attention_mask"].bool()
    same = (own[real] - explicit[real]).abs().max().item()
    wrong = (own[real] - flat[real]).abs().max().item()
    assert same <= 1e-5
    assert wrong > 1e-5 and wrong > 100 * same, (same, wrong)  # the control: 1-D positions change the logits
