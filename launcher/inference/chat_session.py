"""One multi-turn conversation with a model: history, system prompt, streamed replies.

The terminal loop (``launcher.inference.chat``) feeds it lines; it renders the whole history the way training rendered
conversations (``launcher.inference.prompts.prompt_renderer``), generates with a streamer that writes tokens as
they come, and keeps the answer in the history for the next turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, TextIO

import torch


@dataclass
class GenerationOptions:
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.95
    top_p: float = 0.7


def make_streamer(tokenizer, out: TextIO):
    """A TextStreamer that writes to ``out`` (not only stdout) and flushes each piece."""
    from transformers import TextStreamer

    class StreamTo(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text)
            out.flush()

    return StreamTo(tokenizer, skip_prompt=True, skip_special_tokens=True)


class ChatSession:
    def __init__(self, model, tokenizer, render: Callable[[list, Optional[list]], str], device,
                 options: GenerationOptions, system: Optional[str] = None):
        self.model, self.tokenizer, self.render, self.device = model, tokenizer, render, device
        self.options = options
        self.system = system
        self.history: list[dict] = []

    def reset(self, system: Optional[str] = None, keep_system: bool = True) -> None:
        self.history = []
        if not keep_system or system is not None:
            self.system = system

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def prompt_for(self, user_text: str) -> str:
        return self.render(self.messages() + [{"role": "user", "content": user_text}], None)

    @torch.no_grad()
    def reply(self, user_text: str, out: Optional[TextIO] = None) -> tuple[str, str]:
        """(answer, prompt text): the answer is streamed to ``out`` and added to the history."""
        prompt = self.prompt_for(user_text)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        from launcher.inference.generation import answer_ids, eos_ids, sampling_kwargs

        o = self.options
        stop = eos_ids(self.model, self.tokenizer)
        streamer = make_streamer(self.tokenizer, out) if out is not None else None
        generated = self.model.generate(**enc, max_new_tokens=o.max_new_tokens, streamer=streamer,
                                        pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stop,
                                        **sampling_kwargs(o.do_sample, o.temperature, o.top_p))
        new = generated[0, enc["input_ids"].shape[1]:].tolist()
        answer = self.tokenizer.decode(answer_ids(new, stop), skip_special_tokens=True).strip()
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
        return answer, prompt
