"""Chat, export and predict for a finished run: the same functions ``launcher chat|export|predict`` call.

Chat: ``load_run_model`` (trained or base model), a ``ChatSession`` built per reply from the page's history
(the page holds the conversation; several tabs can chat with one loaded model), its streamer feeding a queue
that the page reads piece by piece. Loaded models are kept (a few) so that each turn does not reload.
"""
from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Optional

MAX_LOADED = 4
_models: "OrderedDict[tuple, tuple]" = OrderedDict()
_lock = threading.Lock()


def load(run_dir: Path, base: bool = False) -> tuple:
    """(model, tokenizer, cfg, source, device), cached by (run dir, base)."""
    from launcher.engines.distributed import choose_device
    from launcher.models.trained import load_run_model

    key = (str(Path(run_dir).resolve()), base)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        device = choose_device()
        model, tokenizer, cfg, source = load_run_model(Path(run_dir), merge=True, base=base, device=device)
        _models[key] = (model, tokenizer, cfg, source, device)
        while len(_models) > MAX_LOADED:
            _models.popitem(last=False)
        return _models[key]


class _QueueWriter:
    """A text stream whose writes go to a queue (ChatSession's streamer writes to a TextIO)."""

    def __init__(self, q: "queue.Queue"):
        self.q = q

    def write(self, text: str) -> int:
        self.q.put(text)
        return len(text)

    def flush(self) -> None:
        pass


def stream_reply(run_dir: Path, history: list, user_text: str, system: Optional[str], base: bool = False,
                 max_new_tokens: int = 256) -> Iterator[str]:
    """Yield the growing answer to ``user_text`` after ``history`` ([{role, content}]), as it is generated."""
    from launcher.inference.chat_session import ChatSession, GenerationOptions
    from launcher.inference.prompts import prompt_renderer

    model, tokenizer, cfg, _, device = load(run_dir, base)
    session = ChatSession(model, tokenizer, prompt_renderer(tokenizer, cfg), device,
                          GenerationOptions(max_new_tokens=max_new_tokens), system=system or None)
    session.history = [{"role": m["role"], "content": m["content"]} for m in history
                       if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)]
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
    log_turn(run_dir, base, system, user_text, result["answer"], result["prompt"])
    yield result["answer"]  # the cleaned answer (end-of-turn cut), as the history keeps it


def chat_log_path(run_dir: Path) -> Path:
    """The UI's turns of a day, beside ``launcher chat``'s logs (RUN_DIR/chat/)."""
    import datetime as _dt

    return Path(run_dir) / "chat" / f"ui-{_dt.date.today():%Y%m%d}.jsonl"


def log_turn(run_dir: Path, base: bool, system: Optional[str], user: str, answer: str, prompt: str) -> None:
    from launcher.inference.chat import TurnLog

    TurnLog(chat_log_path(run_dir)).write({"event": "turn", "source": "ui", "model": "base" if base else "trained",
                                           "system": system or None, "user": user, "assistant": answer,
                                           "prompt": prompt})


def export(run_dir: Path) -> str:
    """``launcher export RUN_DIR --force`` (to RUN_DIR/export); returns a one-line report."""
    from launcher.inference.export import ExportArgs, export_run, exported_files

    out = export_run(Path(run_dir), ExportArgs(force=True))
    return f"exported: {out} ({', '.join(exported_files(out))})"


def predict(run_dir: Path, limit: Optional[int] = None, max_new_tokens: int = 64) -> dict:
    """``launcher predict RUN_DIR [--limit N]`` on the run's eval data; tqdm progress (the page tracks it)."""
    from launcher.config.schema import load_run_config
    from launcher.inference.predict import PredictArgs, run_predict
    from launcher.models.trained import check_run_dir

    run_dir = check_run_dir(Path(run_dir))
    args = PredictArgs(limit=limit, max_new_tokens=max_new_tokens)
    return run_predict(load_run_config(run_dir), run_dir, args, progress=True)
