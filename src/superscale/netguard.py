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

import contextvars
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


# --- a total time budget for everything a request does ---------------------------------------
# httpx's timeouts bound each network operation, not their sum: a peer that drips one byte of
# its headers at a time holds a request for ever. Within `budget(...)`, the backend bounds the
# DNS lookup, the connect and every read and write by what is left of one deadline, and wakes
# up every `POLL` seconds to ask `should_cancel`.

POLL = 0.25


class Interrupted(Exception):
    """`should_cancel()` said to stop while the request was waiting on the network."""


@dataclass
class _Budget:
    deadline: float  # time.monotonic()
    should_cancel: Callable[[], bool] | None
    next_poll: float = 0.0  # should_cancel may cost a database read: at most once per POLL

    def cancelled(self) -> bool:
        now = time.monotonic()
        if self.should_cancel is None or now < self.next_poll:
            return False
        self.next_poll = now + POLL
        return self.should_cancel()


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


@contextmanager
def budget(seconds: float, should_cancel: Callable[[], bool] | None = None) -> Iterator[None]:
    """Every request made inside (redirect hops and DNS lookups included) ends within
    `seconds` of entering, with httpx's timeout errors, or with `Interrupted` soon after
    `should_cancel()` turns true."""
    token = _budget.set(_Budget(time.monotonic() + seconds, should_cancel))
    try:
        yield
    finally:
        _budget.reset(token)


def _wait_slice(timeout: float | None, error: type[Exception]) -> float | None:
    """How long the next blocking step may wait: the operation's own timeout, cut to what is
    left of the budget and to one poll. Raises `error` when the budget is spent, `Interrupted`
    when cancelled."""
    current = _budget.get()
    if current is None:
        return timeout
    if current.cancelled():
        raise Interrupted("cancelled")
    left = current.deadline - time.monotonic()
    if left <= 0:
        raise error("the total time for the request ran out")
    wait = min(left, POLL) if current.should_cancel is not None else left
    return wait if timeout is None else min(timeout, wait)


def _repeat(
    step: Callable[[float | None], Any], timeout: float | None, error: type[Exception]
) -> Any:
    """Run a blocking step in slices (see `_wait_slice`) until it completes, its own timeout
    passes, or the budget says stop."""
    started = time.monotonic()
    while True:
        wait = _wait_slice(timeout, error)
        try:
            return step(wait)
        except error:
            if timeout is not None and time.monotonic() - started >= timeout:
                raise
            if _budget.get() is None:
                raise


class _BudgetedStream(httpcore.NetworkStream):
    """A network stream whose reads and writes stay within the current budget."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = _repeat(
            lambda wait: self._stream.read(max_bytes, wait), timeout, httpcore.ReadTimeout
        )
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _repeat(lambda wait: self._stream.write(buffer, wait), timeout, httpcore.WriteTimeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _wait_slice(timeout, httpcore.ConnectTimeout)
        return _BudgetedStream(self._stream.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _resolve_within_budget(host: str, port: int, check: Callable[[str, int], Any]) -> Any:
    """`check(host, port)` (a DNS lookup), given up on when the budget runs out: the lookup
    thread is left to finish on its own (getaddrinfo cannot be interrupted)."""
    if _budget.get() is None:
        return check(host, port)
    outcome: list[Any] = []

    def lookup() -> None:
        try:
            outcome.append((True, check(host, port)))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=lookup, name="dns-lookup", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_wait_slice(None, httpcore.ConnectTimeout))
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class GuardedBackend(httpcore.SyncBackend):
    """An httpcore network backend that vets each host and connects to the vetted address
    (with `guard` False, it connects to whatever the host resolves to), all within the
    current `budget`."""

    def __init__(self, allow: AllowHook | None = None, guard: bool = True) -> None:
        self._allow = allow
        self._guard = guard

    def _addresses(self, host: str, port: int) -> list[IPAddress]:
        exempt = not self._guard or (self._allow is not None and self._allow(host, port))
        return list(_resolve_within_budget(host, port, resolve if exempt else vet))

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for ip in self._addresses(host, port):
            try:
                wait = _wait_slice(timeout, httpcore.ConnectTimeout)
                stream = super().connect_tcp(str(ip), port, wait, local_address, socket_options)
                return _BudgetedStream(stream)
            except httpcore.ConnectError as exc:  # try the next vetted address
                last = exc
        assert last is not None
        raise last


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool built on the guarded backend."""

    def __init__(
        self,
        allow: AllowHook | None = None,
        verify: ssl.SSLContext | bool = True,
        guard: bool = True,
    ) -> None:
        super().__init__(trust_env=False)
        # httpx does not take a network backend, so swap the pool it built for one that has
        # ours; everything else (request/response mapping, errors) stays httpx's.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=GuardedBackend(allow, guard),
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
    return httpx.Client(
        transport=GuardedTransport(allow, verify, guard),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
