"""fal's protocol, second round, through fal's JS clients in Node (`@fal-ai/client` 1.10.1 and
`@fal-ai/serverless-client` 0.15.0) against the real server and worker: client-mode streams
with app tokens, `stream()`, `method: "get"`, the proxy with a key, platform headers."""

from __future__ import annotations

import httpx

from .server import LiveServer
from .test_fal_client import png_bytes
from .test_fal_js_client import _js_client_installed, node_env, run_node  # noqa: F401

OUTPUT = [48, 48]  # a 12×12 input, 4×


def test_fal_js_clients_protocol_round_two(worker_server: LiveServer) -> None:
    image = png_bytes(12, 5)
    out = run_node("fal_js_protocol.mjs", node_env(worker_server, image), timeout=300)

    # Client mode: an app token from /tokens/, then ?fal_jwt_token= instead of the key.
    assert out["clientMode"]["size"] == OUTPUT and out["clientMode"]["last"] == "COMPLETED"
    assert out["streamStatus"] == "COMPLETED"
    # stream(): progress events (QueueStatus shapes), the output last; request id in a header.
    for mode in ("server", "client"):
        streamed = out[f"stream_{mode}"]
        assert streamed["last"] == OUTPUT and streamed["done"] == OUTPUT, (mode, streamed)
        assert set(streamed["statuses"]) <= {"IN_QUEUE", "IN_PROGRESS"}, streamed
        assert "IN_PROGRESS" in streamed["statuses"], streamed
        assert streamed["requestId"], streamed
        job = worker_server.job_store.get(streamed["requestId"])
        assert job is not None and job.owner == worker_server.key_id  # the key's, via the token
    # method: "get": run and submit with the input in the query string.
    assert out["getRun"]["size"] == OUTPUT and out["getRun"]["requestId"]
    got = worker_server.job_store.get(out["getSubmit"]["requestId"])
    assert got is not None and got.input["image_url"].startswith("data:image/png;base64,")
    assert out["getSubmit"]["size"] == OUTPUT
    # X-Fal-Store-IO: 0 through the client's headers: the output once, then a 404.
    assert out["storeIo"]["first"] == OUTPUT
    second = out["storeIo"]["second"]
    assert second["status"] == 404 and second["body"]["detail"][0]["type"] == "output_not_stored"
    # The proxy with the app's own key, no URL rewriting; a wrong key is refused.
    assert out["proxyWithKey"]["size"] == OUTPUT and out["proxyWithKey"]["stream"] == OUTPUT
    assert httpx.get(out["proxyWithKey"]["uploaded"]).content == image
    assert out["proxyWrongKey"]["status"] == 401
    # @fal-ai/serverless-client: subscribe by stream (server and client mode), stream(), GET run.
    legacy = out["legacy"]
    assert legacy["subscribe"] == OUTPUT and legacy["last"] == "COMPLETED"
    assert legacy["clientMode"] == OUTPUT
    assert legacy["stream"] == OUTPUT and legacy["getRun"] == OUTPUT
