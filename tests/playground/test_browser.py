"""The playground end to end in Debian's Chromium (headless) against the real server on loopback
with a small random-weight model: upload, run, progress, result, compare, download, snippets,
history, cancel, the phone layout. Screenshots of each state go to tests/artifacts/playground/.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import Server, start_server, stop_server

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect

pytestmark = pytest.mark.slow  # a browser, a server and a model: ~20-40 s together

RUN_TIMEOUT_MS = 120_000
# Records every status text the page shows, so that a progress line that is on screen for only
# a moment is still seen by the test.
RECORD_PHASES = """() => {
  window.__phases = [];
  const phase = document.getElementById("phase");
  new MutationObserver(() => window.__phases.push(
    document.getElementById("status").dataset.phase + ": " + phase.textContent
  )).observe(phase, {childList: true, characterData: true, subtree: true});
}"""


def _png(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: something an upscaler has to work on, and that shows in a
    # screenshot.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _data_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def _code(page: Any, tab: str) -> str:
    page.click(f"[role=tab][data-tab={tab}]")
    return str(page.inner_text("#code"))


def test_upload_run_watch_compare_download_cancel(
    open_server: Server, browser: Any, artifacts: Path, tmp_path: Path
) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    targets: list[str] = []  # what the page asked the proxy for
    page.on("request", lambda req: targets.append(req.headers.get("x-fal-target-url", "")))
    page.goto(f"{open_server.url}/")
    page.wait_for_selector("#phase")
    assert page.is_hidden("#access"), "auth is off: the page must not ask for access"
    _shot(page, artifacts, "00-empty")

    # --- pick an image, choose options ---------------------------------------------------
    small = _png(tmp_path / "small.png", 96, 72, seed=1)
    page.set_input_files("#file", str(small))
    expect(page.locator("#input-info")).to_contain_text("384×288")
    page.select_option("#checkpoint", "v2")
    page.fill("#seed", "7")
    page.fill("#scale", "4.5")  # any factor from 1 to 16: here two model passes, resized down
    expect(page.locator("#input-info")).to_contain_text("432×324")
    _shot(page, artifacts, "01-input")

    # --- run: upload, queue, progress, result --------------------------------------------
    page.evaluate(RECORD_PHASES)
    page.click("#run")
    page.wait_for_selector("#status[data-phase=running]", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#status[data-phase=done]", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#download:not([hidden])")
    _shot(page, artifacts, "02-result")

    # Progress came live from the SSE status stream, not from polling.
    assert any(t.endswith("/status/stream?logs=1") for t in targets), targets
    assert not [t for t in targets if t.endswith("/status?logs=1")], targets
    phases = page.evaluate("window.__phases")
    assert any(p.startswith("uploading") for p in phases), phases
    # (The idle worker may claim the job before the first event: the queued state is shown
    # deterministically in test_without_access_then_login_link, where no worker runs.)
    tiles = [p for p in phases if re.match(r"running: Upscaling · tiles \d+/\d+$", p)]
    assert tiles, f"no tile progress shown: {phases}"
    done, total = map(int, tiles[-1].rsplit(" ", 1)[1].split("/"))
    assert 0 < done <= total
    assert page.get_attribute("#progress", "max") is not None

    request = json.loads(_code(page, "request"))
    assert request["checkpoint"] == "v2" and request["seed"] == 7
    assert request["upscale_factor"] == 4.5
    assert request["image_url"].startswith(f"{open_server.url}/files/"), request
    response = json.loads(_code(page, "response"))
    image = response["image"]
    assert (image["width"], image["height"]) == (432, 324)
    assert "432×324" in page.inner_text("#result-info")

    # The uploaded input is byte-exact on the server.
    assert httpx.get(request["image_url"]).content == small.read_bytes()

    # --- compare: zoom to pixels, move the divider ---------------------------------------
    page.click("button[data-zoom='8']")
    assert "pixelated" in (page.get_attribute("#stage", "class") or "")
    width = page.evaluate("document.getElementById('stage').getBoundingClientRect().width")
    assert width == pytest.approx(432 * 8, abs=1)
    page.fill("#split", "30")
    page.dispatch_event("#split", "input")
    clip = page.evaluate("document.getElementById('after').style.clipPath")
    assert clip.startswith("inset("), clip
    _shot(page, artifacts, "03-zoom-8x")
    page.click("button[data-zoom='fit']")
    assert "pixelated" not in (page.get_attribute("#stage", "class") or "")

    # --- download ---------------------------------------------------------------------------
    with page.expect_download() as download_info:
        page.click("#download")
    saved = tmp_path / "download.png"
    download_info.value.save_as(str(saved))
    assert saved.read_bytes() == httpx.get(image["url"]).content
    assert Image.open(saved).size == (432, 324)

    # --- snippets name this server and this request ----------------------------------------
    python = _code(page, "python")
    _shot(page, artifacts, "04-snippet-python")
    assert "from superscale.client import SyncClient" in python
    assert f'base_url="{open_server.url}"' in python and request["image_url"] in python
    assert '"seed": 7' in python and '"checkpoint": "v2"' in python
    compile(python, "snippet.py", "exec")  # valid Python as shown
    fal = _code(page, "fal_client")
    assert f'QUEUE_URL_FORMAT = "{open_server.url}/queue/"' in fal
    compile(fal, "snippet_fal.py", "exec")
    js = _code(page, "js")
    assert "@fal-ai/client" in js and "requestMiddleware" in js and request["image_url"] in js
    curl = _code(page, "curl")
    assert "/queue/fal-ai/aura-sr" in curl and '"seed":7' in curl
    if shutil.which("curl"):  # run it: submit, stream to COMPLETED, fetch the result
        ran_curl = subprocess.run(
            ["bash", "-eo", "pipefail"], input=curl, capture_output=True, text=True, timeout=180
        )
        assert ran_curl.returncode == 0, ran_curl.stderr
        assert '"status":"COMPLETED"' in ran_curl.stdout.replace(" ", ""), ran_curl.stdout
        assert f"{open_server.url}/files/" in ran_curl.stdout.splitlines()[-1], ran_curl.stdout
    else:
        assert subprocess.run(["bash", "-n"], input=curl, text=True).returncode == 0

    # Copy-ready means it runs: both Python snippets, as shown, against this server.
    for tab, code in (("python", python), ("fal_client", fal)):
        workdir = tmp_path / tab
        workdir.mkdir()
        ran = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=180
        )
        assert ran.returncode == 0, f"{tab} snippet failed:\n{ran.stderr[-2000:]}"
        assert f"{open_server.url}/files/" in ran.stdout, ran.stdout
    assert Image.open(tmp_path / "python" / "output.png").size == (432, 324)
    if shutil.which("node"):
        (tmp_path / "snippet.mjs").write_text(js)
        check = subprocess.run(
            ["node", "--check", str(tmp_path / "snippet.mjs")], capture_output=True
        )
        assert check.returncode == 0, check.stderr

    # --- a second run, cancelled while it runs ----------------------------------------------
    big = _png(tmp_path / "big.png", 512, 512, seed=2)
    page.set_input_files("#file", str(big))
    page.check("#overlap")
    page.click("[role=tab][data-tab=request]")
    page.evaluate(RECORD_PHASES)
    page.click("#run")
    tiles_done = re.compile(r"tiles [1-9]\d*/\d+")  # some done: the bar has moved
    expect(page.locator("#phase")).to_have_text(tiles_done, timeout=RUN_TIMEOUT_MS)
    _shot(page, artifacts, "05-running")
    page.click("#cancel")
    page.wait_for_selector("#status[data-phase=cancelled]", timeout=RUN_TIMEOUT_MS)
    page.click("[role=tab][data-tab=response]")
    _shot(page, artifacts, "06-cancelled")
    cancelled = json.loads(page.inner_text("#code"))
    assert cancelled["error_type"] == "client_cancelled", cancelled
    assert page.get_attribute("#download", "hidden") is not None
    second_id = page.evaluate(
        "JSON.parse(localStorage.getItem('superscale.playground.history'))[0].id"
    )
    status = httpx.get(f"{open_server.url}/queue/fal-ai/aura-sr/requests/{second_id}/status").json()
    assert status["status"] == "COMPLETED"

    # --- history: both runs, newest first -----------------------------------------------------
    items = page.locator("#history .history-item")
    assert items.count() == 2
    assert "cancelled" in items.nth(0).inner_text()
    assert "done" in items.nth(1).inner_text()

    # --- phone-sized screen: reopen the finished run from history ------------------------------
    phone = context.new_page()
    phone.on("pageerror", lambda exc: errors.append(f"pageerror (phone): {exc}"))
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.emulate_media(color_scheme="dark")
    phone.goto(f"{open_server.url}/playground")
    phone.locator("#history .history-item").nth(1).click()
    phone.wait_for_selector("#status[data-phase=done]", timeout=RUN_TIMEOUT_MS)
    assert phone.input_value("#checkpoint") == "v2" and phone.input_value("#seed") == "7"
    assert phone.input_value("#scale") == "4.5"
    assert phone.input_value("#url") == request["image_url"]
    scroll_width = phone.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 390, "the page must not scroll sideways on a phone"
    _shot(phone, artifacts, "07-phone-result")

    context.close()
    assert not errors, errors
    # Works offline: everything the page loaded came from this server (or the page itself).
    foreign = [u for u in requested if not u.startswith((open_server.url, "blob:", "data:"))]
    assert not foreign, foreign


def test_url_input_drop_and_bad_input(open_server: Server, browser: Any, artifacts: Path) -> None:
    """The other ways in: an image dropped on the page, an image URL (a data: URI here), and
    input the server refuses, shown as a clear message."""
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.goto(f"{open_server.url}/playground")
    page.wait_for_selector("#phase")

    # Drop: a real DragEvent carrying a PNG file made in the page.
    page.evaluate(DROP_PNG)
    expect(page.locator("#input-info")).to_contain_text("dropped.png")
    expect(page.locator("#input-info")).to_contain_text("12×8 → 48×32")

    # A URL replaces the dropped file: here a small data: URI.
    data_uri = _data_uri(20, 10)
    page.fill("#url", data_uri)
    page.dispatch_event("#url", "change")
    expect(page.locator("#input-info")).to_contain_text("20×10 → 80×40")
    page.click("#run")
    page.wait_for_selector("#status[data-phase=done]", timeout=RUN_TIMEOUT_MS)
    assert json.loads(_code(page, "request"))["image_url"] == data_uri
    assert json.loads(_code(page, "response"))["image"]["width"] == 80

    # The viewer by hand: drag the divider, zoom with the wheel, copy the code shown.
    knob = page.locator("#divider .knob").bounding_box()
    assert knob is not None
    page.mouse.move(knob["x"] + knob["width"] / 2, knob["y"] + knob["height"] / 2)
    page.mouse.down()
    page.mouse.move(knob["x"] - 150, knob["y"], steps=5)
    page.mouse.up()
    assert int(page.input_value("#split")) < 40
    stage_width = "document.getElementById('stage').getBoundingClientRect().width"
    before = page.evaluate(stage_width)
    viewer = page.locator("#viewer").bounding_box()
    assert viewer is not None
    page.mouse.move(viewer["x"] + viewer["width"] / 2, viewer["y"] + viewer["height"] / 2)
    page.mouse.wheel(0, -400)
    expect(page.locator("#stage")).to_have_class(re.compile("pixelated"))
    assert page.evaluate(stage_width) > before * 1.5
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy")
    expect(page.locator("#copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == page.inner_text("#code")

    # A long data: URI makes the snippets read a local file instead of inlining it.
    long_input = {"image_url": "data:image/png;base64," + "A" * 500, "output_format": "webp"}
    code = page.evaluate(
        "async (input) => (await import('/playground/assets/snippets.js')).snippets(input, 'http://h:1')",
        long_input,
    )
    assert 'Path("input.png")' in code["python"] and "AAAA" not in code["python"]
    assert 'result.image.download("output.webp")' in code["python"]
    compile(code["python"], "long.py", "exec")
    assert 'client.upload_file("input.png")' in code["fal_client"]
    compile(code["fal_client"], "long_fal.py", "exec")
    assert 'openAsBlob("input.png")' in code["js"] and "AAAA" not in code["js"]
    assert "base64 -w0 input.png" in code["curl"] and "AAAA" not in code["curl"]
    assert subprocess.run(["bash", "-n"], input=code["curl"], text=True).returncode == 0

    # Files named on 127.0.0.1 by a server without --public-url load from the page's own
    # address when the page was opened from another machine (a phone on the LAN).
    cases = page.evaluate(
        """async () => {
          const { reachable } = await import('/playground/assets/urls.js');
          const lan = new URL('http://192.168.1.5:8000/playground');
          const here = new URL('http://127.0.0.1:8000/playground');
          return [
            reachable('http://127.0.0.1:8000/files/k/a.png?x=1', lan),
            reachable('http://localhost:8000/files/k/a.png', lan),
            reachable('https://cdn.example/files/a.png', lan),
            reachable('http://127.0.0.1:8000/files/k/a.png', here),
            reachable('data:image/png;base64,AAAA', lan),
          ];
        }"""
    )
    assert cases == [
        "http://192.168.1.5:8000/files/k/a.png?x=1",
        "http://192.168.1.5:8000/files/k/a.png",
        "https://cdn.example/files/a.png",
        "http://127.0.0.1:8000/files/k/a.png",
        "data:image/png;base64,AAAA",
    ]

    # Paste: a URL pasted outside the text fields becomes the image URL; an image, the input.
    page.click("h2#input-title")
    page.evaluate(PASTE_TEXT, "http://127.0.0.1:9/cat.png")
    assert page.input_value("#url") == "http://127.0.0.1:9/cat.png"
    page.evaluate(PASTE_TEXT, "not a url")
    assert page.input_value("#url") == "http://127.0.0.1:9/cat.png"
    page.evaluate(PASTE_PNG)
    expect(page.locator("#input-info")).to_contain_text("pasted.png")
    assert page.input_value("#url") == ""

    # Refused at submit (422): the message names the field; nothing is queued.
    page.fill("#url", "ftp://127.0.0.1/photo.png")
    page.dispatch_event("#url", "change")
    page.click("#run")
    page.wait_for_selector("#status[data-phase=failed]", timeout=30_000)
    message = page.inner_text("#phase")
    assert message.startswith("Failed: image_url"), message
    assert json.loads(_code(page, "response"))["detail"][0]["loc"][-1] == "image_url"
    _shot(page, artifacts, "11-bad-input")

    # Refused by the worker (not an image): the job ends with an error, shown the same way.
    not_png = "data:image/png;base64," + base64.b64encode(b"hello, not a picture").decode()
    page.fill("#url", not_png)
    page.dispatch_event("#url", "change")
    page.click("#run")
    page.wait_for_selector("#status[data-phase=failed]", timeout=RUN_TIMEOUT_MS)
    assert "image" in page.inner_text("#phase").lower()
    assert "failed" in page.inner_text("#history .history-item >> nth=0")
    _shot(page, artifacts, "12-job-error")

    # A seed the form itself refuses never reaches the server.
    page.fill("#seed", "-3")
    page.click("#run")
    expect(page.locator("#phase")).to_contain_text("seed")
    context.close()
    assert not errors, errors


def test_page_rides_out_a_server_restart(
    tmp_path_factory: pytest.TempPathFactory,
    small_model_dir: Path,
    browser: Any,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    """The server dies with the page's run queued; the page keeps trying, and when the server
    is back (same port, same data) it follows the run to its result."""
    data_dir = tmp_path_factory.mktemp("serve-restart")
    first = start_server(data_dir, small_model_dir, "--no-auth", "--workers", "0")
    port = int(first.url.rsplit(":", 1)[1])
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{first.url}/playground")
        page.set_input_files("#file", str(_png(tmp_path / "in.png", 64, 64, seed=4)))
        page.click("#run")
        expect(page.locator("#phase")).to_have_text("In queue · next in line", timeout=30_000)
    finally:
        first.process.kill()  # a crash, not a clean stop
        first.process.wait()
    expect(page.locator("#phase")).to_contain_text("Reconnecting", timeout=30_000)
    _shot(page, artifacts, "13-reconnecting")
    second = start_server(data_dir, small_model_dir, "--no-auth", port=port)
    try:
        page.wait_for_selector("#status[data-phase=done]", timeout=RUN_TIMEOUT_MS)
        assert json.loads(_code(page, "response"))["image"]["width"] == 256
    finally:
        stop_server(second)
        context.close()


DROP_PNG = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 12;
  canvas.height = 8;
  canvas.getContext("2d").fillRect(0, 0, 6, 8);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
  const drop = document.getElementById("drop");
  drop.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true }));
  drop.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
}"""


PASTE_PNG = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 6;
  canvas.height = 6;
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], "pasted.png", { type: "image/png" }));
  document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
}"""


PASTE_TEXT = """(text) => {
  const transfer = new DataTransfer();
  transfer.setData("text/plain", text);
  document.body.dispatchEvent(
    new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true })
  );
}"""


def test_without_access_then_login_link(
    auth_server: Server, browser: Any, artifacts: Path, tmp_path: Path
) -> None:
    """Auth on: the page says how to get access; a login link grants a session that the page
    cannot read; runs then go through the proxy as that key (no worker: the run stays queued
    and is cancelled there)."""
    from superscale.api.keys import create_key
    from superscale.jobs import open_job_store

    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.goto(f"{auth_server.url}/playground")
    expect(page.locator("#access")).to_be_visible()
    expect(page.locator("#access")).to_contain_text("login link")
    assert page.is_disabled("#run")
    _shot(page, artifacts, "08-no-access")

    store = open_job_store(f"sqlite:///{auth_server.data_dir / 'superscale.db'}")
    try:
        key, secret = create_key(store, "browser test")
        _, other_secret = create_key(store, "someone else")
    finally:
        store.close()
    # The link as an operator gets it: `superscale login-link` on the server's data dir.
    made = subprocess.run(
        [
            *(sys.executable, "-m", "superscale", "login-link", key.key_id),
            *("--data-dir", str(auth_server.data_dir), "--public-url", auth_server.url),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    page.goto(made.stdout.strip())
    expect(page.locator("body")).to_contain_text(key.key_id)
    _shot(page, artifacts, "09-login-link")
    page.click("#login")
    page.wait_for_url(f"{auth_server.url}/playground")
    assert page.url == f"{auth_server.url}/playground"
    expect(page.locator("#session")).to_contain_text(key.key_id)
    expect(page.locator("#access")).to_be_hidden()
    assert page.evaluate("document.cookie") == "", "the session cookie must be HttpOnly"

    # Someone else's job waits ahead (no worker runs here), so the page's run is second.
    ahead = httpx.post(
        f"{auth_server.url}/queue/fal-ai/aura-sr",
        headers={"Authorization": f"Key {other_secret}"},
        json={"image_url": _data_uri(8, 8)},
    )
    assert ahead.status_code == 200, ahead.text
    page.set_input_files("#file", str(_png(tmp_path / "in.png", 40, 30, seed=3)))
    page.click("#run")
    expect(page.locator("#phase")).to_have_text("In queue · position 1", timeout=30_000)
    _shot(page, artifacts, "10-signed-in-queued")
    request_id = page.evaluate(
        "JSON.parse(localStorage.getItem('superscale.playground.history'))[0].id"
    )
    page.click("#cancel")
    page.wait_for_selector("#status[data-phase=cancelled]", timeout=30_000)

    base = f"{auth_server.url}/queue/fal-ai/aura-sr/requests/{request_id}"
    mine = httpx.get(f"{base}/status", headers={"Authorization": f"Key {secret}"})
    assert mine.json()["status"] == "COMPLETED"
    theirs = httpx.get(f"{base}/status", headers={"Authorization": f"Key {other_secret}"})
    assert theirs.status_code == 404, "the page's run belongs to the session's key"

    cancel_ahead = httpx.put(
        ahead.json()["cancel_url"], headers={"Authorization": f"Key {other_secret}"}
    )
    assert cancel_ahead.status_code == 202, cancel_ahead.text

    page.click("#logout")
    expect(page.locator("#access")).to_be_visible()
    context.close()
    assert not errors, errors


def test_checkpoint_menu_lists_what_the_server_serves(
    browser: Any, small_model_dir: Path, tmp_path: Path
) -> None:
    """A server given a checkpoint of its own (`superscale train`'s output, here any folder
    in the official layout) offers it by name; v1, which it does not serve, is gone."""
    mine = f"mine={small_model_dir / 'v1'}"
    args = ("--no-auth", "--workers", "0", "--checkpoint", "v2", "--checkpoint", mine)
    server = start_server(tmp_path / "serve", None, *args)
    try:
        page = browser.new_context().new_page()
        page.goto(f"{server.url}/")
        expect(page.locator("#checkpoint option")).to_have_text(["v2", "mine"])
        expect(page.locator("#checkpoint")).to_have_value("v2")
        page.select_option("#checkpoint", "mine")
        assert '"checkpoint": "mine"' in _code(page, "python")
        page.context.close()
    finally:
        stop_server(server)
