"""Audio in LLaMA-Factory's data contract -> audio tokens in the text, and log-mel features for the model.

An ``audios`` entry is an audio file (anything FFmpeg reads: mp3, wav, flac, ogg, m4a, or a video's audio
track), decoded with PyAV. LLaMA-Factory 0.9.5 (``MMPluginMixin._regularize_audios``) reads it with
``torchaudio.load`` (FFmpeg through TorchCodec), averages the channels, and resamples to
``audio_sampling_rate`` (16 kHz) with ``torchaudio.functional.resample``; the model's feature extractor
(Qwen2-Audio: Whisper's 128-bin log-mel, 30 s chunks) pads to 30 s and its attention mask counts the frames,
one per 160 samples (``ceil(samples / 160)``). ``Qwen2AudioPlugin`` turns the frames into tokens as the audio
tower's two convolutions do: ``((frames - 1) // 2 + 1 - 2) // 2 + 1``, and ``<audio>`` becomes
``<|audio_bos|>`` + that many ``<|AUDIO|>`` + ``<|audio_eos|>``.

Tokenization (once, cached) decodes the whole stream: the sample count after resampling fixes the tokens, and
an MP3's header does not give it exactly. Rows keep the path and [samples, frames, tokens]. Features are made
again per batch in the data-loader workers (``load_audio_features``), as images' pixels are: a log-mel of
30 s is 1.5 MB of float32 per audio, which a cache of a large dataset should not hold.

Why our own resampler: torchaudio's wheels are built for one torch version each and none loads beside this
project's CPU torch, and scipy/soxr are not dependencies. ``resample`` is torchaudio's windowed-sinc
(``sinc_interp_hann``, width 6, rolloff 0.99) written out in torch, so the waveform and the features match
LF's (tests/vl/test_audio.py compares the features' sums with LF's fixture).

Where LF has no answer we choose: audio longer than the feature extractor's chunk (30 s for Qwen2-Audio) is
refused, naming the row, where LF silently drops what follows the first 30 s; an empty or silent-length (0
samples) file is refused where LF fails inside the feature extractor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from launcher.errors import DataError

AUDIO_PLACEHOLDER = "<audio>"
LF_AUDIO_SAMPLING_RATE = 16000
"""LLaMA-Factory's audio_sampling_rate default: what audio is resampled to before the feature extractor."""


@dataclass
class AudioData:
    """What tokenization and collation need to know about the model's audio input."""

    feature_extractor: Any
    """transformers' WhisperFeatureExtractor of the model (launcher.models.audio.build_feature_extractor)."""
    sampling_rate: int = LF_AUDIO_SAMPLING_RATE
    audio_bos: str = "<|audio_bos|>"
    audio_eos: str = "<|audio_eos|>"
    audio_pad: str = "<|AUDIO|>"
    ids: dict = field(default_factory=dict)
    """Token ids of audio_bos, audio_eos, audio_pad (filled by ``with_tokenizer``)."""
    use_audio_in_video: bool = False
    """data.use_audio_in_video (the Qwen2.5-Omni thinker: launcher.data.omni)."""

    @property
    def max_seconds(self) -> float:
        """The longest audio the model hears: the feature extractor's chunk (Qwen2-Audio: 30 s)."""
        return self.feature_extractor.n_samples / self.feature_extractor.sampling_rate

    def with_tokenizer(self, tokenizer) -> "AudioData":
        for key in ("audio_bos", "audio_eos", "audio_pad"):
            token = getattr(self, key)
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise DataError(f"model.tokenizer: has no {token} token; a Qwen2-Audio or Qwen2.5-Omni model needs its"
                                " own tokenizer (model.tokenizer=builtin:qwen2_audio or builtin:qwen2_5_omni for a"
                                " random-init one)")
            self.ids[key] = token_id
        return self

    def fingerprint(self) -> dict:
        f = self.feature_extractor
        return {"class": type(f).__name__, "bins": f.feature_size, "rate": f.sampling_rate, "hop": f.hop_length,
                "n_fft": f.n_fft, "chunk": f.chunk_length, "resample_to": self.sampling_rate,
                **({"in_video": True} if self.use_audio_in_video else {})}


@dataclass(frozen=True)
class AudioPlan:
    """What an audio becomes."""

    source: str
    samples: int
    """Samples at the feature extractor's rate, after LF's resampling."""
    frames: int
    """Feature frames (the feature attention mask's sum)."""
    tokens: int
    """``<|AUDIO|>`` tokens."""

    @property
    def seconds(self) -> float:
        return self.samples / LF_AUDIO_SAMPLING_RATE

    def grid(self) -> list[int]:
        """How the token store keeps it (three ints, as an image's grid)."""
        return [self.samples, self.frames, self.tokens]


# --------------------------------------------------------------------------------------- waveforms


def decode_audio(path: str, where: str):
    """([channels, samples] float32 numpy array, sample rate): every frame of the first audio stream, FFmpeg's
    decode through PyAV (what torchaudio.load / TorchCodec returns). No torch here: tokenization runs in forked
    workers, where a torch op after the parent's thread pool started can hang."""
    import av
    import numpy as np

    if not Path(path).is_file():
        raise DataError(f"{where}: audio file not found: {path}; paths are relative to data.dataset_dir")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"{where}: {path} is not audio FFmpeg can read ({type(exc).__name__}: {exc});"
                        " replace the file or remove the row") from None
    try:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise DataError(f"{where}: {path} has no audio stream; replace the file or remove the row")
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
        rate = stream.rate
    except DataError:
        raise
    except Exception as exc:  # a stream FFmpeg cannot decode further
        raise DataError(f"{where}: {path} is unreadable audio ({type(exc).__name__}: {exc}); replace the file or"
                        " remove the row") from None
    finally:
        container.close()
    if not chunks or not rate:
        raise DataError(f"{where}: audio {path} has no samples (0 s); replace the file or remove the row")
    return np.concatenate(chunks, axis=1).astype(np.float32), int(rate)


def _sinc_kernel(orig: int, new: int, dtype, width_zeros: int = 6, rolloff: float = 0.99):
    """torchaudio.functional._get_sinc_resample_kernel, sinc_interp_hann (orig/new already divided by their gcd)."""
    import torch

    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t *= math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernel *= window * (base / orig)
    return kernel, width


def resample(waveform, orig_freq: int, new_freq: int):
    """torchaudio.functional.resample with its defaults, on [..., samples]: ``ceil(samples * new / orig)`` out."""
    import torch

    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _sinc_kernel(orig, new, waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = int(math.ceil(new * length / orig))
    return out[..., :target].reshape(shape[:-1] + (min(target, out.shape[-1]),))


def resampled_length(samples: int, orig_freq: int, new_freq: int) -> int:
    """The samples ``resample`` makes of ``samples`` (torchaudio's ceil(samples * new / orig), gcd-reduced)."""
    if orig_freq == new_freq:
        return samples
    gcd = math.gcd(int(orig_freq), int(new_freq))
    return int(math.ceil((new_freq // gcd) * samples / (orig_freq // gcd)))


def load_waveform(path: str, sampling_rate: int, where: str):
    """LF's ``_regularize_audios``: mono (the mean of the channels) at ``sampling_rate``, as a float32 numpy array
    (per batch, in the data-loader workers, which run torch on one thread)."""
    import torch

    decoded, rate = decode_audio(path, where)
    audio = torch.from_numpy(decoded)
    if audio.shape[0] > 1:
        audio = audio.mean(dim=0, keepdim=True)
    if rate != sampling_rate:
        audio = resample(audio, rate, sampling_rate)
    return audio.squeeze(0).numpy()


# ------------------------------------------------------------------------------------ tokenization


def audio_tokens_of(frames: int) -> int:
    """Qwen2-Audio's tokens for a number of feature frames (its tower's two convolutions, then pooling)."""
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def plan_audio(source: str, audio: AudioData, where: str) -> AudioPlan:
    """The samples, frames and tokens of one audio; audio longer than the model hears is refused."""
    decoded, rate = decode_audio(source, where)  # the length only: resampling waits for the batch
    samples = resampled_length(int(decoded.shape[1]), rate, audio.sampling_rate)
    if samples == 0:
        raise DataError(f"{where}: audio {source} has no samples (0 s); replace the file or remove the row")
    seconds = samples / audio.sampling_rate
    if seconds > audio.max_seconds:
        raise DataError(f"{where}: audio {source} is {seconds:.1f} s but the model hears at most"
                        f" {audio.max_seconds:g} s (its feature extractor's chunk_length; LLaMA-Factory would drop"
                        " the rest silently); cut or split the file (e.g. ffmpeg -i in -t 30 out.wav)")
    frames = math.ceil(samples / audio.feature_extractor.hop_length)
    return AudioPlan(str(source), samples, frames, audio_tokens_of(frames))


def audio_text(plan: AudioPlan, audio: AudioData) -> str:
    """The text an ``<audio>`` placeholder becomes."""
    return audio.audio_bos + audio.audio_pad * plan.tokens + audio.audio_eos


def expand_audio_placeholders(messages: list[dict], plans: Sequence[AudioPlan], audio: AudioData) -> list[dict]:
    """A copy of the messages with the i-th ``<audio>`` replaced by its span, in text order."""
    out, k = [], 0
    for m in messages:
        pieces = m["content"].split(AUDIO_PLACEHOLDER)
        text = pieces[0]
        for piece in pieces[1:]:
            text += audio_text(plans[k], audio) + piece
            k += 1
        out.append(dict(m, content=text))
    return out


def count_placeholders(messages: Sequence[dict]) -> int:
    return sum(m["content"].count(AUDIO_PLACEHOLDER) for m in messages if isinstance(m.get("content"), str))


def sample_audios(sample: dict, audio: AudioData, cutoff_len: int, where: str) -> list[AudioPlan]:
    """The AudioPlan of each of the sample's audios; one that alone takes more than cutoff_len tokens is refused."""
    plans = []
    for i, source in enumerate(sample.get("audios") or []):
        plan = plan_audio(str(source), audio, where)
        if plan.tokens + 2 > cutoff_len:
            raise DataError(f"{where}: audio {i} ({source}, {plan.seconds:.1f} s) takes {plan.tokens + 2} tokens but"
                            f" data.cutoff_len is {cutoff_len}; raise data.cutoff_len or cut the audio")
        plans.append(plan)
    return plans


def audio_spans(input_ids: list[int], audio: AudioData) -> list[tuple[int, int]]:
    """[(start, end)) of each audio span, audio_bos..audio_eos inclusive; unmatched markers give -1."""
    spans, start = [], None
    for i, t in enumerate(input_ids):
        if t == audio.ids["audio_bos"]:
            if start is not None:
                spans.append((start, -1))
            start = i
        elif t == audio.ids["audio_eos"]:
            spans.append((start if start is not None else -1, i + 1))
            start = None
    if start is not None:
        spans.append((start, -1))
    return spans


def tokenize_audio_sample(tokenizer, renderer, sample: dict, cutoff_len: int, train_on_prompt: bool,
                          mask_history: bool, audio: AudioData, lenient: bool, where: str) -> tuple[list, int]:
    """``tokenize_sample`` for a sample with audios: placeholders expanded before rendering, labels off audio
    tokens, each row carrying ``audios`` (paths) and ``audio_grid`` ([samples, frames, tokens] each).
    (rows, rows shortened because cutoff_len cut an audio's span): strict mode refuses such a row naming the
    audio; lenient mode cuts it before that audio (a row left with nothing trained is dropped later)."""
    from launcher.data.tokenize import tokenize_sample
    from launcher.data.vision import IGNORE_INDEX

    plans = sample_audios(sample, audio, cutoff_len, where)
    expanded = dict(sample, messages=expand_audio_placeholders(sample["messages"], plans, audio))
    used = count_placeholders(sample["messages"])
    for key in ("chosen", "rejected"):
        if key in sample:
            expanded[key] = expand_audio_placeholders([sample[key]], plans[used:], audio)[0]
    audio_ids = set(audio.ids.values())
    rows, shortened = [], 0
    for row in tokenize_sample(tokenizer, renderer, expanded, cutoff_len, train_on_prompt, mask_history, where):
        if "chosen_input_ids" in row:
            sides = [("chosen_", used + count_placeholders([sample["chosen"]])),
                     ("rejected_", used + count_placeholders([sample["rejected"]]))]
        else:
            sides = [("", len(plans))]
        kept = len(plans)
        for prefix, expected in sides:
            ids = row[f"{prefix}input_ids"]
            spans = audio_spans(ids, audio)
            whole = 0
            while (whole < min(len(spans), expected) and spans[whole][0] >= 0 and spans[whole][1] >= 0
                   and spans[whole][1] - spans[whole][0] == plans[whole].tokens + 2):
                whole += 1
            if whole < expected:
                start = spans[whole][0] if whole < len(spans) and spans[whole][0] >= 0 else len(ids)
                if not lenient or prefix:  # a preference pair shares its prompt: never shortened
                    raise DataError(f"{where}: data.cutoff_len={cutoff_len} cuts through an audio's tokens (audio"
                                    f" {whole}: {plans[whole].source}, {plans[whole].tokens + 2} tokens from token"
                                    f" {start}); raise data.cutoff_len, or set data.lenient=true to shorten such"
                                    " rows before the cut audio")
                row["input_ids"], row["labels"] = ids[:start], row["labels"][:start]
                kept, shortened = whole, shortened + 1
            row[f"{prefix}labels"] = [IGNORE_INDEX if t in audio_ids else y
                                      for t, y in zip(row[f"{prefix}input_ids"], row[f"{prefix}labels"])]
        row["audios"] = [p.source for p in plans[:kept]]
        row["audio_grid"] = [p.grid() for p in plans[:kept]]
        rows.append(row)
    return rows, shortened


# --------------------------------------------------------------------------------------- features


def load_audio_features(sources: list[str], grids: list, audio: AudioData, pad_to_chunk: bool = True) -> dict:
    """{input_features [n, bins, frames of 30 s], feature_attention_mask [n, frames]} for the audios of a batch,
    in order (LF's ``_get_mm_inputs``: padded to the chunk); each must make the frames its tokens were counted for.

    ``pad_to_chunk=False`` (the Qwen2.5-Omni thinker, whose tower reads only the masked frames, in windows of any
    count): padded with zeros to the batch's longest audio plus 10 frames instead of the 300 s chunk, 50x less
    log-mel work for short clips. The unmasked frames are the same numbers as with the chunk: each sees the same
    zeros past its audio's end (the STFT window is 400 samples), and the log-mel's clamp (max - 8) takes its
    maximum from the audio's frames either way."""
    import numpy as np
    import torch

    if not sources:
        return {}
    waves = []
    for source, grid in zip(sources, grids):
        wave = load_waveform(source, audio.sampling_rate, f"audio {source}")
        if int(wave.shape[0]) != int(grid[0]):
            raise DataError(f"audio {source}: it now has {wave.shape[0]} samples but the tokenized rows expect"
                            f" {grid[0]}; the file changed since the data was cached: delete the data cache"
                            " (data.cache_dir) and rerun")
        waves.append(wave)
    hop = audio.feature_extractor.hop_length
    length = {} if pad_to_chunk else {"max_length": (max(len(w) for w in waves) // hop + 10) * hop}
    out = audio.feature_extractor(waves, sampling_rate=audio.sampling_rate, return_attention_mask=True,
                                  padding="max_length", return_tensors="np", **length)
    mask = torch.from_numpy(np.asarray(out["attention_mask"])).long()
    expected = [int(g[1]) for g in grids]
    if mask.sum(-1).tolist() != expected:
        raise DataError(f"audios {sources}: the feature extractor made {mask.sum(-1).tolist()} frames but the"
                        f" tokenized rows expect {expected}; delete the data cache (data.cache_dir) and rerun")
    return {"input_features": torch.from_numpy(np.asarray(out["input_features"])).float(),
            "feature_attention_mask": mask}
