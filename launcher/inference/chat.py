"""``launcher chat RUN_DIR``: talk to the trained model (or its base, ``--base``) in the terminal.

Multi-turn, streamed, with a system prompt. Reads lines from standard input, so a piped file is a scripted
conversation. Commands: /reset (forget the conversation), /system TEXT (new system prompt, and reset),
/image PATH (VL models: attach a picture to the next message; ``--image PATH`` attaches one to the first),
/video PATH (likewise a video: a file or a folder of frames; ``--video PATH``),
/audio PATH (audio models: an audio file; ``--audio PATH``),
/history, /help, /exit (or /quit, or end of input). Every turn is appended to a JSONL log
(default RUN_DIR/chat/<time>.jsonl) with the exact prompt the model saw.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Optional, TextIO

HELP = "commands: /reset  /system TEXT  /image PATH  /video PATH  /audio PATH  /history  /help  /exit"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--base", action="store_true", help="chat with the base model the run started from")
    parser.add_argument("--image", action="append", default=[], help="VL models: a picture for the first message"
                        " (repeatable)")
    parser.add_argument("--video", action="append", default=[], help="VL models: a video (file or frame folder)"
                        " for the first message (repeatable)")
    parser.add_argument("--audio", action="append", default=[], help="audio models (Qwen2-Audio): an audio file"
                        " for the first message (repeatable)")
    parser.add_argument("--checkpoint", default=None, help="chat with checkpoint step-N instead of the final model")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.95)
    parser.add_argument("--top-p", type=float, default=0.7)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--debug-prompt", action="store_true", help="print each rendered prompt to stderr")
    parser.add_argument("--log", default=None, help="conversation log (JSONL); default RUN_DIR/chat/<time>.jsonl")
    parser.add_argument("--no-log", action="store_true", help="write no conversation log")
    parser.add_argument("--from-llamafactory", metavar="FILE.yaml", default=None,
                        help="a LLaMA-Factory inference (llamafactory-cli chat) file: translated to these arguments; the equivalent command is"
                             " printed")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    return parser


class TurnLog:
    def __init__(self, path: Optional[Path]):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        record = {"time": _dt.datetime.now().isoformat(timespec="seconds"), **record}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_line(interactive: bool, stdin: TextIO) -> Optional[str]:
    if interactive:
        try:
            return input("User: ")
        except EOFError:
            return None
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def chat_loop(session, log: TurnLog, stdin: TextIO, stdout: TextIO, stderr: TextIO, debug_prompt: bool) -> int:
    interactive = stdin.isatty()
    turns = 0
    while True:
        line = read_line(interactive, stdin)
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if not interactive:
            stdout.write(f"User: {text}\n")  # a piped conversation reads as a transcript
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command in ("/exit", "/quit"):
                break
            if command == "/reset":
                session.reset()
                log.write({"event": "reset"})
                stdout.write("(conversation cleared)\n")
            elif command == "/system":
                session.reset(system=rest.strip() or None, keep_system=False)
                log.write({"event": "system", "system": session.system})
                stdout.write(f"(system prompt {'set' if session.system else 'cleared'}; conversation cleared)\n")
            elif command in ("/image", "/video", "/audio"):
                from launcher.errors import LauncherError

                kind = command[1:]
                attach = {"image": session.attach, "video": session.attach_video, "audio": session.attach_audio}[kind]
                try:
                    attach(rest.strip())
                    stdout.write(f"({kind} {rest.strip()} attached to your next message)\n")
                except LauncherError as exc:
                    stdout.write(f"error: {exc}\n")
            elif command == "/history":
                stdout.write(json.dumps(session.messages(), ensure_ascii=False, indent=1) + "\n")
            elif command == "/help":
                stdout.write(HELP + "\n")
            else:
                stdout.write(f"unknown command {command}; {HELP}\n")
            stdout.flush()
            continue
        if debug_prompt:
            stderr.write(f"--- prompt ---\n{session.prompt_for(text)}\n--- end prompt ---\n")
            stderr.flush()
        stdout.write("Assistant: ")
        stdout.flush()
        try:
            answer, prompt = session.reply(text, out=stdout)
        except KeyboardInterrupt:
            stdout.write("\n(interrupted; this turn is dropped)\n")
            continue
        stdout.write("\n")
        stdout.flush()
        turns += 1
        log.write({"event": "turn", "turn": turns, "user": text, "assistant": answer, "prompt": prompt})
    return turns


def chat_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from launcher.errors import ConfigError
    from launcher.inference.chat_session import ChatSession, GenerationOptions
    from launcher.inference.prompts import prompt_renderer
    from launcher.engines.distributed import choose_device
    from launcher.engines.precision import requested_dtype
    from launcher.inference.trained import load_run_model

    if args.base and args.checkpoint:
        raise ConfigError("--base and --checkpoint: pick one")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens: must be >= 1, got {args.max_new_tokens}")
    device = choose_device()
    model, tokenizer, cfg, source = load_run_model(Path(args.run_dir), checkpoint=args.checkpoint, merge=True,
                                                   base=args.base, device=device)
    dtype = requested_dtype(args.dtype, device)
    if dtype != torch.float32:
        model.to(dtype)
    from launcher.data import vision_data

    from launcher.data import audio_data

    vision, _ = vision_data(cfg, tokenizer)
    audio, _ = audio_data(cfg, tokenizer)
    session = ChatSession(model, tokenizer, prompt_renderer(tokenizer, cfg), device,
                          GenerationOptions(args.max_new_tokens, args.do_sample, args.temperature, args.top_p),
                          system=args.system, vision=vision, audio=audio)
    for path in args.image:
        session.attach(path)
    for path in args.video:
        session.attach_video(path)
    for path in args.audio:
        session.attach_audio(path)
    log_path = None
    if not args.no_log:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        log_path = Path(args.log) if args.log else Path(args.run_dir) / "chat" / f"{stamp}.jsonl"
    log = TurnLog(log_path)
    log.write({"event": "start", "model": source, "run_dir": str(args.run_dir), "system": args.system,
               "options": vars(args)})
    print(f"chatting with the {source} of {args.run_dir} on {device}. {HELP}", file=sys.stderr, flush=True)
    turns = chat_loop(session, log, sys.stdin, sys.stdout, sys.stderr, args.debug_prompt)
    if log_path is not None:
        print(f"{turns} turns; log: {log_path}", file=sys.stderr)
    return 0
