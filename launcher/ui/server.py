"""``launcher ui [--host 127.0.0.1] [--port 7860] [--root OUTPUT_ROOT] [--data-root DIR]... [--token TOKEN]``.

Binds to 127.0.0.1 unless told otherwise; any other address needs a login (Gradio's auth, user ``launcher``
and the token) and is refused without one, before anything is started. The token is best passed in
``LAUNCHER_UI_TOKEN`` (a command-line argument is visible to every user of the host in ``ps``). With a login,
nothing but the login page is served before it, and wrong passwords are throttled per client
(``launcher.ui.login_gate``). Handlers open files only under the UI's roots (``launcher.ui.roots``): the data
folders of conf/data and each ``--data-root``, the output root, and the upload folder (a private temp folder
unless GRADIO_TEMP_DIR is set).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from launcher.errors import ConfigError
from launcher.network import is_loopback

TOKEN_ENV = "LAUNCHER_UI_TOKEN"
USER = "launcher"


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse a reachable address without a login: anyone who can reach the port could submit jobs."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host}: the UI would be reachable from other machines without a login; set {TOKEN_ENV}"
            f" (or --token) to require one, or keep --host 127.0.0.1 and tunnel: ssh -L 7860:127.0.0.1:7860 HOST")
    if token is not None and len(token) < 8:
        raise ConfigError("--token: use at least 8 characters")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--root", default=None,
                        help="output root whose runs the UI shows and where it launches (default: run.output_root"
                             " of conf/train.yaml, relative to the current folder)")
    parser.add_argument("--data-root", action="append", default=[], metavar="DIR",
                        help="a folder whose datasets the page may preview and train on, besides the data folders"
                             " of conf/data (repeatable)")
    parser.add_argument("--max-upload-mb", type=float, default=256,
                        help="largest file a browser may upload (chat images, videos, audio; default 256 MB)")
    parser.add_argument("--token", default=None, help=f"login password (user '{USER}'); better: set {TOKEN_ENV}")
    return parser


def private_upload_folder() -> str:
    """GRADIO_TEMP_DIR unless set: a folder only this user can read (Gradio's default, /tmp/gradio, is shared
    by every Gradio app and user of the host)."""
    import tempfile

    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="launcher-ui-uploads-")  # mode 0700
    return os.environ["GRADIO_TEMP_DIR"]


def patient_url_ok(url: str, within_s: float = 120.0) -> bool:
    """Gradio's start-up check that its own page answers, with patience: Gradio's (``networking.url_ok``) gives
    up at the first 3 s timeout, and then ``launch`` refuses to start without a public share link; a busy
    login node (load 25 on 2 cores, seen here) can take longer than that to answer its first request."""
    import time

    import httpx

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=10, verify=False).status_code in (200, 401, 301, 302, 303, 307, 308):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def default_root() -> Path:
    from launcher.config.compose import compose_dict

    return Path(compose_dict([])["run"]["output_root"])


def ui_main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_bind(args.host, token)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: {args.port} is not a port number")
    root = Path(args.root or default_root()).resolve()
    for folder in args.data_root:
        if not Path(folder).is_dir():
            raise ConfigError(f"--data-root {folder}: no such folder")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    private_upload_folder()
    from launcher.ui.app import build_app

    app = build_app(root, data_roots=args.data_root)
    print(f"launcher ui: runs under {root}; http://{args.host}:{args.port}/"
          + (f" (login: user '{USER}')" if token else ""), flush=True)
    from gradio import networking
    from starlette.middleware import Middleware

    networking.url_ok = patient_url_ok

    from launcher.ui.login_gate import LoginGate

    app.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, auth=(USER, token) if token else None, share=False,
        # A bound on what a browser may send: Gradio's own default is no limit at all.
        max_file_size=int(args.max_upload_mb * 2**20),
        inbrowser=False, quiet=True, show_error=True, i18n=app.launcher_i18n, footer_links=["settings"],
        app_kwargs={"middleware": [Middleware(LoginGate)]},
    )
    return 0


if __name__ == "__main__":
    sys.exit(ui_main())
