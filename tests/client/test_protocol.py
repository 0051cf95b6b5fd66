"""The client's I/O-free parts: endpoint ids, configuration, retry timing, status and log
parsing, content sniffing."""

from __future__ import annotations

import email.utils
import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from superscale.cli.run import output_path, tile_progress
from superscale.client import _inputs
from superscale.client._protocol import (
    CdnToken,
    EndpointId,
    RetryPolicy,
    Urls,
    resolve_base_url,
    resolve_key,
)
from superscale.client.errors import (
    RequestCancelledError,
    RequestTimeoutError,
    ServerError,
    ValidationError,
    error_from_response,
    parse_retry_after,
)
from superscale.client.status import Completed, InProgress, Queued, parse_status


@pytest.mark.parametrize(
    ("endpoint", "app", "full"),
    [
        ("fal-ai/aura-sr", "fal-ai/aura-sr", "fal-ai/aura-sr"),
        ("fal-ai/flux/dev", "fal-ai/flux", "fal-ai/flux/dev"),
        ("workflows/me/flow/x", "workflows/me/flow", "workflows/me/flow/x"),
        ("123-my-app", "123/my-app", "123/my-app"),
    ],
)
def test_endpoint_ids_split_as_fals_clients_do(endpoint: str, app: str, full: str) -> None:
    parsed = EndpointId.parse(endpoint)
    assert (parsed.app, parsed.full) == (app, full)


def test_status_urls_use_the_app_and_submit_the_full_id() -> None:
    urls = Urls("http://h:1")
    assert urls.submit("fal-ai/flux/dev") == "http://h:1/queue/fal-ai/flux/dev"
    assert (
        urls.status("fal-ai/flux/dev", "r/1")
        == "http://h:1/queue/fal-ai/flux/requests/r%2F1/status"
    )
    with pytest.raises(ValueError, match="owner/alias"):
        EndpointId.parse("aura-sr")


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SUPERSCALE_URL", "FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_base_url(None) == "http://127.0.0.1:8000"
    assert resolve_key(None) is None
    monkeypatch.setenv("SUPERSCALE_URL", "https://up.example/")
    monkeypatch.setenv("FAL_KEY_ID", "id")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret")
    assert resolve_base_url(None) == "https://up.example"
    assert resolve_key(None) == "id:secret"
    monkeypatch.setenv("FAL_KEY", "k:s")
    assert resolve_key(None) == "k:s"
    assert resolve_key("arg:x") == "arg:x"
    with pytest.raises(ValueError, match="http"):
        resolve_base_url("ftp://nope")


def test_retry_after_is_honoured_but_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0, max_retry_after=10.0)
    hinted = httpx.Response(429, headers={"Retry-After": "3"})
    assert policy.delay(1, hinted) == 3.0
    assert policy.delay(1, httpx.Response(429, headers={"Retry-After": "3600"})) == 10.0
    # Without a hint: exponential, jittered into [half, full] of the step, capped.
    assert 0.5 <= policy.delay(1) <= 1.0
    assert 2.0 <= policy.delay(3) <= 4.0
    assert 2.0 <= policy.delay(10) <= 4.0
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert parse_retry_after(date) == pytest.approx(5, abs=1.5)
    assert parse_retry_after("soon") is None


def test_posts_are_retried_only_when_the_server_cannot_have_acted() -> None:
    policy = RetryPolicy()
    for code, post_ok in ((429, True), (503, True), (502, False), (504, False), (500, False)):
        assert policy.should_retry_status(httpx.Response(code), idempotent=False) is post_ok
        assert policy.should_retry_status(httpx.Response(code), idempotent=True) is (code != 500)
    user_deadline = httpx.Response(504, headers={"X-Fal-Request-Timeout-Type": "user"})
    assert not policy.should_retry_status(user_deadline, idempotent=True)
    request = httpx.Request("POST", "http://h")
    assert policy.should_retry_error(httpx.ConnectError("x", request=request), idempotent=False)
    assert not policy.should_retry_error(httpx.ReadError("x", request=request), idempotent=False)


def test_error_classes_from_answers() -> None:
    body = {"detail": [{"loc": ["body", "checkpoint"], "msg": "bad", "type": "literal_error"}]}
    err = error_from_response(httpx.Response(422, json=body), request_id="r1")
    assert isinstance(err, ValidationError)
    assert (err.fields, err.status_code, err.request_id) == (["checkpoint"], 422, "r1")
    assert "checkpoint: bad" in str(err)
    cancelled = {"detail": [{"loc": ["body"], "msg": "x", "type": "c"}], "error_type": "cancelled"}
    assert isinstance(
        error_from_response(httpx.Response(400, json=cancelled)), RequestCancelledError
    )
    user = httpx.Response(504, headers={"X-Fal-Request-Timeout-Type": "user"}, json={})
    assert isinstance(error_from_response(user), RequestTimeoutError)
    gateway = error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(gateway, ServerError) and "bad gateway" in gateway.message


def test_status_parsing() -> None:
    base = {"request_id": "r", "response_url": "u", "status_url": "s", "cancel_url": "c"}
    assert parse_status({**base, "status": "IN_QUEUE", "queue_position": 2}) == Queued("r", 2)
    logs = [{"message": "tiles 1/2", "level": "INFO"}]
    assert parse_status({**base, "status": "IN_PROGRESS", "logs": logs}) == InProgress("r", logs)
    done = parse_status({**base, "status": "COMPLETED", "logs": None, "metrics": {"a": 1.0}})
    assert isinstance(done, Completed) and done.metrics == {"a": 1.0} and done.error is None
    with pytest.raises(ValueError, match="unknown"):
        parse_status({**base, "status": "EXPLODED"})


def test_storage_token_expiry_parsing() -> None:
    data = {"token": "t", "token_type": "Bearer", "base_url": "http://h/", "expires_at": ""}
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    token = CdnToken.from_json({**data, "expires_at": future})
    assert token.fresh() and token.base_url == "http://h"
    past = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
    assert not CdnToken.from_json({**data, "expires_at": past}).fresh()
    with pytest.raises(ValueError, match="malformed"):
        CdnToken.from_json({"token": "t"})


def test_tile_progress_from_worker_logs() -> None:
    logs = [
        {"message": "fetched input: 100 bytes in 0.00 s"},
        {"message": "tiles 3/16"},
        {"message": "Tiles: 7 / 16 done"},
        {"message": "encoded png"},
    ]
    assert tile_progress(logs) == (7, 16)
    assert tile_progress([{"message": "tiles 9/4"}]) is None  # nonsense is ignored
    assert tile_progress(None) is None
    assert output_path(Path("a/b.photo.jpg"), Path("out"), "png") == Path("out/b.photo_4x.png")


def test_upload_kinds_are_recognised_and_sniffed(
    tmp_path: Path, image_factory: Callable[..., Image.Image]
) -> None:
    buffer = io.BytesIO()
    image_factory().save(buffer, format="PNG")
    png = buffer.getvalue()
    path = tmp_path / "x.png"
    path.write_bytes(png)
    with path.open("rb") as handle:
        kinds = [path, png, bytearray(png), handle, image_factory()]
        args = {
            "a": kinds[0],
            "b": [kinds[1], {"c": kinds[2]}],
            "d": (kinds[3], kinds[4]),
            "e": "s",
        }
        assert _inputs.find_uploads(args) == kinds
        uploads = [_inputs.to_upload(kind) for kind in kinds]
    assert {u.content_type for u in uploads} == {"image/png"}
    assert uploads[0].file_name == "x.png" and uploads[3].file_name == "x.png"
    assert _inputs.guess_content_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert _inputs.guess_content_type(b"??", "a.txt") == "text/plain"
    with pytest.raises(TypeError, match="binary"):
        _inputs.to_upload(io.StringIO("text"))


def test_the_client_imports_no_server_code_and_no_torch() -> None:
    code = (
        "import sys, superscale.client, superscale.cli.run\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.split('.')[:2] in ("
        "['superscale', 'api'], ['superscale', 'jobs'], ['superscale', 'worker'], "
        "['superscale', 'engine'], ['superscale', 'model'], ['superscale', 'files'])]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_module_functions_have_their_methods_parameters() -> None:
    """`superscale.client.subscribe(…)` & co. take exactly what the client methods take (no
    catch-all `**options`), as help() and type checkers see them."""
    import inspect

    import superscale.client as sc

    names = ["subscribe", "submit", "status", "result", "cancel", "stream", "run", "upload"]
    names += ["upload_file", "upload_image"]
    for name in names:
        for function, client in ((name, sc.SyncClient), (f"{name}_async", sc.AsyncClient)):
            method = inspect.signature(getattr(client, name))
            carried = inspect.signature(getattr(sc, function))
            assert list(carried.parameters.values()) == list(method.parameters.values())[1:]
            assert all(p.kind is not p.VAR_KEYWORD for p in carried.parameters.values())
    assert "webhook_url" in inspect.signature(sc.subscribe).parameters
