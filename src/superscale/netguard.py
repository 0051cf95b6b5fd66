"""SSRF guard for outbound HTTP: fetched inputs and webhook deliveries.

A user-supplied URL must never make the server talk to itself, its network or the cloud
metadata service. The guard sits in the connection layer, not in URL parsing: every TCP
connection httpx opens (the first request and every redirect hop) resolves the host once,
refuses it unless every address is public, and connects to exactly the address it vetted — so
a DNS answer that changes between check and connect (rebinding) cannot slip through. TLS still
verifies the certificate against the URL's host name (SNI and Host are untouched).

Numeric host spellings (`2130706433`, `0x7f000001`, `0177.0.0.1`) resolve through the same
`getaddrinfo` call as the C library would, so they are classified by the address they mean.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Exempts one (host, port) from the guard; for tests that fetch from a loopback fixture server.
AllowHook = Callable[[str, int], bool]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, not routable publicly


class Refused(Exception):
    """The host is not a public internet address; the request was not made."""


def refusal_reason(ip: IPAddress) -> str | None:
    """Why this address may not be contacted, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one is judged by the IPv4 address.
        embedded = ip.ipv4_mapped or (ip.sixtofour if ip.sixtofour else None)
        if embedded is None and ip.teredo:
            embedded = ip.teredo[1]
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal_reason(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
    for reason, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("non-global", not ip.is_global),
    ):
        if hit:
            return reason
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses `host` resolves to, in the resolver's order. Raises Refused when none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"cannot resolve host {host!r}: {exc}") from exc
    seen: list[IPAddress] = []
    for info in infos:
        # Drop an IPv6 zone ("fe80::1%eth0"): the address itself decides.
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    if not seen:
        raise Refused(f"host {host!r} has no address")
    return seen


def vet(host: str, port: int) -> list[IPAddress]:
    """Resolve `host` and return its addresses if all are public; raise Refused otherwise."""
    addresses = resolve(host, port)
    for ip in addresses:
        reason = refusal_reason(ip)
        if reason:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise Refused(f"{shown} is a {reason} address; only public hosts may be fetched")
    return addresses


class GuardedBackend(httpcore.SyncBackend):
    """An httpcore network backend that vets each host and connects to the vetted address."""

    def __init__(self, allow: AllowHook | None = None) -> None:
        self._allow = allow

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._allow is not None and self._allow(host, port):
            addresses = resolve(host, port)
        else:
            addresses = vet(host, port)
        last: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the next vetted address
                last = exc
        assert last is not None
        raise last


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool built on the guarded backend."""

    def __init__(
        self, allow: AllowHook | None = None, verify: ssl.SSLContext | bool = True
    ) -> None:
        super().__init__(trust_env=False)
        # httpx does not take a network backend, so swap the pool it built for one that has
        # ours; everything else (request/response mapping, errors) stays httpx's.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=GuardedBackend(allow),
        )


def client(
    *,
    guard: bool = True,
    timeout: float = 30.0,
    allow: AllowHook | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Client:
    """An httpx client for user-supplied URLs: guarded unless `guard` is False, never proxied
    through environment settings, redirects left to the caller (each hop is guarded anyway).
    `verify`: True (system CAs) or an SSLContext (say, one trusting a private CA)."""
    transport = (
        GuardedTransport(allow, verify)
        if guard
        else httpx.HTTPTransport(verify=verify, trust_env=False)
    )
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
