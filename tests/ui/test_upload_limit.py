"""``launcher ui --max-upload-mb``: the server refuses an upload over it (Gradio's own default takes any size)."""
from __future__ import annotations


def test_an_upload_over_the_servers_limit_is_refused(ui_server):
    """``launcher ui --max-upload-mb``: Gradio's own default takes files of any size from any browser."""
    import httpx

    from tests.ui.conftest import UPLOAD_LIMIT_MB

    url, _ = ui_server
    small = httpx.post(f"{url}gradio_api/upload", files={"files": ("small.bin", b"x" * 1024)}, timeout=60)
    assert small.status_code == 200, small.text[:500]
    big = httpx.post(f"{url}gradio_api/upload",
                     files={"files": ("big.bin", b"x" * ((UPLOAD_LIMIT_MB + 1) * 2**20))}, timeout=60)
    assert big.status_code == 413, (big.status_code, big.text[:500])
