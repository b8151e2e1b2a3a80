"""Label masks, token by token: which text is trained, for multi-turn, system, tools, thinking and truncation."""
import json

from launcher.data.templates import NamedTemplate, TokenizerTemplate, choose_renderer, split_pairs
from launcher.data.tokenize import IGNORE_INDEX, encode_supervised, infer_seqlen, tokenize_sample
from tests.data.helpers import char_tokenizer, qwen_tokenizer

MULTI = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
], "tools": None}


def expected_row(tok, pieces):
    """pieces: [(text, trained)] -> the row the pipeline must produce (each piece tokenized alone)."""
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return {"input_ids": ids, "labels": labels}


def test_multi_turn_with_system_tokenizer_template():
    tok = char_tokenizer()
    renderer, note = choose_renderer(tok, None)
    assert isinstance(renderer, TokenizerTemplate) and note == ""
    [row] = tokenize_sample(tok, renderer, MULTI, cutoff_len=1024)
    assert row == expected_row(tok, [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello!<|im_end|>\n", True),
        ("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", False),
        ("4<|im_end|>\n", True),
    ])


def test_train_on_prompt_and_mask_history():
    tok = char_tokenizer()
    renderer, _ = choose_renderer(tok, None)
    [row] = tokenize_sample(tok, renderer, MULTI, cutoff_len=1024, train_on_prompt=True)
    assert row["labels"] == row["input_ids"]
    [row] = tokenize_sample(tok, renderer, MULTI, cutoff_len=1024, mask_history=True)
    assert row == expected_row(tok, [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello!<|im_end|>\n", False),
        ("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", False),
        ("4<|im_end|>\n", True),
    ])


def test_tool_call_and_observation_qwen():
    tok = qwen_tokenizer()
    renderer, _ = choose_renderer(tok, None)
    call = {"name": "add", "arguments": {"a": 1, "b": 2}}
    sample = {"messages": [
        {"role": "user", "content": "Add 1 and 2."},
        {"role": "function_call", "content": json.dumps(call)},
        {"role": "tool", "content": '{"sum": 3}'},
        {"role": "assistant", "content": "It is 3."},
    ], "tools": json.dumps([{"name": "add", "description": "Add", "parameters": {"type": "object"}}])}
    [row] = tokenize_sample(tok, renderer, sample, cutoff_len=1024)
    system = renderer.render([], [{"type": "function", "function": {"name": "add", "description": "Add",
                                                                     "parameters": {"type": "object"}}}], False)
    assert system.startswith("<|im_start|>system\n# Tools") and '"name": "add"' in system
    assert row == expected_row(tok, [
        (system + "<|im_start|>user\nAdd 1 and 2.<|im_end|>\n<|im_start|>assistant\n", False),
        ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call><|im_end|>\n', True),
        ('<|im_start|>user\n<tool_response>\n{"sum": 3}\n</tool_response><|im_end|>\n<|im_start|>assistant\n', False),
        ("It is 3.<|im_end|>\n", True),
    ])
    # the end-of-turn token is trained, and decodes back to the ChatML text exactly
    assert tok.convert_tokens_to_ids("<|im_end|>") in [l for l in row["labels"] if l != IGNORE_INDEX]


def test_named_qwen_adds_llamafactorys_default_system_and_qwen3_nothink_none():
    """LF 0.9.5's qwen template: ``system or default_system``; its qwen3_nothink (and our chatml) has none."""
    tok = qwen_tokenizer()
    default = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    body = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    qwen = choose_renderer(tok, "qwen")[0]
    assert qwen.render(chat, None, False) == default + body
    assert qwen.render([{"role": "system", "content": ""}] + chat, None, False) == default + body
    assert qwen.render([{"role": "system", "content": "S"}] + chat, None, False).startswith("<|im_start|>system\nS<|im")
    assert split_pairs(qwen, chat, None, "t") == [(default + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                                                  "Yo<|im_end|>\n")]
    for name in ("qwen3_nothink", "chatml"):
        assert choose_renderer(tok, name)[0].render(chat, None, False) == body


def test_qwen3_template_falls_back_and_keeps_thinking_trained():
    tok = qwen_tokenizer()
    own = TokenizerTemplate(tok)
    # Qwen3's template renders the last assistant turn differently from the same turn inside a longer chat
    full = own.render(MULTI["messages"], None, False)
    prefix = own.render(MULTI["messages"][:3], None, False)
    assert not full.startswith(prefix)
    renderer, note = choose_renderer(tok, None)
    assert isinstance(renderer, NamedTemplate) and renderer.name == "qwen3_nothink" and "cannot be split" in note
    sample = {"messages": [{"role": "user", "content": "Why?"},
                           {"role": "assistant", "content": "<think>\nBecause.\n</think>\n\nSo."}], "tools": None}
    [row] = tokenize_sample(tok, renderer, sample, cutoff_len=1024)
    assert row == expected_row(tok, [
        ("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n", False),
        ("<think>\nBecause.\n</think>\n\nSo.<|im_end|>\n", True),
    ])


def test_named_templates_split_into_turns():
    for name in ("chatml", "llama3", "mistral", "plain"):
        pairs = split_pairs(NamedTemplate(name, eos_token="</s>"), MULTI["messages"], None, "t")
        assert [a for _, a in pairs][1].startswith("4"), name
        assert "".join(p + a for p, a in pairs) == NamedTemplate(name, "</s>").render(MULTI["messages"], None, False)


def test_infer_seqlen_as_llamafactory():
    assert infer_seqlen(100, 10, 50) == (40, 10)   # short answer kept, prompt cut
    assert infer_seqlen(10, 100, 50) == (10, 40)   # short prompt kept, answer cut
    assert infer_seqlen(100, 100, 50) == (25, 25)  # both long: in proportion
    assert infer_seqlen(300, 100, 100) == (75, 25)


def test_truncation_keeps_the_answer_and_drops_later_turns():
    prompt1, answer1, prompt2, answer2 = list(range(30)), list(range(100, 105)), list(range(200, 210)), list(range(300, 305))
    row = encode_supervised([(prompt1, answer1), (prompt2, answer2)], cutoff_len=20)
    assert row["input_ids"] == prompt1[:15] + answer1
    assert row["labels"] == [IGNORE_INDEX] * 15 + answer1
    row = encode_supervised([(prompt1, answer1), (prompt2, answer2)], cutoff_len=20, mask_history=True)
    # the last turn gets the budget first; what is left goes to the earlier turn, whose answer is masked
    assert row["input_ids"] == prompt1[:5] + prompt2 + answer2
    assert row["labels"] == [IGNORE_INDEX] * 15 + answer2


def test_truncated_real_sample_token_exact():
    tok = char_tokenizer()
    renderer, _ = choose_renderer(tok, None)
    sample = {"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "short"}], "tools": None}
    [row] = tokenize_sample(tok, renderer, sample, cutoff_len=64)
    answer = tok("short<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert len(row["input_ids"]) == 64
    assert row["input_ids"][-len(answer):] == answer and row["labels"][-len(answer):] == answer
    assert row["labels"][: 64 - len(answer)] == [IGNORE_INDEX] * (64 - len(answer))
