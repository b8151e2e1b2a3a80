"""The model behind ``launcher serve``: what a path holds, how it is loaded, and streamed generation.

A path is one of
- a run dir (``config.yaml``): its final model, merged adapter, or ``--checkpoint step-N``, as
  ``load_run_model`` loads it, prompts rendered with the template the run trained with;
- an export (``export_info.json``, from ``launcher export``): rendered with its run's template when that run
  dir is still there, else the tokenizer's chat template;
- any local Hugging Face model folder (``config.json``): the tokenizer's chat template (or ``--template``).

Generation runs on transformers (``model.generate`` with a streamer, in a worker thread) and reuses the
training loop's generation helpers (end-of-answer ids, greedy/sampling flags). ``--engine vllm`` generates with
vLLM in its own venv instead (launcher.serve.vllm_serving).

Vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL runs, exports or folders): a request's images (data URLs
or server paths, parsed by openai_protocol, read and decoded under launcher.serve.images' rules) are expanded
into vision spans and turned into pixels exactly as ``launcher chat --image`` does (launcher.data.vision,
launcher.inference.generation.vision_inputs); so are their videos (``video_url`` parts, ``launcher chat
--video``'s frames and tokens). Audio models (Qwen2-Audio): a request's ``input_audio`` clips become audio
spans and log-mel features as ``launcher chat --audio`` makes them. Video and audio bytes are checked and
held in a private temp folder under launcher.serve.media's bounds, removed when the request ends.

The context length is found wherever the model keeps it (``context_length``) and a server without one does
not start. A request is held to it before any costly work: first by its characters (no tokenizer turns more
than ``longest token`` characters into one token, so a longer text cannot fit), then by its tokens.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from launcher.errors import LauncherError
from launcher.paths import CONFIG_FILE
from launcher.serve.images import ImagePolicy
from launcher.serve.openai_protocol import ChatRequest, bad_request, releasable

# Config keys that hold a context length, across families (GPT-2: n_positions; MPT: max_seq_len; ...).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")
# Values at or above this are "unset" sentinels (tokenizers use int(1e30)), not limits.
UNSET = 10 ** 9


def context_limits(model, tokenizer) -> list[tuple[int, str, bool]]:
    """Every context length the model declares: (tokens, where, hard). Hard limits come from the config and
    its text_config (VL models keep them there: the position embeddings); soft ones from the generation
    config's max_length when the model sets one, and the tokenizer's model_max_length."""
    found = []
    configs = [("config", model.config)]
    text = getattr(model.config, "text_config", None)
    if text is not None:
        configs.append(("config.text_config", text))
    for where, config in configs:
        for key in CONTEXT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and 0 < value < UNSET:
                found.append((value, f"{where}.{key}", True))
    generation = getattr(model, "generation_config", None)
    if generation is not None and "max_length" in generation.to_diff_dict():  # set by the model, not the default 20
        value = generation.max_length
        if isinstance(value, int) and 0 < value < UNSET:
            found.append((value, "generation_config.max_length", False))
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < UNSET:
        found.append((value, "tokenizer.model_max_length", False))
    return found


def context_length(model, tokenizer, given: Optional[int] = None) -> tuple[Optional[int], str]:
    """(context length, where it comes from): the smallest the model declares; ``given`` (--context-length)
    replaces the soft limits but never passes a hard one. (None, "") when there is neither."""
    found = context_limits(model, tokenizer)
    if given is not None:
        found = [f for f in found if f[2]] + [(given, "--context-length", False)]
    if not found:
        return None, ""
    value, where, _ = min(found)
    return value, where


def longest_token_chars(tokenizer) -> int:
    """Characters in the vocabulary's longest token: no text of n characters is fewer than n / this tokens
    (byte-level tokens spell each byte as one character, so they are never shorter than the text they cover)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


def vllm_status() -> str:
    """One phrase for the start-up line: whether the vLLM engine (--engine vllm, its own venv) is at hand."""
    from launcher.inference.vllm_engine import INSTALL_COMMAND, vllm_python

    python = vllm_python()
    return f"vLLM venv at {python.parent.parent}" if python else f"vLLM venv absent: {INSTALL_COMMAND}"


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    render: Callable
    """messages -> prompt text ending with the assistant's generation prompt."""
    source: str
    """What was loaded, for the start-up line."""
    name: str
    """The model id clients send."""
    vision: object = None
    """A VL model's VisionData (image processor, limits, vision token ids); None for a text model."""
    audio: object = None
    """An audio model's AudioData (feature extractor, audio token ids); None for other models."""


def load_for_serving(path: Path, checkpoint: Optional[str] = None, template: Optional[str] = None,
                     dtype: str = "auto", name: Optional[str] = None) -> LoadedModel:
    import torch

    from launcher.inference.prompts import prompt_renderer
    from launcher.engines.distributed import choose_device
    from launcher.engines.precision import requested_dtype
    from launcher.inference.trained import load_run_model

    path = Path(path)
    device = choose_device()
    if (path / CONFIG_FILE).is_file():
        model, tokenizer, cfg, source = load_run_model(path, checkpoint=checkpoint, merge=True, device=device)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        source = f"the {source} of run {path}"
        default_name = cfg.run.name or path.parent.parent.name
    elif (path / "config.json").is_file():
        if checkpoint:
            raise LauncherError(f"--checkpoint: {path} is a model folder, not a run dir; drop --checkpoint")
        from launcher.models.tokenizers import load_saved_tokenizer
        from launcher.models.vision import auto_class_for

        tokenizer = load_saved_tokenizer(path)
        model = auto_class_for(path).from_pretrained(path).to(device)
        cfg, source = None, f"model folder {path}"
        info = path / "export_info.json"
        if info.is_file():
            run_dir = Path(json.loads(info.read_text()).get("run_dir", ""))
            if (run_dir / CONFIG_FILE).is_file():
                from launcher.config.schema import load_run_config

                cfg = load_run_config(run_dir)
                source = f"export {path} of run {run_dir}"
        default_name = path.name
    else:
        raise LauncherError(f"{path}: neither a run dir (config.yaml) nor a Hugging Face model folder (config.json)")
    torch_dtype = requested_dtype(dtype, device)
    if torch_dtype != torch.float32:
        model.to(torch_dtype)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    from launcher.config.schema import Config

    vision = None
    if getattr(model.config, "vision_config", None) is not None:
        from launcher.data import vision_data

        if cfg is None:  # a model folder: its own preprocessor_config.json and family
            cfg = Config()
            cfg.model.name_or_path = str(path)
        vision, _ = vision_data(cfg, tokenizer)
    audio = None
    from launcher.models.audio import is_audio_model

    if is_audio_model(model):
        from launcher.data import audio_data

        if cfg is None:  # a model folder: its own preprocessor_config.json
            cfg = Config()
            cfg.model.name_or_path = str(path)
        audio, _ = audio_data(cfg, tokenizer)
    if vision is not None and audio is not None:  # only the Qwen2.5-Omni thinker has both towers
        from launcher.models.omni import refuse_omni_generation

        refuse_omni_generation("launcher serve")
    if template:
        cfg = cfg if cfg is not None else Config()
        cfg.data.template = template
    # The run's template; without a run, the tokenizer's chat template (refused when it has none).
    renderer = prompt_renderer(tokenizer, cfg)
    renderer([{"role": "user", "content": "probe"}], None)  # a broken template fails here, not on a request
    return LoadedModel(model, tokenizer, lambda messages: renderer(messages, None), source, name or default_name,
                       vision, audio)


@dataclass
class Finished:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class _Cancelled:
    """A StoppingCriteria that ends generation when the request is gone (client left, stop string seen)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersEngine:
    """One generation at a time (the caller serialises); text streamed as it is decoded."""

    name = "transformers"

    def __init__(self, loaded: LoadedModel, max_new_tokens: int, images: Optional[ImagePolicy] = None,
                 context: Optional[int] = None):
        """``context``: the operator's context length (``--context-length``), in place of the tokenizer's or
        generation config's, never past the config's; the server needs one of them."""
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        self.images = images or ImagePolicy()
        from launcher.inference.generation import eos_ids

        self.stop_ids = eos_ids(loaded.model, loaded.tokenizer)
        self.device = next(loaded.model.parameters()).device
        declared, self.context_source = context_length(loaded.model, loaded.tokenizer, context)
        if declared is None:
            raise LauncherError("the model declares no context length (config max_position_embeddings, its"
                                " text_config, generation_config.max_length or the tokenizer's model_max_length);"
                                " pass --context-length N")
        self.context = declared
        self.max_prompt_chars = self.context * longest_token_chars(loaded.tokenizer)
        from launcher.serve.media import MediaFiles

        self.media = MediaFiles()

    @property
    def has_vision(self) -> bool:
        return self.loaded.vision is not None

    @property
    def has_audio(self) -> bool:
        return self.loaded.audio is not None

    def media_file(self, request: ChatRequest, source, kind: str) -> str:
        """A request's video or audio clip as a checked file in the server's media folder (removed with the
        request): a data URL's bytes, or a path's under the image roots."""
        from launcher.serve.media import MediaPath, check_audio, check_video

        if isinstance(source, MediaPath):
            data = self.images.read_path(source.path, source.label, "video")
            demuxer, suffix = None, Path(source.path).suffix.lower()[:8]
        else:
            data, demuxer, suffix = source.data, source.demuxer, f".{source.demuxer}"
        path = self.media.write(data, suffix)
        request.files.append(path)
        if kind == "audio":
            check_audio(path, demuxer, self.loaded.audio.max_seconds, source.label)
        else:
            check_video(path, demuxer, self.images.max_pixels, self.images.max_video_frames, source.label)
        return path

    def release(self, request: ChatRequest) -> None:
        """Remove the files a request's media were written to."""
        self.media.release(request.files)
        request.files.clear()

    def check_size(self, request: ChatRequest) -> None:
        """Refuse, before tokenizing or opening an image, a request that cannot fit the context: every image
        takes at least one token, and the text at least chars / longest-token tokens."""
        chars = sum(len(m["content"]) for m in request.messages)
        media = len(request.images) + len(request.videos) + len(request.audios)
        if chars > self.max_prompt_chars or media >= self.context:
            raise bad_request(f"the messages hold {chars:,} characters and {media} images, videos and audios; this"
                              f" model's context of {self.context} tokens holds at most {self.max_prompt_chars:,}"
                              " characters", "messages", "context_length_exceeded")

    def prepare(self, request: ChatRequest) -> tuple:
        """(prompt ids, [(image, grid)]) of a request, made once: checked against the context, images read and
        decoded under the server's rules, image placeholders expanded to vision spans. Blocking: call it from
        a worker thread."""
        if request.prepared is None:
            try:
                request.prepared = self._prepare(request)
            except BaseException:
                self.release(request)
                raise
        return request.prepared

    def _prepare(self, request: ChatRequest) -> tuple:
        from launcher.errors import DataError

        self.check_size(request)
        messages, images, media = request.messages, [], {}
        if self.has_vision:
            from launcher.data.vision import expand_prompt

            sources = [self.images.read(source) for source in request.images]
            for image in sources:
                self.images.check(image)
            videos = [self.media_file(request, source, "video") for source in request.videos]
            try:
                expanded = expand_prompt(messages, sources, self.loaded.vision, "messages", videos=videos)
            except DataError as exc:
                raise bad_request(str(exc), "messages", "invalid_video" if videos else "invalid_image") from None
            messages, grids = expanded[0], expanded[1]
            images = list(zip(sources, grids))
            media["video_plans"] = expanded[2] if videos else []
        if self.has_audio and request.audios:
            from launcher.data.audio import expand_audio_placeholders, plan_audio

            clips = [self.media_file(request, source, "audio") for source in request.audios]
            try:
                plans = [plan_audio(clip, self.loaded.audio, source.label)
                         for clip, source in zip(clips, request.audios)]
            except DataError as exc:
                raise bad_request(str(exc), "messages", "invalid_audio") from None
            messages = expand_audio_placeholders(messages, plans, self.loaded.audio)
            media["audio_plans"] = plans
        prompt = self.loaded.render(messages)
        ids = self.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.budget(request, len(ids))
        return ids, images, media

    def media_inputs(self, inputs, images: list, media: dict) -> dict:
        """The model's vision and audio inputs for a prepared request (pixels in the model's dtype)."""
        extra = {}
        dtype = next(self.loaded.model.parameters()).dtype
        if self.has_vision:
            from launcher.inference.generation import vision_inputs

            extra = vision_inputs({"input_ids": inputs}, [images], self.loaded.vision, self.device,
                                  [media.get("video_plans", [])])
            for key in ("pixel_values", "pixel_values_videos"):
                if key in extra:
                    extra[key] = extra[key].to(dtype)
        plans = media.get("audio_plans")
        if plans:
            from launcher.data.audio import load_audio_features

            features = load_audio_features([p.source for p in plans], [p.grid() for p in plans], self.loaded.audio)
            extra.update(input_features=features["input_features"].to(self.device, dtype),
                         feature_attention_mask=features["feature_attention_mask"].to(self.device))
        return extra

    def budget(self, request: ChatRequest, prompt_tokens: int) -> int:
        """New tokens allowed: the request's max_tokens (or the server's cap) within the context length."""
        room = self.context - prompt_tokens
        if room < 1:
            raise bad_request(f"the prompt is {prompt_tokens} tokens; this model's context is {self.context}",
                              "messages", "context_length_exceeded")
        return min(request.max_tokens or self.max_new_tokens, room)

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator:
        """Yield text pieces, then one ``Finished``. Stop sequences are cut out, as the OpenAI API does."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from launcher.inference.generation import answer_ids, sampling_kwargs

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        ids, images, media = self.prepare(request)
        max_new = self.budget(request, len(ids))
        if request.seed is not None:
            torch.manual_seed(request.seed)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict = {}
        inputs = torch.tensor([ids], device=self.device)
        try:
            extra = self.media_inputs(inputs, images, media)
        finally:
            self.release(request)  # decoded: the files are not read again

        def work():
            try:
                with torch.no_grad():
                    result["out"] = model.generate(
                        input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new, **extra,
                        streamer=streamer, pad_token_id=tokenizer.pad_token_id, eos_token_id=self.stop_ids,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                        **sampling_kwargs(request.temperature > 0, request.temperature, request.top_p))
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=work, name="generate", daemon=True)
        worker.start()
        text, sent, stopped = "", 0, False
        try:
            for piece in streamer:
                text += piece
                out, sent, stopped = releasable(text, sent, request.stop)
                if stopped:
                    cancel.set()
                if out:
                    yield out
                if stopped:
                    break
        finally:
            cancel.set()  # a consumer that left (client gone) ends generation at the next token
            worker.join()
        if "error" in result:
            raise result["error"]
        if not stopped and len(text) > sent:
            yield text[sent:]
        new = result["out"][0, len(ids):].tolist()
        answer = answer_ids(new, self.stop_ids)
        ended = len(answer) < len(new) or stopped
        yield Finished("stop" if ended else "length", len(ids), len(answer) + (1 if len(answer) < len(new) else 0))
