"""The SSRF guard: address classes, numeric host spellings, and that nothing is ever connected
to before the address is vetted. Only loopback servers are ever contacted."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fixture_http import FixtureServer, Reply
from superscale import netguard
from superscale.worker.fetch import InputError, InputFetcher

from .conftest import localhost_certificate

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "10.0.0.1": "private",
    "172.16.5.4": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "100.64.0.1": "shared (CGNAT)",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "::ffff:127.0.0.1": "loopback (embedded in IPv6)",
    "::ffff:169.254.169.254": "link-local (embedded in IPv6)",
    "2002:7f00:1::": "loopback (embedded in IPv6)",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local (embedded in IPv6)",  # NAT64 of 169.254.169.254
}


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
def test_refused_address_classes(address: str, reason: str) -> None:
    assert netguard.refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert netguard.refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "localhost", "::1", "0"]
)
def test_numeric_and_named_loopback_spellings_are_refused(host: str) -> None:
    with pytest.raises(netguard.Refused, match=r"loopback|unspecified"):
        netguard.vet(host, 80)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connect attempt httpcore makes (recorded, then performed as usual)."""
    seen: list[tuple[str, int]] = []
    real = socket.create_connection

    def record(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        seen.append(address)
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", record)
    return seen


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "https://127.0.0.1/",
    ],
)
def test_guarded_client_refuses_before_connecting(url: str, connects: list[object]) -> None:
    # httpx itself rejects the octal dotted form as an invalid URL; either way, no connect.
    with netguard.client() as client, pytest.raises((netguard.Refused, httpx.InvalidURL)):
        client.get(url)
    assert connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://localhost:1/",
        "ftp://example.com/x.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ],
)
def test_fetcher_turns_every_refusal_into_an_input_error(
    settings,
    url: str,
    connects: list[object],  # type: ignore[no-untyped-def]
) -> None:
    settings.ssrf_guard = True
    with pytest.raises(InputError) as caught:
        InputFetcher(settings, file_store=None).fetch(url)  # type: ignore[arg-type]
    error = caught.value.to_job_error()
    assert error.status_code == 422 and error.detail[0]["loc"] == ["body", "image_url"]
    assert connects == []


def test_guarded_client_refuses_a_live_loopback_server(
    http_server: Callable[[], FixtureServer], connects: list[object]
) -> None:
    server = http_server()
    server.routes["/x"] = Reply(200, b"secret")
    with netguard.client() as client, pytest.raises(netguard.Refused, match="loopback"):
        client.get(f"{server.url}/x")
    assert server.requests == [] and connects == []


def test_allow_hook_exempts_only_its_host_and_port(
    http_server: Callable[[], FixtureServer], connects: list[tuple[str, int]]
) -> None:
    server = http_server()
    server.routes["/x"] = Reply(200, b"hello")
    allow = lambda host, port: (host, port) == ("127.0.0.1", server.port)  # noqa: E731
    with netguard.client(allow=allow) as client:
        assert client.get(f"{server.url}/x").content == b"hello"
        with pytest.raises(netguard.Refused):
            client.get(f"http://localhost:{server.port}/x")
    # Connected once, to the vetted numeric address.
    assert connects == [("127.0.0.1", server.port)]


def _guarded_fetcher(settings, first_hop: FixtureServer) -> InputFetcher:  # type: ignore[no-untyped-def]
    settings.ssrf_guard = True
    allow = lambda host, port: (host, port) == ("127.0.0.1", first_hop.port)  # noqa: E731
    return InputFetcher(settings, file_store=None, allow=allow)  # type: ignore[arg-type]


@pytest.mark.parametrize("target_host", ["127.0.0.1", "2130706433", "[::ffff:127.0.0.1]"])
def test_redirect_to_loopback_is_refused_at_the_second_hop(
    settings,
    http_server: Callable[[], FixtureServer],
    target_host: str,  # type: ignore[no-untyped-def]
) -> None:
    first, target = http_server(), http_server()
    target.routes["/img"] = Reply(200, b"internal")
    first.routes["/start"] = Reply(
        302, headers={"Location": f"http://{target_host}:{target.port}/img"}
    )
    fetcher = _guarded_fetcher(settings, first)
    with pytest.raises(InputError, match="refused") as caught:
        fetcher.fetch(f"{first.url}/start")
    assert caught.value.to_job_error().status_code == 422
    assert caught.value.to_job_error().detail[0]["loc"] == ["body", "image_url"]
    assert len(first.requests) == 1 and target.requests == []


def test_redirect_to_metadata_address_is_refused(
    settings,
    http_server: Callable[[], FixtureServer],
    connects: list[tuple[str, int]],  # type: ignore[no-untyped-def]
) -> None:
    first = http_server()
    first.routes["/start"] = Reply(301, headers={"Location": "http://169.254.169.254/latest/"})
    with pytest.raises(InputError, match=r"169\.254\.169\.254 is a link-local address"):
        _guarded_fetcher(settings, first).fetch(f"{first.url}/start")
    assert connects == [("127.0.0.1", first.port)]


def test_guard_off_reaches_loopback(settings, http_server: Callable[[], FixtureServer]) -> None:  # type: ignore[no-untyped-def]
    server = http_server()
    server.routes["/x"] = Reply(200, b"ok")
    assert not settings.ssrf_guard
    assert InputFetcher(settings, file_store=None).fetch(f"{server.url}/x") == b"ok"  # type: ignore[arg-type]


def test_guarded_transport_keeps_httpx_errors(closed_port: int) -> None:
    allow = lambda host, port: True  # noqa: E731
    with netguard.client(allow=allow, timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{closed_port}/")


def test_pinned_connection_keeps_tls_name_verification(
    http_server: Callable[..., FixtureServer], connects: list[tuple[str, int]], tmp_path: Path
) -> None:
    cert, key = localhost_certificate(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server = http_server(tls=server_tls)
    server.routes["/x"] = Reply(200, b"over tls")
    allow = lambda host, port: port == server.port  # noqa: E731
    with netguard.client(allow=allow, verify=ssl.create_default_context(cafile=cert)) as client:
        # The socket goes to the vetted address; the certificate is checked for the name.
        assert client.get(f"https://localhost:{server.port}/x").content == b"over tls"
        assert connects == [("127.0.0.1", server.port)]
        # By address the certificate (issued to `localhost` only) does not match: refused.
        with pytest.raises(httpx.ConnectError, match=r"certificate|hostname|IP address"):
            client.get(f"https://127.0.0.1:{server.port}/x")
