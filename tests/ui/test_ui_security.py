"""The UI behind a login, through its real HTTP API and a real browser: nothing but the login page before a
login (no endpoint list, no app config), wrong passwords throttled per client without stalling the server,
and the data preview opening only files under the UI's roots, also those an uploaded dataset_info.json names.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.ui.conftest import free_port, start_ui, stop_ui, wait_for_page
from tests.ui.test_browser import expect, fill, textbox

TOKEN = "tok-" + uuid.uuid4().hex[:12]
PRIVATE_ROW = "TOPSECRET-ROW-5d1c"
REFUSAL = "is outside the folders this UI may open"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """(port, tmp): ``launcher ui`` with a token, an extra --data-root holding one dataset."""
    pytest.importorskip("gradio")
    tmp = tmp_path_factory.mktemp("ui-secured")
    data_root = tmp / "shared-data"
    data_root.mkdir()
    rows = [{"instruction": f"ALLOWED-ROW-{i}", "input": "", "output": "ok"} for i in range(3)]
    (data_root / "rows.json").write_text(json.dumps(rows))
    (data_root / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "rows.json"}}))
    private = tmp / "private"
    private.mkdir()
    (private / "notes.json").write_text(json.dumps([{"instruction": PRIVATE_ROW, "input": "", "output": "x"}] * 3))
    (private / "dataset_info.json").write_text(json.dumps({"notes": {"file_name": "notes.json"}}))
    port = free_port()
    log = tmp / "server.log"
    before = os.environ.get("LAUNCHER_UI_TOKEN")
    os.environ["LAUNCHER_UI_TOKEN"] = TOKEN
    try:
        proc = start_ui(tmp / "root", port, log, extra_args=("--data-root", str(data_root)))
    finally:
        os.environ.pop("LAUNCHER_UI_TOKEN")
        if before is not None:
            os.environ["LAUNCHER_UI_TOKEN"] = before
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", proc, log)
        yield port, tmp
    finally:
        stop_ui(proc)


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict = None, source: str = "127.0.0.1"):
    """(status, headers, body) of one request from ``source`` (any 127.x address is this host)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def login(port: int, password: str, source: str = "127.0.0.1"):
    return request(port, "POST", "/login", f"username=launcher&password={password}".encode(),
                   {"Content-Type": "application/x-www-form-urlencoded"}, source)


def session_cookie(port: int) -> str:
    status, headers, _ = login(port, TOKEN)
    assert status == 200
    cookies = [c.split(";")[0] for k, c in headers.items() if k.lower() == "set-cookie"]
    # http.client folds repeated headers; take every access-token cookie it gave.
    raw = next(v for k, v in headers.items() if k.lower() == "set-cookie")
    return "; ".join(re.findall(r"(access-token[^=;,\s]*=[^;,\s]+)", raw)) or cookies[0]


def api_info_of(page_html: bytes) -> dict:
    return json.loads(re.search(rb"window\.gradio_api_info = (.*?);</script>", page_html, re.DOTALL).group(1))


def test_before_login_only_the_login_page_is_served(secured):
    port, _ = secured
    status, _, page = request(port, "GET", "/")
    assert status == 200 and api_info_of(page) == {"named_endpoints": {}, "unnamed_endpoints": {}}
    assert b"on_preview" not in page and b"on_submit" not in page and b"on_data_preview" not in page
    closed = ["/config", "/info", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/app_id",
              "/gradio_api/token", "/gradio_api/user", "/gradio_api/runs", "/gradio_api/upload_progress",
              "/monitoring/anything", "/gradio_api/queue/data", "/gradio_api/file=/etc/hostname",
              "/gradio_api/run-history/buckets", "/gradio_api/heartbeat/x"]
    for path in closed:
        status, _, body = request(port, "GET", path)
        assert status == 401, (path, status, body[:200])
    for path in ("/gradio_api/upload", "/gradio_api/queue/join", "/gradio_api/cancel", "/gradio_api/reset"):
        status, _, _ = request(port, "POST", path, b"{}", {"Content-Type": "application/json"})
        assert status == 401, path
    # Logged in, the same app answers: the gate hides, it does not break.
    cookie = session_cookie(port)
    status, _, info = request(port, "GET", "/gradio_api/info", headers={"Cookie": cookie})
    assert status == 200 and "/on_preview" in json.loads(info)["named_endpoints"]
    status, _, page = request(port, "GET", "/", headers={"Cookie": cookie})
    assert status == 200 and "/on_preview" in api_info_of(page)["named_endpoints"]


def test_wrong_passwords_are_throttled_per_client(secured):
    port, _ = secured
    guesser, other = "127.0.0.5", "127.0.0.6"
    start = time.perf_counter()
    answers = [login(port, f"guess-{i}", guesser) for i in range(40)]
    elapsed = time.perf_counter() - start
    codes = [status for status, _, _ in answers]
    assert codes[:5] == [400] * 5, codes
    assert codes.count(400) <= 7 and codes.count(429) >= 33, codes
    assert elapsed < 20, f"40 answers took {elapsed:.1f} s"
    status, headers, body = answers[-1]
    retry = int({k.lower(): v for k, v in headers.items()}["retry-after"])
    assert 1 <= retry <= 300 and b"too many failed logins" in body
    # Locked out even with the right password; the lockout answers at once and the server keeps serving.
    t0 = time.perf_counter()
    assert login(port, TOKEN, guesser)[0] == 429
    assert request(port, "GET", "/theme.css", source=guesser)[0] == 200
    assert time.perf_counter() - t0 < 5
    # Another client is not affected.
    assert login(port, TOKEN, other)[0] == 200
    # After the lockout, the right password works and clears the count.
    time.sleep(retry + 0.3)
    assert login(port, TOKEN, guesser)[0] == 200
    assert login(port, "wrong-again", guesser)[0] == 400


def upload(port: int, cookie: str, name: str, data: bytes) -> Path:
    """POST /gradio_api/upload as the page does; the file's path on the server."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/json\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, _, answer = request(port, "POST", "/gradio_api/upload", body,
                                {"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": cookie})
    assert status == 200, answer
    return Path(json.loads(answer)[0])


def browser_login(page, port: int) -> None:
    page.goto(f"http://127.0.0.1:{port}/")
    page.get_by_label(re.compile("username", re.I)).fill("launcher")
    page.get_by_label(re.compile("password", re.I)).fill(TOKEN)
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    expect()(page.locator("#data-preview-btn")).to_be_visible(timeout=60_000)


def data_preview(page, overrides: str, expected: str) -> str:
    """Click the data preview with ``overrides``; the stats box once it shows ``expected``."""
    fill(page, "overrides", overrides)
    fill(page, "data-n", "2")
    page.locator("#data-preview-btn").click()
    stats = page.locator("#data-stats")
    expect()(stats).to_contain_text(expected, timeout=180_000)
    return stats.inner_text()


def test_data_preview_opens_only_files_under_the_roots(secured, page):
    port, tmp = secured
    notes = tmp / "private" / "notes.json"
    cookie = session_cookie(port)
    info = {"by_path": {"file_name": str(notes)}, "by_dots": {"file_name": "PLACEHOLDER"}}
    first = upload(port, cookie, "dataset_info.json", json.dumps(info).encode())
    uploaded_dir = first.parent
    info["by_dots"]["file_name"] = os.path.relpath(notes, uploaded_dir)
    assert info["by_dots"]["file_name"].startswith("..")
    uploaded_dir = upload(port, cookie, "dataset_info.json", json.dumps(info).encode()).parent

    browser_login(page, port)
    for name in ("by_path", "by_dots"):
        shown = data_preview(page, f"data=custom data.dataset_dir={uploaded_dir} data.datasets=[{name}]",
                             f"dataset '{name}', file_name: {notes} {REFUSAL}")
        assert PRIVATE_ROW not in page.content()
    data_preview(page, f"data=custom data.dataset_dir={tmp / 'private'} data.datasets=[notes]",
                 f"data.dataset_dir: {tmp / 'private'} {REFUSAL}")
    assert PRIVATE_ROW not in page.content()
    # The preview and submit buttons refuse the same way, before the preflight reads the file.
    page.locator("#preview-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile(re.escape(REFUSAL)), timeout=60_000)
    # A folder the UI was started with (--data-root) is previewed as usual.
    data_preview(page, f"data=custom data.dataset_dir={tmp / 'shared-data'} data.datasets=[mine]"
                       f" data.cache_dir={tmp / 'root' / '.cache'}", "2 sample(s) shown")
    expect()(page.locator("#data-preview")).to_contain_text("ALLOWED-ROW-0")


def test_lockouts_double_up_to_the_cap_and_are_forgotten():
    from launcher.ui.login_gate import FORGET_S, FREE_FAILURES, MAX_LOCKOUT_S, LoginThrottle

    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    waits = []
    for _ in range(FREE_FAILURES + 12):
        assert throttle.retry_after("a") == 0
        throttle.attempt("a")
        waits.append(throttle.retry_after("a"))
        now[0] += waits[-1]
    assert waits[:FREE_FAILURES - 1] == [0] * (FREE_FAILURES - 1)
    assert waits[FREE_FAILURES - 1:FREE_FAILURES + 3] == [1, 2, 4, 8] and max(waits) == MAX_LOCKOUT_S
    assert throttle.retry_after("b") == 0  # per client
    throttle.attempt("a")
    now[0] += FORGET_S + MAX_LOCKOUT_S + 1
    assert throttle.retry_after("a") == 0 and "a" not in throttle.clients


def test_roots_follow_symlinks_and_dots(tmp_path):
    from launcher.errors import ConfigError
    from launcher.ui.roots import UiRoots

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    roots = UiRoots.of([root])
    assert roots.check(root / "a.json", "x") == root / "a.json"
    for path in (root / "link" / "a.json", root / ".." / "outside" / "a.json", Path("/etc/passwd"),
                 tmp_path / "root-other"):
        with pytest.raises(ConfigError, match="x: .* is outside the folders this UI may open"):
            roots.check(path, "x")


def test_predict_checks_only_the_data_a_finished_run_reads(tmp_path):
    from launcher.config.compose import compose_config
    from launcher.errors import ConfigError
    from launcher.ui.roots import UiRoots, check_config

    (tmp_path / "data").mkdir()
    cfg = compose_config([f"data.dataset_dir={tmp_path / 'data'}", "run.output_root=/elsewhere/outputs"], check=False)
    roots = UiRoots.of([tmp_path])
    check_config(cfg, roots, data_only=True)  # the run's own output root is not opened by predict
    with pytest.raises(ConfigError, match="run.output_root: /elsewhere/outputs is outside"):
        check_config(cfg, roots)
    with pytest.raises(ConfigError, match="data.dataset_dir: .* is outside"):
        check_config(cfg, UiRoots.of([tmp_path / "other"]), data_only=True)
