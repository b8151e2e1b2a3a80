"""Chat, export and predict for a finished run: the same functions ``launcher chat|export|predict`` call.

Chat: ``load_run_model`` (trained or base model), a ``ChatSession`` built per reply from the conversation the
page holds (its turns and, for a VL model, its images; several tabs can chat with one loaded model), its
streamer feeding a queue that the page reads piece by piece. Loaded models are kept (a few) so that each turn
does not reload. An uploaded image, video or audio clip is copied into RUN_DIR/chat/images|videos|audios/
and attached to the turn (``ChatSession.attach`` / ``attach_video`` / ``attach_audio``, as ``launcher chat``'s
/image, /video and /audio do); a run whose model does not take it refuses it.
"""
from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

if TYPE_CHECKING:
    from launcher.ui.i18n import Note

MAX_LOADED = 4
_models: "OrderedDict[tuple, tuple]" = OrderedDict()
_lock = threading.Lock()


def load(run_dir: Path, base: bool = False, checkpoint: Optional[str] = None) -> tuple:
    """(model, tokenizer, cfg, source, device, vision, audio), cached by (run dir, base, checkpoint); vision is
    None but for a VL model, audio None but for an audio model. ``checkpoint``: ``step-N`` of the run's
    checkpoints (None: the final model)."""
    from launcher.engines.distributed import choose_device
    from launcher.inference.trained import load_run_model

    checkpoint = None if base else (checkpoint or None)
    key = (str(Path(run_dir).resolve()), base, checkpoint)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        device = choose_device()
        model, tokenizer, cfg, source = load_run_model(Path(run_dir), merge=True, base=base, device=device,
                                                       checkpoint=checkpoint)
        _models[key] = (model, tokenizer, cfg, source, device, vision_for(cfg, tokenizer), audio_for(cfg, tokenizer))
        while len(_models) > MAX_LOADED:
            _models.popitem(last=False)
        return _models[key]


def vision_for(cfg, tokenizer):
    """The VisionData ``launcher chat`` gives a ChatSession for a VL model; None for a text model, or where
    this build has no VL support (``launcher.data.vision_data`` comes with the VL port)."""
    try:
        from launcher.data import vision_data
    except ImportError:
        return None
    return vision_data(cfg, tokenizer)[0]


def audio_for(cfg, tokenizer):
    """The AudioData ``launcher chat`` gives a ChatSession for an audio model; None for others."""
    from launcher.data import audio_data

    return audio_data(cfg, tokenizer)[0]


MEDIA = ("image", "video", "audio")
"""What a chat turn may carry besides its text."""


def run_takes(run_dir: Path) -> set:
    """The media a run's model takes, from its config alone (no model loaded): image and video for a VL model,
    audio for an audio model, nothing for a text model."""
    from launcher.config.schema import load_run_config
    from launcher.models.audio import audio_info

    model = load_run_config(Path(run_dir)).model
    takes = {"image", "video"} if run_sees_images(run_dir) else set()
    return takes | ({"audio"} if audio_info(model) is not None else set())


def keep_upload(run_dir: Path, upload: str, kind: str) -> str:
    """An uploaded video or audio clip copied to RUN_DIR/chat/videos|audios/ under its content hash (Gradio's
    upload folder is a cache; the chat log names this copy). Whether it decodes is the session's check
    (``attach_video`` / ``attach_audio``), made before the model is asked."""
    import hashlib
    import shutil

    if kind == "image":
        return keep_image(run_dir, upload)
    digest = hashlib.sha256(Path(upload).read_bytes()).hexdigest()[:16]
    target = Path(run_dir) / "chat" / f"{kind}s" / f"{digest}{Path(upload).suffix.lower()}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upload, target)
    return str(target)


def run_sees_images(run_dir: Path) -> bool:
    """Whether a run's model has a vision tower, from its config alone (no model loaded)."""
    from launcher.config.schema import load_run_config

    try:
        from launcher.models.vision import vision_info
    except ImportError:  # no VL support in this build: every model is a text model
        return False
    return vision_info(load_run_config(Path(run_dir)).model) is not None


def keep_image(run_dir: Path, upload: str) -> str:
    """An uploaded image, checked to be one and copied to RUN_DIR/chat/images/ under its content hash (Gradio's
    upload folder is a cache; the chat log names this copy). DataError when it is not a readable image."""
    import hashlib
    import shutil

    from PIL import Image, UnidentifiedImageError

    from launcher.errors import DataError

    try:
        with Image.open(upload) as image:
            image.verify()
            kind = (image.format or "png").lower()
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{Path(upload).name}: {exc}") from None
    digest = hashlib.sha256(Path(upload).read_bytes()).hexdigest()[:16]
    target = Path(run_dir) / "chat" / "images" / f"{digest}.{kind}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upload, target)
    return str(target)


class _QueueWriter:
    """A text stream whose writes go to a queue (ChatSession's streamer writes to a TextIO)."""

    def __init__(self, q: "queue.Queue"):
        self.q = q

    def write(self, text: str) -> int:
        self.q.put(text)
        return len(text)

    def flush(self) -> None:
        pass


def new_conversation() -> dict:
    """What the page keeps of one model's conversation: the session's turns (with their ``<image>``,
    ``<video>`` and ``<audio>`` placeholders) and its media, each in placeholder order."""
    return {"turns": [], "images": [], "videos": [], "audios": []}


def stream_reply(run_dir: Path, conversation: dict, user_text: str, system: Optional[str], base: bool = False,
                 image: Optional[str] = None, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, checkpoint: Optional[str] = None, video: Optional[str] = None,
                 audio: Optional[str] = None) -> Iterator[str]:
    """Yield the growing answer to ``user_text`` (with ``image`` / ``video`` attached for a VL model, ``audio``
    for an audio model) after the ``conversation`` so far; once answered, ``conversation`` holds the
    session's turns and media. DataError, before the model is asked, for a file the session cannot read."""
    from launcher.inference.chat_session import ChatSession, GenerationOptions
    from launcher.inference.prompts import prompt_renderer

    model, tokenizer, cfg, _, device, vision, audio_data = load(run_dir, base, checkpoint)
    options = GenerationOptions(max_new_tokens=int(max_new_tokens), do_sample=bool(temperature and temperature > 0),
                                temperature=float(temperature or 1.0), top_p=float(top_p or 1.0))
    session = ChatSession(model, tokenizer, prompt_renderer(tokenizer, cfg), device, options,
                          system=system or None, vision=vision, audio=audio_data)
    session.history = [dict(m) for m in conversation["turns"]]
    session.images = list(conversation.get("images", []))
    session.videos = list(conversation.get("videos", []))
    session.audios = list(conversation.get("audios", []))
    if image:
        session.attach(image)
    if video:
        session.attach_video(video)
    if audio:
        session.attach_audio(audio)
    pieces: "queue.Queue" = queue.Queue()
    done = object()
    result: dict = {}

    def work() -> None:
        try:
            result["answer"], result["prompt"] = session.reply(user_text, out=_QueueWriter(pieces))
        except Exception as exc:  # shown in the page, not lost in a thread
            result["error"] = exc
        finally:
            pieces.put(done)

    threading.Thread(target=work, daemon=True).start()
    text = ""
    while True:
        piece = pieces.get()
        if piece is done:
            break
        text += piece
        yield text
    if "error" in result:
        raise result["error"]
    conversation["turns"] = session.history
    conversation.update(images=list(session.images), videos=list(session.videos), audios=list(session.audios))
    log_turn(run_dir, base, system, user_text, result["answer"], result["prompt"], [image] if image else [],
             [video] if video else [], [audio] if audio else [])
    yield result["answer"]  # the cleaned answer (end-of-turn cut), as the history keeps it


def chat_log_path(run_dir: Path) -> Path:
    """The UI's turns of a day, beside ``launcher chat``'s logs (RUN_DIR/chat/)."""
    import datetime as _dt

    return Path(run_dir) / "chat" / f"ui-{_dt.date.today():%Y%m%d}.jsonl"


def log_turn(run_dir: Path, base: bool, system: Optional[str], user: str, answer: str, prompt: str,
             images: list = (), videos: list = (), audios: list = ()) -> None:
    from launcher.inference.chat import TurnLog

    TurnLog(chat_log_path(run_dir)).write({"event": "turn", "source": "ui", "model": "base" if base else "trained",
                                           "system": system or None, "user": user, "images": list(images),
                                           "videos": list(videos), "audios": list(audios),
                                           "assistant": answer, "prompt": prompt})


def checkpoints(run_dir: Path) -> list:
    """The run's checkpoints by name (``step-N``), newest step first: what chat, evaluate, export and resume
    can pick besides the final model."""
    from launcher.paths import CHECKPOINTS_DIR

    found = [p.name for p in (Path(run_dir) / CHECKPOINTS_DIR).glob("step-*") if p.is_dir()]
    return sorted(found, key=lambda n: int(n.split("-", 1)[1]) if n.split("-", 1)[1].isdigit() else -1, reverse=True)


def export(run_dir: Path, out: Optional[str] = None, max_shard_size: str = "2GB", dtype: str = "keep",
           checkpoint: Optional[str] = None, force: bool = False) -> Note:
    """``launcher export RUN_DIR [--out DIR] [--max-shard-size S] [--dtype D] [--checkpoint step-N] [--force]``:
    refuses an existing target unless ``force``, as the CLI does. Returns a one-line report."""
    from launcher.export.hf import ExportArgs, export_run, exported_files
    from launcher.ui.i18n import Note

    out_dir = export_run(Path(run_dir), ExportArgs(out=out or None, max_shard_size=max_shard_size or "2GB",
                                                   dtype=dtype or "keep", checkpoint=checkpoint or None,
                                                   force=force))
    return Note("exported", out=out_dir, files=", ".join(exported_files(out_dir)))


def export_gguf(run_dir: Path, out: Optional[str] = None, dtype: str = "f16", checkpoint: Optional[str] = None,
                force: bool = False) -> Note:
    """``launcher export RUN_DIR --gguf`` (``launcher.export.gguf``): one .gguf file; refuses an existing one
    unless ``force``."""
    from launcher.export.gguf import GGUFArgs, export_gguf as write
    from launcher.ui.i18n import Note

    info = write(Path(run_dir), GGUFArgs(out=out or None, dtype=dtype or "f16", checkpoint=checkpoint or None,
                                         force=force))
    path = info.get("path") if isinstance(info, dict) else info
    return Note("exported_gguf", out=path, dtype=dtype)


def predict(run_dir: Path, limit: Optional[int] = None, max_new_tokens: int = 64, datasets: tuple = (),
            batch_size: int = 8, temperature: float = 0.0, top_p: float = 0.7,
            checkpoint: Optional[str] = None) -> dict:
    """``launcher predict RUN_DIR [--datasets ...] [--limit N] [--batch-size B] [--max-new-tokens M]
    [--do-sample --temperature T --top-p P] [--checkpoint step-N]`` on the run's eval data or the picked
    datasets; tqdm progress (the page tracks it)."""
    from launcher.config.schema import load_run_config
    from launcher.inference.predict import PredictArgs, run_predict
    from launcher.inference.trained import check_run_dir

    run_dir = check_run_dir(Path(run_dir))
    args = PredictArgs(limit=limit, max_new_tokens=int(max_new_tokens), datasets=list(datasets or []),
                       batch_size=int(batch_size), do_sample=bool(temperature and temperature > 0),
                       temperature=float(temperature or 0.95), top_p=float(top_p or 0.7),
                       checkpoint=checkpoint or None)
    return run_predict(load_run_config(run_dir), run_dir, args, progress=True)
