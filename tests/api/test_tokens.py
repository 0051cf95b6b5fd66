"""App tokens (`POST /tokens/`, `?fal_jwt_token=`): what they let through and every refusal —
expired, another app, another key's request, a revoked key, a forged token, routes that are
not an app's, a malformed ask."""

from __future__ import annotations

import time

import httpx

from .server import LiveServer
from .test_routes_queue import INPUT

SUBMIT = "/queue/fal-ai/aura-sr"


def _token(server: LiveServer, key: str | None = None, **ask: object) -> str:
    body = {"allowed_apps": ["aura-sr"], "token_expiration": 60, **ask}
    r = httpx.post(f"{server.url}/tokens/", json=body, headers=server.headers(key))
    assert r.status_code == 201, r.text
    token = r.json()
    assert isinstance(token, str)  # a bare JSON string, as fal answers
    return token


def test_a_token_acts_as_its_key_on_the_apps_routes(server: LiveServer) -> None:
    token = _token(server)
    with httpx.Client(base_url=server.url, params={"fal_jwt_token": token}) as c:
        submitted = c.post(SUBMIT, json=INPUT)  # no Authorization at all
        assert submitted.status_code == 200, submitted.text
        rid = submitted.json()["request_id"]
        job = server.job_store.get(rid)
        assert job is not None and job.owner == server.key_id
        assert c.get(f"{SUBMIT}/requests/{rid}/status").status_code == 202
        with c.stream("GET", f"{SUBMIT}/requests/{rid}/status/stream") as stream:
            assert stream.status_code == 200
        assert c.put(f"{SUBMIT}/requests/{rid}/cancel").status_code == 202
    # A full endpoint id names its app too.
    assert _token(server, allowed_apps=["fal-ai/aura-sr"])


def test_token_refusals(server: LiveServer) -> None:
    with server.client() as c:
        rid = c.post(SUBMIT, json=INPUT).json()["request_id"]
    status = f"{server.url}{SUBMIT}/requests/{rid}/status"

    def refused(token: str, why: str) -> None:
        r = httpx.get(status, params={"fal_jwt_token": token})
        assert r.status_code == 401, r.text
        assert why in r.json()["detail"][0]["msg"]

    refused(_token(server, allowed_apps=["flux-pro"]), "not valid for the app 'aura-sr'")
    short = _token(server, token_expiration=1)
    assert httpx.get(status, params={"fal_jwt_token": short}).status_code == 202
    time.sleep(1.2)
    refused(short, "Invalid or expired")
    good = _token(server)
    refused(good[:-4] + "AAAA", "Invalid or expired")  # forged signature
    # Another key's token sees none of this key's requests.
    other = _token(server, key=server.new_key("other"))
    r = httpx.get(status, params={"fal_jwt_token": other})
    assert r.status_code == 404
    # Not an app's route: storage takes keys (and its own upload tokens), not app tokens.
    r = httpx.post(
        f"{server.url}/storage/upload/initiate",
        params={"fal_jwt_token": good},
        json={"content_type": "image/png", "file_name": "a.png"},
    )
    assert r.status_code == 401
    # A token dies with its key.
    server.job_store.revoke_key(server.key_id)
    refused(good, "revoked")


def test_asking_for_a_token(server: LiveServer) -> None:
    url = f"{server.url}/tokens/"
    body = {"allowed_apps": ["aura-sr"], "token_expiration": 60}
    assert httpx.post(url, json=body).status_code == 401  # only a key may ask
    for bad in (
        {"allowed_apps": [], "token_expiration": 60},
        {"allowed_apps": ["aura-sr"], "token_expiration": 0},
        {"allowed_apps": ["aura-sr"], "token_expiration": 10**9},
        {"allowed_apps": "aura-sr"},
        {"token_expiration": 60},
    ):
        r = httpx.post(url, json=bad, headers=server.headers())
        assert r.status_code == 422, bad
    r = httpx.post(url, content=b"{", headers=server.headers())
    assert r.status_code == 422
