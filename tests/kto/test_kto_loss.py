"""Our KTO loss equals TRL's on the same inputs: TRL 1.16's KTOTrainer builds the batch (its tokenization, its
mismatched KL pairs) and computes its loss (``_compute_loss``, loss_type="kto"); our objective scores the same
rows with the same policy and reference. The policy is first moved away from the reference towards the
mismatched answers, so the KL term is positive (not clamped to 0) and every part of the loss is exercised."""
from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from launcher.config.schema import KtoConfig
from launcher.data.collate import collate_feedback
from launcher.models.tokenizers import build_char_tokenizer
from launcher.training.objectives.kto import KTOObjective
from launcher.training.objectives.preference import SequenceLogProbs

trl = pytest.importorskip("trl")


def trl_rows(batch: dict, prefix: str = "") -> list[tuple[list, list]]:
    """TRL's padded batch (or its KL half, prefix "KL_") -> unpadded (input_ids, labels) per row."""
    out = []
    for i in range(batch["input_ids"].shape[0]):
        mask = batch[f"{prefix}attention_mask"][i].bool()
        ids = batch[f"{prefix}input_ids"][i][mask].tolist()
        completion = batch[f"{prefix}completion_mask"][i][mask].bool().tolist()
        out.append((ids, [t if c else -100 for t, c in zip(ids, completion)]))
    return out


def rows_from_trl(batch: dict) -> list[dict]:
    """TRL's padded batch -> our KTO rows as the store gives them (prompt untrained, answer trained); the KL
    rows are ours to make, at collate time."""
    return [{"input_ids": ids, "labels": labels, "prompt_len": next(k for k, t in enumerate(labels) if t != -100),
             "kto_tag": int(bool(batch["label"][i]))} for i, (ids, labels) in enumerate(trl_rows(batch))]


def test_kto_loss_equals_trl(tmp_path):
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import KTOConfig, KTOTrainer

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    rows = [{"prompt": f"Q{i}: ab{i}", "completion": f"ans{i * 7}", "label": i % 3 != 0} for i in range(6)]
    beta, w_good, w_bad = 0.3, 1.2, 0.7
    args = KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, beta=beta, desirable_weight=w_good,
                     undesirable_weight=w_bad, report_to=[], use_cpu=True, max_length=64)
    trainer = KTOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    ours = rows_from_trl(batch)
    collate = partial(collate_feedback, pad_token_id=tok.pad_token_id, cutoff_len=64)
    # our KL rows, rotated within the micro-batch at collate time, are TRL's KL rows
    b = len(ours)
    kl = collate(ours)
    ours_kl = [(kl["input_ids"][b + i][kl["attention_mask"][b + i].bool()].tolist(),
                kl["labels"][b + i][kl["attention_mask"][b + i].bool()].tolist()) for i in range(b)]
    assert ours_kl == trl_rows(batch, "KL_")
    policy = SequenceLogProbs(trainer.model)

    # move the policy towards the mismatched answers: their log-probs rise above the reference's (KL > 0)
    kl_batch = collate(ours)
    half = KTOObjective._half(kl_batch, second=True)
    opt = torch.optim.Adam(trainer.model.parameters(), lr=3e-2)
    for _ in range(5):
        opt.zero_grad()
        (-policy(**half)[0].sum()).backward()
        opt.step()

    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, batch, False)
    trl_metrics = trainer._metrics["eval"]  # TRL files metrics under eval when the model is in eval mode
    trl_kl = trl_metrics["kl"][-1]

    data = SimpleNamespace(collate=collate)
    run_cfg = SimpleNamespace(method=SimpleNamespace(kto=KtoConfig(beta=beta, desirable_weight=w_good,
                                                                   undesirable_weight=w_bad)),
                              train=SimpleNamespace(micro_batch_size=6, loss_chunk_size=256))
    objective = KTOObjective(data, run_cfg)
    ref_scorer = SequenceLogProbs(ref)
    objective.reference = lambda b: ref_scorer(**b)[0]
    ours_batch = objective.collate(ours)
    counts = torch.tensor(objective.normalizers([ours_batch]) + [0, 0], dtype=torch.float64)
    with torch.no_grad():
        loss, stats = objective.micro_batch_loss(policy, ours_batch, counts, world_size=1)
    metrics = objective.step_metrics(stats, counts)

    assert trl_kl > 0.1  # the KL term is live, not clamped
    assert metrics["kl"] == pytest.approx(trl_kl, rel=1e-4)
    torch.testing.assert_close(loss.float(), trl_loss.float(), rtol=1e-4, atol=1e-6)
    assert metrics["rewards/chosen"] == pytest.approx(trl_metrics["rewards/chosen"][-1], rel=1e-3, abs=1e-6)
    assert metrics["rewards/rejected"] == pytest.approx(trl_metrics["rewards/rejected"][-1], rel=1e-3, abs=1e-6)
    assert metrics["logps/chosen"] == pytest.approx(trl_metrics["logps/chosen"][-1], rel=1e-4)
