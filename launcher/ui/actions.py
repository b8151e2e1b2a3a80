"""What the Compose tab's buttons do, as calls into the launch path the CLI uses (no Gradio here).

Preview = ``launcher train --dry-run``: ``launcher.launch.plan.plan_run`` (compose, preflight with every
problem on its own line, the sbatch script and per-node torchrun command or the local command, or a sweep's
points and arrays) plus the equivalent ``launcher train ...`` command. Submit = ``launcher train``:
``launcher.launch.run.launch_run`` on the same plan, SLURM returning once queued, a local run or sweep
started detached (``launcher.launch.detached``).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from launcher.errors import LauncherError, PreflightError
from launcher.ui.i18n import Note


HYDRA_LOCK = threading.RLock()
"""Hydra's GlobalHydra is one per process and the page's handlers run in threads: one compose at a time."""


def one_at_a_time(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with HYDRA_LOCK:
            return fn(*args, **kwargs)

    return locked


@dataclass
class Preview:
    ok: bool
    """Compose and preflight passed: Submit would queue this."""
    error: str = ""
    """The one-line config message, or the preflight's refusal (one problem per line)."""
    config_yaml: str = ""
    plan: str = ""
    """sbatch script + torchrun command (SLURM), the local command, or the sweep's points and arrays."""
    verdict: list = field(default_factory=list)
    """Preflight: "passed" and warnings (Notes, worded by the page), or one line per problem (the CLI's text)."""
    command: str = ""
    """The equivalent CLI command."""
    precision: str = ""
    """What the run will really compute in (``checks.model.describe_precision``: the dry run's line)."""


@one_at_a_time
def is_sweep(overrides: Sequence[str]) -> bool:
    """A grid when any value override lists several values (``a=1,2``) or uses a sweep function."""
    from launcher.sweep.expand import expand_grid

    try:
        return len(expand_grid(list(overrides)).points) > 1
    except LauncherError:
        return False


def preflight_lines(exc: PreflightError) -> list:
    """The refusal as one problem per line (the CLI prints the same text, indented with ``-``)."""
    lines = str(exc).splitlines()
    if len(lines) == 1:
        return [lines[0].replace("preflight refused the run: ", "", 1)]
    return [line.strip()[2:] if line.strip().startswith("- ") else line.strip() for line in lines[1:]]


def secret_values(overrides: Sequence[str]) -> dict:
    """{value: NAME} of secrets typed as overrides (``cluster.env.WANDB_API_KEY=...``; the preflight refuses
    them) and of the secret environment variables this process has."""
    from launcher import secret_env

    found = {}
    for item in overrides:
        key, _, value = item.partition("=")
        name = key.rsplit(".", 1)[-1].upper()
        if secret_env.is_secret_name(name) and len(value.strip("'\"")) >= 4:
            found[value.strip("'\"")] = name
    found.update(secret_env.secret_values())
    return found


def redact(text: str, overrides: Sequence[str]) -> str:
    for value, name in secret_values(overrides).items():
        text = text.replace(value, f"<{name}>")
    return text


def hide_secrets(result: "Preview", overrides: Sequence[str]) -> "Preview":
    """Every text the page shows with secret values replaced by ``<NAME>``: never shown, not even back to
    the one who typed them (a screen is shared, recorded, screenshotted)."""
    def hide(text):
        if isinstance(text, Note):
            return Note(text.name, **{k: hide(v) for k, v in text.params.items()})
        return redact(text, overrides) if isinstance(text, str) else text

    result.error, result.config_yaml, result.plan = hide(result.error), hide(result.config_yaml), hide(result.plan)
    result.command, result.verdict = hide(result.command), [hide(v) for v in result.verdict]
    return result


def preview(overrides: Sequence[str], name: Optional[str] = None) -> Preview:
    """``launcher train [-m] OVERRIDES --dry-run``, as data for the page (secret values hidden)."""
    return hide_secrets(_preview(overrides, name), overrides)


@one_at_a_time
def _preview(overrides: Sequence[str], name: Optional[str] = None) -> Preview:
    from launcher.launch.plan import plan_run
    from launcher.ui.form import train_command

    overrides = list(overrides)
    sweep = is_sweep(overrides)
    command = train_command(overrides, name, sweep=sweep)
    try:
        plan = plan_run(overrides, name, sweep=sweep)
    except LauncherError as exc:
        if not sweep:
            return Preview(ok=False, error=str(exc), command=command)
        lines = str(exc).splitlines()
        return Preview(ok=False, error=lines[0], verdict=[line.strip() for line in lines], command=command)
    result = Preview(ok=True, config_yaml=plan.config_yaml(), plan=plan.would_run, command=command)
    if plan.sweep is None:
        from launcher.checks.model import describe_precision

        result.precision = describe_precision(plan.cfg)
    if sweep:
        result.verdict = [Note("verdict_passed_sweep")] + [f"warning: {w}" for w in plan.warnings]
    elif plan.refusal is not None:
        result.ok = False
        result.verdict = preflight_lines(plan.refusal)
        result.error = str(plan.refusal).splitlines()[0]
    else:
        result.verdict = [Note("verdict_passed")] + [Note("verdict_warning", detail=w) for w in plan.warnings]
    if plan.render_error is not None:
        result.ok = False
        result.error = result.error or str(plan.render_error)
        result.verdict.append(str(plan.render_error))
    return result


@dataclass
class Submitted:
    run_dir: Path
    """The run dir, or the sweep dir."""
    note: Note
    """What was done, for the page to word in its language."""
    job_id: str = ""

    @property
    def message(self) -> str:
        return str(self.note)


@one_at_a_time
def submit(overrides: Sequence[str], name: Optional[str] = None) -> Submitted:
    """``launcher train [-m] OVERRIDES``: refuse before anything is written, else queue or start; return at once.

    Raises LauncherError (ConfigError, PreflightError, SubmitError) with the message the CLI would print; a
    submission SLURM refused leaves no run dir behind.
    """
    from launcher.launch.plan import plan_run
    from launcher.launch.run import launch_run

    overrides = list(overrides)
    plan = plan_run(overrides, name, sweep=is_sweep(overrides))
    done = launch_run(plan, detach=True, quiet=True)
    slurm = plan.cfg.cluster.kind == "slurm"
    if plan.sweep is not None:
        points = len(plan.sweep.points)
        if slurm:
            return Submitted(done.run_dir, Note("submitted_sweep", points=points, arrays=done.job_id.replace(",", ", "),
                                                sweep_dir=done.run_dir), done.job_id.replace(",", ", "))
        return Submitted(done.run_dir, Note("started_local_sweep", points=points, pid=done.pid, sweep_dir=done.run_dir))
    if slurm:
        return Submitted(done.run_dir, Note("submitted_slurm", job_id=done.job_id, run_dir=done.run_dir), done.job_id)
    return Submitted(done.run_dir, Note("started_local", pid=done.pid, run_dir=done.run_dir))


# ------------------------------------------------------------------------------------------ data preview

PREVIEW_IMAGE_PX = 384
"""Longest side of an image as the preview shows it (the page needs a glance, not the pixels)."""


@dataclass
class DataPreview:
    samples: list
    """``launcher.data.cli.PreviewSample`` of the first rows."""
    stats: dict
    images: list = field(default_factory=list)
    """[(PIL image or None, Note caption)] for every image of the samples shown, in order."""
    videos: list = field(default_factory=list)
    """[(PIL strip of sampled frames or None, Note caption)] for every video of the samples shown."""
    audios: list = field(default_factory=list)
    """[(path of a WAV the page may play, or None, Note caption)] for every audio of the samples shown."""


def image_file(dataset_dir: Path, name: str) -> Path:
    """An image a row names (absolute, or relative to the dataset dir), refused outside the dataset dir."""
    from launcher.errors import DataError

    root = Path(dataset_dir).resolve()
    path = (root / name).resolve()  # an absolute name stays absolute
    if root not in path.parents:
        raise DataError(f"{name}: not under the dataset dir {root}; the preview shows only the dataset's own files")
    if not path.is_file():
        raise DataError(f"{name}: no such file under {root}")
    return path


def load_preview_image(path: Path) -> tuple:
    """(the image made small, its own "WxH"): a page holds a few of them, not their full pixels."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        small = image.convert("RGB")
    size = f"{small.width}x{small.height}"
    small.thumbnail((PREVIEW_IMAGE_PX, PREVIEW_IMAGE_PX))
    return small, size


def data_preview(overrides: Sequence[str], n: int = 3) -> DataPreview:
    """``launcher data preview OVERRIDES -n N`` as data for the page, plus each sample's images from the raw
    files. ConfigError/DataError as the CLI would print them."""
    from launcher.data import resolve_dataset_dir
    from launcher.data.cli import preview_config

    with HYDRA_LOCK:  # only the compose: tokenizing may take a while and needs no Hydra
        from launcher.config.compose import compose_config

        cfg = compose_config(list(overrides))
    samples, stats = preview_config(cfg, n)
    dataset_dir = resolve_dataset_dir(cfg.data)
    return DataPreview(samples, stats, preview_images(samples, dataset_dir),
                       preview_videos(samples, dataset_dir, cfg), preview_audios(samples, dataset_dir))


def preview_images(samples: list, dataset_dir: Path) -> list:
    """[(small PIL image or None, caption Note)] for each image of each sample, read from the raw files."""
    out = []
    for sample in samples:
        for k, name in enumerate(sample.images):
            try:
                image, size = load_preview_image(image_file(dataset_dir, name))
            except (LauncherError, OSError) as exc:
                out.append((None, Note("data_image_missing", index=sample.index, k=k, detail=str(exc))))
                continue
            if k < len(sample.image_tokens):
                note = Note("data_image_caption", index=sample.index, k=k, tokens=sample.image_tokens[k], size=size)
            else:
                note = Note("data_image_caption_unknown", index=sample.index, k=k, size=size)
            out.append((image, note))
    return out


PREVIEW_FRAME_PX = 96
"""Height of one frame in a video's strip."""
PREVIEW_STRIP_FRAMES = 8
"""Frames a strip shows at most, spread over the sampled ones (a 20-frame video would be a 2,000 px strip)."""


def video_source(dataset_dir: Path, name: str) -> str:
    """A video a row names (a file, a frame folder, or frame paths joined by newlines), every path of it under
    the dataset dir (``image_file``'s rule); the source as the data code reads it."""
    from launcher.data.video import FRAME_LIST_SEPARATOR
    from launcher.errors import DataError

    if FRAME_LIST_SEPARATOR in name:
        return FRAME_LIST_SEPARATOR.join(str(image_file(dataset_dir, frame)) for frame in name.split(FRAME_LIST_SEPARATOR))
    root = Path(dataset_dir).resolve()
    path = (root / name).resolve()
    if path.is_dir():
        if root not in path.parents:
            raise DataError(f"{name}: not under the dataset dir {root}; the preview shows only the dataset's own files")
        return str(path)
    return str(image_file(dataset_dir, name))


def frame_strip(plan) -> "object":
    """The plan's sampled frames (the ones training decodes), at most PREVIEW_STRIP_FRAMES spread evenly, each
    PREVIEW_FRAME_PX high, side by side in one small image."""
    from PIL import Image

    from launcher.data.video import decode_frames

    frames = decode_frames(plan, "preview")[: len(plan.frames)]  # without the temporal patch's repeated frame
    step = max(1, -(-len(frames) // PREVIEW_STRIP_FRAMES))
    shown = []
    for frame in frames[::step][:PREVIEW_STRIP_FRAMES]:
        small = frame.convert("RGB")
        small.thumbnail((PREVIEW_FRAME_PX * 4, PREVIEW_FRAME_PX))
        shown.append(small)
    strip = Image.new("RGB", (sum(f.width for f in shown) + 4 * (len(shown) - 1), PREVIEW_FRAME_PX), (255, 255, 255))
    x = 0
    for small in shown:
        strip.paste(small, (x, (PREVIEW_FRAME_PX - small.height) // 2))
        x += small.width + 4
    return strip, len(shown)


def stack_strips(strips: list) -> "object":
    """The strips one under the other (row k is video k of the captions), on white."""
    from PIL import Image

    gap = 8
    out = Image.new("RGB", (max(s.width for s in strips), sum(s.height for s in strips) + gap * (len(strips) - 1)),
                    (255, 255, 255))
    y = 0
    for strip in strips:
        out.paste(strip, (0, y))
        y += strip.height + gap
    return out


def preview_videos(samples: list, dataset_dir: Path, cfg) -> list:
    """[(strip of sampled frames or None, caption Note)] for each video of each sample: the frames, frame count
    and video tokens ``launcher data preview`` prints."""
    from launcher.data import video_settings
    from launcher.data.video import plan_video
    from launcher.errors import DataError
    from launcher.models.vision import vision_info

    if not any(sample.videos for sample in samples):
        return []
    info = vision_info(cfg.model)
    out = []
    for sample in samples:
        for k, name in enumerate(sample.videos):
            label = name.splitlines()[0] + (" ..." if "\n" in name else "")
            try:
                if info is None:
                    raise DataError(f"{label}: {cfg.model.name} has no vision tower, so it takes no video")
                settings = video_settings(cfg, info)
                plan = plan_video(video_source(dataset_dir, name), settings, f"video {label}")
                strip, shown = frame_strip(plan)
            except (LauncherError, OSError) as exc:
                out.append((None, Note("data_video_missing", index=sample.index, k=k, detail=str(exc))))
                continue
            spans = sample.video_spans[k] if k < len(sample.video_spans) else []
            frames = sample.video_frames[k] if k < len(sample.video_frames) else None
            of = frames["of"] if frames and frames.get("of") else len(plan.frames)
            sampled = len(plan.frames) + len(plan.frames) % 2  # as the CLI counts: the temporal patch's copy too
            out.append((strip, Note("data_video_caption", index=sample.index, k=k, sampled=sampled,
                                    of=of, shown=shown, tokens=sum(s["video_tokens"] for s in spans)
                                    or plan.token_count(settings.merge_size),
                                    grid="x".join(map(str, plan.grid)),
                                    size=f"{plan.frame_size[0]}x{plan.frame_size[1]}")))
    return out


PREVIEW_AUDIO_DIR = "preview-audio"
"""Under Gradio's upload folder (the page's own, which Gradio serves): the preview's audio, as the model hears it."""


def playable_audio(path: Path, max_seconds: float = 30.0) -> tuple:
    """(a WAV of what the model hears: mono, 16 kHz, at most ``max_seconds``, written under the upload folder,
    which the page may serve, its name the content's hash; its seconds). A dataset file is never served itself."""
    import hashlib
    import wave

    import numpy as np

    from launcher.data.audio import LF_AUDIO_SAMPLING_RATE, load_waveform
    from launcher.ui.roots import upload_folder

    wave_f32 = load_waveform(str(path), LF_AUDIO_SAMPLING_RATE, f"audio {path}")[: int(max_seconds * LF_AUDIO_SAMPLING_RATE)]
    pcm = (np.clip(wave_f32, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    target = upload_folder() / PREVIEW_AUDIO_DIR / f"{hashlib.sha256(pcm).hexdigest()[:16]}.wav"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(target), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(LF_AUDIO_SAMPLING_RATE)
            out.writeframes(pcm)
    return target, len(wave_f32) / LF_AUDIO_SAMPLING_RATE


def preview_audios(samples: list, dataset_dir: Path) -> list:
    """[(WAV path or None, caption Note)] for each audio of each sample: its seconds, feature frames and audio
    tokens (from the tokenized rows, as ``launcher data preview`` prints them)."""
    out = []
    for sample in samples:
        for k, name in enumerate(sample.audios):
            try:
                path, seconds = playable_audio(image_file(dataset_dir, name))
            except (LauncherError, OSError) as exc:
                out.append((None, Note("data_audio_missing", index=sample.index, k=k, detail=str(exc))))
                continue
            samples_16k, frames, tokens = sample.audio_grids[k] if k < len(sample.audio_grids) else (None, "?", "?")
            seconds = samples_16k / 16000 if isinstance(samples_16k, int) else seconds
            out.append((str(path), Note("data_audio_caption", index=sample.index, k=k, seconds=f"{seconds:.2f}",
                                        frames=frames, tokens=tokens, file=Path(name).name)))
    return out


# ------------------------------------------------------------------------------------------ resume


def resume_overrides(run_dir: Path, checkpoint: Optional[str] = None) -> list:
    """The overrides a stopped or failed run was launched with (its ``overrides.txt``), with
    ``run.resume=<its checkpoint>``: ``launcher train <those> run.resume=RUN_DIR/checkpoints/step-N`` starts a
    new run dir from that checkpoint (the latest when ``checkpoint`` is None). LauncherError when it has none."""
    from launcher.errors import ConfigError
    from launcher.ui.after import checkpoints

    run_dir = Path(run_dir)
    saved = run_dir / "overrides.txt"
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: no overrides.txt (not started by launcher train): resume it from where it was started")
    found = checkpoints(run_dir)
    if not found:
        raise ConfigError(f"{run_dir}: no checkpoint to resume from (train.save_every was 0, or it stopped before the first save)")
    chosen = checkpoint or found[0]
    if chosen not in found:
        raise ConfigError(f"{run_dir}: no checkpoint {chosen} (it has {', '.join(found)})")
    kept = [o for o in saved.read_text().splitlines() if o.strip() and not o.startswith("run.resume=")]
    return kept + [f"run.resume={run_dir / 'checkpoints' / chosen}"]


def resume(run_dir: Path, root: Path, checkpoint: Optional[str] = None) -> Submitted:
    """Submit the run again from its latest (or chosen) checkpoint, to the same output root."""
    overrides = [o for o in resume_overrides(run_dir, checkpoint) if not o.startswith("run.output_root=")]
    return submit(overrides + [f"run.output_root={root}"], Path(run_dir).parent.parent.name)
