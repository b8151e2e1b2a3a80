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
                 options: GenerationOptions, system: Optional[str] = None, vision=None, audio=None):
        if vision is not None and audio is not None:  # only the Qwen2.5-Omni thinker has both towers
            from launcher.models.omni import refuse_omni_generation

            refuse_omni_generation("chat")
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
        self.videos: list[str] = []
        """The conversation's videos so far, in the order of their <video> placeholders."""
        self.pending_videos: list[str] = []
        """Videos attached (/video, --video) for the next user turn."""
        self.audio = audio
        """An audio model's AudioData; None for others (then audio is refused)."""
        self.audios: list[str] = []
        """The conversation's audios so far, in the order of their <audio> placeholders."""
        self.pending_audios: list[str] = []
        """Audios attached (/audio, --audio) for the next user turn."""

    def reset(self, system: Optional[str] = None, keep_system: bool = True) -> None:
        self.history = []
        self.images, self.pending = [], []
        self.videos, self.pending_videos = [], []
        self.audios, self.pending_audios = [], []
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

    def attach_video(self, path: str) -> None:
        """Attach a video (a file or a folder of frames) to the next user turn, checked now (its header: one line
        if it is not a readable video)."""
        from launcher.data.video import plan_video
        from launcher.errors import DataError

        if self.vision is None:
            raise DataError(f"/video {path}: this model has no vision tower; chat with a Qwen-VL run")
        plan_video(path, self.vision.video, "/video")
        self.pending_videos.append(path)

    def attach_audio(self, path: str) -> None:
        """Attach an audio file to the next user turn, checked now (decoded: one line if it is missing,
        unreadable, empty or longer than the model hears)."""
        from launcher.data.audio import plan_audio
        from launcher.errors import DataError

        if self.audio is None:
            raise DataError(f"/audio {path}: this model has no audio tower; chat with a Qwen2-Audio run")
        plan_audio(path, self.audio, "/audio")
        self.pending_audios.append(path)

    def user_message(self, user_text: str) -> dict:
        """The next user turn: attached videos, then images, go first as <video> / <image> placeholders (unless
        the text places them)."""
        missing = len(self.pending) - user_text.count("<image>")
        missing_videos = len(self.pending_videos) - user_text.count("<video>")
        missing_audios = len(self.pending_audios) - user_text.count("<audio>")
        return {"role": "user", "content": "<audio>" * max(missing_audios, 0) + "<video>" * max(missing_videos, 0)
                + "<image>" * max(missing, 0) + user_text}

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def _prompt_and_images(self, user_text: str) -> tuple[str, list]:
        messages = self.messages() + [self.user_message(user_text)]
        if self.audio is not None:  # placeholders expanded to their spans; the plans go to reply's features
            from launcher.data.audio import count_placeholders, expand_audio_placeholders, plan_audio
            from launcher.errors import DataError

            audios = self.audios + self.pending_audios
            if count_placeholders(messages) != len(audios):
                raise DataError(f"chat: {count_placeholders(messages)} <audio> placeholder(s) but {len(audios)} audio(s)")
            plans = [plan_audio(a, self.audio, "chat") for a in audios]
            return self.render(expand_audio_placeholders(messages, plans, self.audio), None), plans
        if self.vision is None:
            return self.render(messages, None), []
        from launcher.data.vision import expand_prompt

        images = self.images + self.pending
        videos = self.videos + self.pending_videos
        if videos:
            expanded, grids, plans = expand_prompt(messages, images, self.vision, "chat", videos=videos)
            return self.render(expanded, None), (list(zip(images, grids)), plans)
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

        if self.audio is not None and images:  # an audio model: ``images`` holds the audio plans
            from launcher.data.audio import load_audio_features

            features = load_audio_features([p.source for p in images], [p.grid() for p in images], self.audio)
            enc = dict(enc, **{k: v.to(self.device) for k, v in features.items()})
        elif self.vision is not None:
            images, plans = images if isinstance(images, tuple) else (images, [])
            enc = dict(enc, **vision_inputs(enc, [images], self.vision, self.device, [plans]))

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
        self.videos += self.pending_videos
        self.pending_videos = []
        self.audios += self.pending_audios
        self.pending_audios = []
        return answer, prompt
