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
                 options: GenerationOptions, system: Optional[str] = None, vision=None):
        self.model, self.tokenizer, self.render, self.device = model, tokenizer, render, device
        self.options = options
        self.system = system
        self.history: list[dict] = []
        self.vision = vision
        """A VL model's VisionData; None for a text model (then images are refused)."""
        self.images: list[str] = []
        """The conversation's images so far, in the order of their <image> placeholders."""
        self.pending: list[str] = []
        """Images attached (/image, --image) for the next user turn."""

    def reset(self, system: Optional[str] = None, keep_system: bool = True) -> None:
        self.history = []
        self.images, self.pending = [], []
        if not keep_system or system is not None:
            self.system = system

    def attach(self, path: str) -> None:
        """Attach an image to the next user turn (checked now: one line if it is not a readable image)."""
        from launcher.data.vision import image_size
        from launcher.errors import DataError

        if self.vision is None:
            raise DataError(f"/image {path}: this model has no vision tower; chat with a Qwen-VL run")
        image_size(path, "/image")
        self.pending.append(path)

    def user_message(self, user_text: str) -> dict:
        """The next user turn: attached images go first as <image> placeholders (unless the text places them)."""
        missing = len(self.pending) - user_text.count("<image>")
        return {"role": "user", "content": "<image>" * max(missing, 0) + user_text}

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def _prompt_and_images(self, user_text: str) -> tuple[str, list]:
        messages = self.messages() + [self.user_message(user_text)]
        if self.vision is None:
            return self.render(messages, None), []
        from launcher.data.vision import expand_prompt

        images = self.images + self.pending
        expanded, grids = expand_prompt(messages, images, self.vision, "chat")
        return self.render(expanded, None), list(zip(images, grids))

    def prompt_for(self, user_text: str) -> str:
        return self._prompt_and_images(user_text)[0]

    @torch.no_grad()
    def reply(self, user_text: str, out: Optional[TextIO] = None) -> tuple[str, str]:
        """(answer, prompt text): the answer is streamed to ``out`` and added to the history."""
        prompt, images = self._prompt_and_images(user_text)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        from launcher.inference.generation import answer_ids, eos_ids, sampling_kwargs, vision_inputs

        if self.vision is not None:
            enc = dict(enc, **vision_inputs(enc, [images], self.vision, self.device))

        o = self.options
        stop = eos_ids(self.model, self.tokenizer)
        streamer = make_streamer(self.tokenizer, out) if out is not None else None
        generated = self.model.generate(**enc, max_new_tokens=o.max_new_tokens, streamer=streamer,
                                        pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stop,
                                        **sampling_kwargs(o.do_sample, o.temperature, o.top_p))
        new = generated[0, enc["input_ids"].shape[1]:].tolist()
        answer = self.tokenizer.decode(answer_ids(new, stop), skip_special_tokens=True).strip()
        self.history += [self.user_message(user_text), {"role": "assistant", "content": answer}]
        self.images += self.pending
        self.pending = []
        return answer, prompt
