"""``launcher serve RUN_DIR|MODEL_DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--image-root DIR]``.

Binds to loopback unless told otherwise; any other address needs an API key (``--api-key`` or the
``LAUNCHER_API_KEY`` environment variable, which keeps it out of ``ps``), checked as
``Authorization: Bearer KEY`` on every /v1 route. A VL model reads images and videos from data URLs, and from
server paths only under the folders named with ``--image-root``; an audio model reads ``input_audio`` clips
(base64 wav or mp3). Requests are bounded in body size, time, prompt length (the model's context), image and
video frame pixels, video frames and audio length (launcher.serve.media). Prints one line when it is ready: what it serves, the engine
and device, the URL, the context length, and how long loading took.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from launcher.config.schema import TEXT_TEMPLATES
from launcher.errors import ConfigError
from launcher.network import is_loopback


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a run dir, an export (launcher export) or a local Hugging Face model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None, help="required key (default $LAUNCHER_API_KEY); needed off loopback")
    parser.add_argument("--model-name", default=None, help="the model id clients send (default: the run or folder name)")
    parser.add_argument("--checkpoint", default=None, help="serve checkpoint step-N of a run instead of its final model")
    parser.add_argument("--template", default=None,
                        choices=TEXT_TEMPLATES,
                        help="force a named chat template (default: the run's, else the tokenizer's)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-new-tokens", type=int, default=512, help="answer length when a request sets none")
    parser.add_argument("--max-queue", type=int, default=32, help="requests allowed to wait; more get 503")
    parser.add_argument("--image-root", action="append", default=[], metavar="DIR",
                        help="a folder whose images requests may name by path (repeatable; default: none, data URLs"
                             " only)")
    parser.add_argument("--max-body-mb", type=float, default=32, help="largest request body in MB (default 32)")
    parser.add_argument("--request-timeout", type=float, default=300,
                        help="seconds a request may take, queue and generation included (default 300)")
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000,
                        help="largest image decoded, width x height (default 40 million)")
    parser.add_argument("--max-video-frames", type=int, default=20_000,
                        help="most frames a request's video may have (default 20000; its frames are then sampled"
                             " as data.video_fps / video_maxlen say)")
    parser.add_argument("--context-length", type=int, default=None,
                        help="prompt + answer tokens allowed (default: the smallest the model declares; never past its"
                             " position embeddings)")
    parser.add_argument("--from-llamafactory", metavar="FILE.yaml", default=None,
                        help="a LLaMA-Factory inference (llamafactory-cli api) file: translated to these arguments; the equivalent command is"
                             " printed")
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"],
                        help="what generates: transformers in this process, or vLLM in its own venv (make vllm-env)")
    parser.add_argument("--vllm-kv-cache-gib", type=float, default=1.0,
                        help="--engine vllm: memory for its KV cache, GiB (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    return parser


def serve_main(argv: list[str]) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get("LAUNCHER_API_KEY") or None
    if not is_loopback(args.host) and not api_key:
        raise ConfigError(f"--host {args.host}: other machines could reach the model; pass --api-key KEY (or set"
                          " LAUNCHER_API_KEY), or bind to 127.0.0.1")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: {args.port} is not a TCP port (1-65535)")
    if args.max_new_tokens < 1 or args.max_queue < 1:
        raise ConfigError("--max-new-tokens and --max-queue must be >= 1")
    if not (args.max_body_mb > 0 and args.request_timeout > 0 and args.max_image_pixels > 0 and args.max_video_frames > 0
            and (args.context_length is None or args.context_length > 1)):
        raise ConfigError("--max-body-mb, --request-timeout, --max-image-pixels and --max-video-frames must be > 0,"
                          " --context-length > 1")
    if args.engine == "vllm":
        from launcher.inference.vllm_engine import missing_message, vllm_python

        if args.vllm_kv_cache_gib <= 0:
            raise ConfigError("--vllm-kv-cache-gib must be > 0")
        if vllm_python() is None:  # refused before the model loads
            raise ConfigError(missing_message("--engine vllm"))
    from launcher.serve.images import ImagePolicy
    from launcher.serve.limits import ServeLimits

    limits = ServeLimits(max_body_bytes=int(args.max_body_mb * (1 << 20)), request_timeout_s=args.request_timeout)
    images = ImagePolicy.build(args.image_root, limits.max_body_bytes, args.max_image_pixels, args.max_video_frames)

    import uvicorn

    from launcher.serve.app import create_app
    from launcher.serve.engine import TransformersEngine, load_for_serving, vllm_status

    loaded = load_for_serving(args.path, checkpoint=args.checkpoint, template=args.template, dtype=args.dtype,
                              name=args.model_name)
    if args.engine == "vllm":
        from launcher.serve.vllm_serving import VLLMServeEngine

        engine = VLLMServeEngine(loaded, args.max_new_tokens, images, args.context_length,
                                 kv_cache_gib=args.vllm_kv_cache_gib)
    else:
        engine = TransformersEngine(loaded, args.max_new_tokens, images, args.context_length)
    app = create_app(engine, loaded.name, api_key=api_key, max_queue=args.max_queue, limits=limits)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    auth = "API key required" if api_key else "no API key"
    roots = ", ".join(map(str, images.roots)) or "none (data URLs only)"
    print(f"serving '{loaded.name}' ({loaded.source}) on http://{args.host}:{args.port}/v1"
          f" | engine: {engine.name} on {engine.device} ({vllm_status()}) | {auth}"
          f" | context {engine.context} tokens ({engine.context_source})"
          + (f" | image and video paths under: {roots}" if engine.has_vision else "")
          + (" | audio: input_audio parts (wav, mp3)" if getattr(engine, "has_audio", False) else "")
          + f" | loaded in {time.perf_counter() - started:.1f} s", flush=True)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
