"""chat: a scripted conversation through standard input, two turns, then /reset."""
from __future__ import annotations

import json
import subprocess
import sys



def test_scripted_two_turn_chat(lora_run, tmp_path, repo_env):
    log = tmp_path / "chat.jsonl"
    script = "Add the two numbers.\n/help\nNow the word backward: abc\n/reset\nfresh start\n/exit\nnever read\n"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from launcher.inference.chat import chat_main; sys.exit(chat_main(sys.argv[1:]))",
         str(lora_run), "--system", "Answer briefly.", "--max-new-tokens", "5", "--debug-prompt", "--log", str(log)],
        input=script, capture_output=True, text=True, env=repo_env, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.count("Assistant: ") == 3  # two turns, and one after /reset; "never read" is after /exit
    assert "User: Add the two numbers." in out and "commands: /reset" in out and "never read" not in out
    assert proc.stderr.count("--- prompt ---") == 3

    records = [json.loads(line) for line in log.read_text().splitlines()]
    turns = [r for r in records if r["event"] == "turn"]
    assert [t["user"] for t in turns] == ["Add the two numbers.", "Now the word backward: abc", "fresh start"]
    first, second, third = turns
    assert first["prompt"].startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")
    # The second prompt carries the first turn: its question and the answer the model gave.
    assert first["prompt"] in second["prompt"]
    assert f"<|im_start|>assistant\n{first['assistant']}<|im_end|>" in second["prompt"]
    assert second["prompt"].endswith("<|im_start|>user\nNow the word backward: abc<|im_end|>\n<|im_start|>assistant\n")
    # After /reset only the system prompt remains.
    assert "Add the two numbers." not in third["prompt"] and "Answer briefly." in third["prompt"]
    assert any(r["event"] == "reset" for r in records)
