"""Input fetching: http(s) with caps, timeouts and redirects; data: URIs; our own file URLs.
Loopback fixture servers with the SSRF guard off (the guard has its own tests)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fixture_http import FixtureServer, Reply
from superscale.files import new_key, open_file_store
from superscale.settings import Settings
from superscale.worker.fetch import InputError, InputFetcher, decode_data_uri, own_file_key


@pytest.fixture
def fetcher(settings: Settings) -> InputFetcher:
    return InputFetcher(settings, file_store=None)  # type: ignore[arg-type]


def test_fetches_bytes(fetcher: InputFetcher, http_server: Callable[[], FixtureServer]) -> None:
    server = http_server()
    server.routes["/a.png"] = Reply(200, b"\x89PNG payload", {"Content-Type": "image/png"})
    assert fetcher.fetch(f"{server.url}/a.png") == b"\x89PNG payload"


def test_follows_up_to_five_redirects(
    fetcher: InputFetcher, http_server: Callable[[], FixtureServer]
) -> None:
    server = http_server()
    for hop in range(5):
        server.routes[f"/r{hop}"] = Reply(302, headers={"Location": f"/r{hop + 1}"})
    server.routes["/r5"] = Reply(200, b"end")
    assert fetcher.fetch(f"{server.url}/r0") == b"end"
    server.routes["/r0"] = Reply(307, headers={"Location": f"{server.url}/loop"})
    server.routes["/loop"] = Reply(301, headers={"Location": "/r0"})
    with pytest.raises(InputError, match="redirected more than 5 times"):
        fetcher.fetch(f"{server.url}/r0")


def test_unreachable_url_is_an_input_error(fetcher: InputFetcher, closed_port: int) -> None:
    with pytest.raises(InputError, match="could not fetch image_url") as caught:
        fetcher.fetch(f"http://127.0.0.1:{closed_port}/x.png")
    assert caught.value.error_type == "file_download_error"


def test_http_error_status_is_an_input_error(
    fetcher: InputFetcher, http_server: Callable[[], FixtureServer]
) -> None:
    server = http_server()
    with pytest.raises(InputError, match="HTTP 404"):
        fetcher.fetch(f"{server.url}/missing.png")


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_is_refused(
    settings: Settings, http_server: Callable[[], FixtureServer], chunked: bool
) -> None:
    settings.max_input_bytes = 100_000
    server = http_server()
    server.routes["/big"] = Reply(200, b"x" * 5_000_000, chunked=chunked)
    started = time.monotonic()
    with pytest.raises(InputError, match="larger than the limit of 100000 bytes") as caught:
        InputFetcher(settings, file_store=None).fetch(f"{server.url}/big")  # type: ignore[arg-type]
    assert caught.value.error_type == "file_too_large"
    assert time.monotonic() - started < 2


def test_slow_server_times_out(
    settings: Settings, http_server: Callable[[], FixtureServer]
) -> None:
    settings.fetch_timeout = 0.3
    server = http_server()
    server.routes["/slow"] = Reply(200, b"late", delay=1.5)
    started = time.monotonic()
    with pytest.raises(InputError, match=r"timed out after 0.3 s"):
        InputFetcher(settings, file_store=None).fetch(f"{server.url}/slow")  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.4


def test_data_uris() -> None:
    payload = bytes(range(256)) * 4
    encoded = base64.b64encode(payload).decode()
    assert decode_data_uri(f"data:image/png;base64,{encoded}", 10_000) == payload
    # Line-wrapped, unpadded and URL-safe variants are all seen in the wild.
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_data_uri(f"data:image/png;base64,{wrapped}", 10_000) == payload
    urlsafe = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    assert decode_data_uri(f"data:;base64,{urlsafe}", 10_000) == payload


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("data:image/png;base64,@@not*base64@@", "not valid base64"),
        ("data:image/png;base64", "without a ','"),
        ("data:image/png;base64,", "no data"),
        # One rule for the API, the worker and the client: base64 only (superscale.datauri).
        ("data:text/plain,a%20b", "must be base64-encoded"),
        ("data:image/png;base64," + "A" * 2000, "larger than the limit"),
    ],
)
def test_bad_data_uris(uri: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        decode_data_uri(uri, 1000)


def test_own_file_urls() -> None:
    s = Settings(host="0.0.0.0", port=8123, public_url="https://up.example.com/base/")
    assert own_file_key("https://up.example.com/base/files/abc/x.png", s) == "abc/x.png"
    assert own_file_key("https://up.example.com:443/base/files/a%20b/x.png?t=1", s) == "a b/x.png"
    assert own_file_key("http://127.0.0.1:8123/files/abc/x.png", s) == "abc/x.png"
    assert own_file_key("http://localhost:8123/files/abc/x.png", s) == "abc/x.png"
    assert own_file_key("http://[::1]:8123/files/abc/x.png", s) == "abc/x.png"
    # Not ours: other host, port, path prefix or scheme.
    assert own_file_key("https://up.example.com/files/abc/x.png", s) is None
    assert own_file_key("https://evil.example.com/base/files/abc", s) is None
    assert own_file_key("http://127.0.0.1:9999/files/abc", s) is None
    assert own_file_key("http://127.0.0.1:8123/other/abc", s) is None
    assert own_file_key("http://127.0.0.1:8123/files/", s) is None
    plain = Settings(host="10.1.2.3", port=80)
    assert own_file_key("http://10.1.2.3/files/k/n.png", plain) == "k/n.png"
    assert own_file_key("http://127.0.0.1/files/k/n.png", plain) is None


def test_files_urls_on_unknown_hosts_read_our_store_first(
    settings: Settings, http_server: Callable[[], FixtureServer], tmp_path: Path
) -> None:
    store = open_file_store(f"file://{tmp_path / 'files'}")
    key = new_key("in.png")
    store.put(key, b"from the store", "image/png")
    fetcher = InputFetcher(settings, store)
    # A name this server cannot know it answers to (a LAN name, a proxy): no request is made.
    assert fetcher.fetch(f"http://lan-name.invalid:1234/files/{key}") == b"from the store"
    # A /files/ URL of somebody else's server: not in our store, so it is fetched.
    server = http_server()
    server.routes["/files/abc/other.png"] = Reply(200, b"from elsewhere")
    assert fetcher.fetch(f"{server.url}/files/abc/other.png") == b"from elsewhere"
    assert len(server.requests) == 1
