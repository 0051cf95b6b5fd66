"""The client's logic, once, for both `SyncClient` and `AsyncClient`: sans-I/O flows.

A flow is a generator that yields what it needs done — send a request, sleep, open or read an
event stream, call the user back, hand a status to the caller — and is sent each answer (or
has the I/O error thrown into it). The retry and back-off policy, deadlines, polling, stream
reconnects, cancel-on-timeout and storage-token refresh live here; `sync.py` and `aio.py` are
the thin drivers that carry the actions out with `httpx.Client` or `httpx.AsyncClient` (the
shape of httpx's own `auth_flow` generators).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from httpx_sse import ServerSentEvent, SSEError

from superscale.client import _inputs
from superscale.client._protocol import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    CdnToken,
    RetryPolicy,
    Urls,
    access_url,
    auth_headers,
    deadline_timeout,
    json_body,
    resolve_base_url,
    resolve_key,
    submit_headers,
)
from superscale.client.errors import (
    NetworkError,
    RequestTimeoutError,
    SuperscaleError,
    error_from_response,
    error_from_transport,
)
from superscale.client.results import parse_output
from superscale.client.status import Completed, Status, parse_status

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)

# Interruptions of the caller's wait: Ctrl-C, or an asyncio task cancelled from outside.
INTERRUPTS = (KeyboardInterrupt, asyncio.CancelledError)


# --- what a flow asks its driver to do ------------------------------------------------------
@dataclass
class Send:
    """One HTTP request; answered with the `httpx.Response` (whatever its status)."""

    method: str
    url: str
    timeout: httpx.Timeout
    headers: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)  # params, json, content


@dataclass
class Sleep:
    seconds: float


@dataclass
class OpenStream:
    """Open a streamed GET; answered with a driver-owned stream whose `response` is set (its
    body already read when the status is an error)."""

    url: str
    timeout: httpx.Timeout
    headers: dict[str, str]
    params: dict[str, str]


@dataclass
class NextEvent:
    """The stream's next server-sent event; None when the server ended the stream."""

    stream: Any


@dataclass
class CloseStream:
    stream: Any


@dataclass
class Call:
    """Call the user back (`await` it too in async code when it returns an awaitable)."""

    callback: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass
class UploadLocal:
    """Upload the local data (paths, bytes, files, PIL images) anywhere in `arguments`; answered
    with a copy that holds their URLs instead (the async driver uploads them concurrently)."""

    arguments: dict[str, Any]


@dataclass
class Blocking:
    """A blocking call (reading a file, encoding an image): the async driver runs it in a thread."""

    function: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass
class Emit:
    """Hand a value to the caller of an iterating method (`stream`, `iter_events`)."""

    value: Any


Action = Send | Sleep | OpenStream | NextEvent | CloseStream | Call | UploadLocal | Blocking | Emit
Flow = Generator[Action, Any, T]


@dataclass
class Submitted:
    """What a submit answered: the request id and the URLs the server gave for it."""

    request_id: str
    response_url: str = ""
    status_url: str = ""
    cancel_url: str = ""


@dataclass
class HandleFields:
    """What a request handle holds; `SyncRequestHandle` and `AsyncRequestHandle` add the calls."""

    client: Any = field(repr=False)
    endpoint: str
    request_id: str
    response_url: str = field(default="", repr=False)
    status_url: str = field(default="", repr=False)
    cancel_url: str = field(default="", repr=False)


Hd = TypeVar("Hd", bound=HandleFields)  # the driver's request handle


class ClientCore(Generic[H, Hd]):
    """Configuration and flows shared by both clients (see the module docstring). `H` is the
    driver's httpx client class (built by `_new_http` unless one is given), `Hd` its request
    handle class (built by `_new_handle`). The flows named after a public method (`submit_flow`
    → `submit`) carry its signature and docstring: the drivers turn them into methods."""

    _handle_class: type[Hd]

    def __init__(
        self,
        base_url: str | None = None,
        key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        http: H | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.key = resolve_key(key)
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._urls = Urls(self.base_url)
        self._token: CdnToken | None = None
        self._http: H = http if http is not None else self._new_http(self.timeout)

    @staticmethod
    def _new_http(timeout: httpx.Timeout) -> H:
        raise NotImplementedError

    def _new_handle(self, endpoint: str, submitted: Submitted) -> Hd:
        return self._handle_class(
            self,
            endpoint,
            submitted.request_id,
            submitted.response_url,
            submitted.status_url,
            submitted.cancel_url,
        )

    def get_handle(self, endpoint: str, request_id: str) -> Hd:
        """The handle of a request submitted earlier (by id)."""
        return self._handle_class(self, endpoint, request_id)

    def _auth(self, url: str) -> dict[str, str]:
        """The key, for URLs on this server only."""
        return auth_headers(self.key) if self._urls.same_origin(url) else {}

    # --- one request, retried ------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        request_id: str | None = None,
        deadline: float | None = None,
        timeout: httpx.Timeout | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Flow[httpx.Response]:
        """One request with retries; returns a 2xx answer or raises the matching error."""
        headers = {**self._auth(url), **(headers or {})}
        retries = 0
        while True:
            request_timeout = deadline_timeout(deadline, timeout or self.timeout)
            response: httpx.Response | None
            try:
                response = yield Send(method, url, request_timeout, headers, options)
            except httpx.TimeoutException as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RequestTimeoutError(str(exc), request_id=request_id) from exc
                error: Exception = exc
                retry, response = self.retry.should_retry_error(exc, idempotent), None
            except httpx.TransportError as exc:
                error, retry, response = exc, self.retry.should_retry_error(exc, idempotent), None
            else:
                assert response is not None
                if response.is_success:
                    return response
                error = error_from_response(response, request_id)
                retry = self.retry.should_retry_status(response, idempotent)
            delay = self.retry.delay(retries + 1, response)
            late = deadline is not None and time.monotonic() + delay >= deadline
            if not retry or retries >= self.retry.max_retries or late:
                if isinstance(error, SuperscaleError):
                    raise error
                raise error_from_transport(method, url, error, request_id) from error
            retries += 1
            yield Sleep(delay)

    # --- the queue -----------------------------------------------------------------------
    def submit_flow(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        webhook_url: str | None = None,
        priority: str | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[Hd]:
        """Queue a request (uploading local data in `arguments` first); returns its handle.

        `start_timeout` is a server-side deadline: a job not started by then ends with 504.
        """
        payload = yield UploadLocal(arguments)
        submitted = yield from self._submit(
            endpoint, payload, webhook_url, priority, start_timeout, headers
        )
        return self._new_handle(endpoint, submitted)

    def _submit(
        self,
        endpoint: str,
        payload: dict[str, Any],
        webhook_url: str | None,
        priority: str | None,
        start_timeout: float | None,
        headers: dict[str, str] | None,
    ) -> Flow[Submitted]:
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = yield from self._send(
            "POST",
            self._urls.submit(endpoint),
            idempotent=False,
            json=payload,
            params=params,
            headers={**submit_headers(priority, start_timeout), **(headers or {})},
        )
        data = json_body(response)
        if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
            raise SuperscaleError(f"malformed submit answer: {data!r:.200}", body=data)
        return Submitted(
            data["request_id"],
            str(data.get("response_url", "")),
            str(data.get("status_url", "")),
            str(data.get("cancel_url", "")),
        )

    def status_flow(
        self, endpoint: str, request_id: str, *, with_logs: bool = False
    ) -> Flow[Status]:
        """The request's current status (`Queued`, `InProgress` or `Completed`)."""
        return (yield from self._status(endpoint, request_id, with_logs, None))

    def _status(
        self, endpoint: str, request_id: str, with_logs: bool, deadline: float | None
    ) -> Flow[Status]:
        response = yield from self._send(
            "GET",
            self._urls.status(endpoint, request_id),
            idempotent=True,
            request_id=request_id,
            params={"logs": "1" if with_logs else "0"},
            deadline=deadline,
        )
        return parse_status(json_body(response))

    def poll_flow(
        self,
        endpoint: str,
        request_id: str,
        with_logs: bool,
        interval: float | None,
        deadline: float | None,
        on_status: Callable[[Status], Any] | None = None,
    ) -> Flow[None]:
        """Poll until `Completed`; each status goes to `on_status`, or to the caller (Emit)."""
        interval = self.poll_interval if interval is None else interval
        while True:
            status = yield from self._status(endpoint, request_id, with_logs, deadline)
            yield Emit(status) if on_status is None else Call(on_status, (status,))
            if isinstance(status, Completed):
                return
            if deadline is not None and time.monotonic() + interval >= deadline:
                yield Sleep(max(0.0, deadline - time.monotonic()))
                raise RequestTimeoutError("deadline passed", request_id=request_id)
            yield Sleep(interval)

    def _fetch_result(
        self, endpoint: str, request_id: str, deadline: float | None = None
    ) -> Flow[Any]:
        response = yield from self._send(
            "GET",
            self._urls.request(endpoint, request_id),
            idempotent=True,
            request_id=request_id,
            deadline=deadline,
        )
        return parse_output(endpoint, json_body(response), self._auth)

    def result_flow(self, endpoint: str, request_id: str) -> Flow[Any]:
        """Wait until the request completes and return its output (raises its error, if any)."""
        yield from self.poll_flow(endpoint, request_id, False, None, None, on_status=_ignore)
        return (yield from self._fetch_result(endpoint, request_id))

    def cancel_flow(self, endpoint: str, request_id: str) -> Flow[None]:
        """Ask the server to cancel; raises if it already completed or is unknown."""
        url = self._urls.cancel(endpoint, request_id)
        yield from self._send("PUT", url, idempotent=True, request_id=request_id)

    def subscribe_flow(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        on_enqueue: Callable[[str], Any] | None = None,
        on_queue_update: Callable[[Status], Any] | None = None,
        with_logs: bool = False,
        timeout: float | None = None,
        interval: float | None = None,
        webhook_url: str | None = None,
        priority: str | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[Any]:
        """Submit (uploading local data in `arguments` first), wait for completion and return
        the output.

        `on_queue_update` gets every polled status (with logs if `with_logs`); callbacks may
        be coroutines in async code. When `timeout` seconds pass first, the request is
        cancelled on the server and `RequestTimeoutError` is raised; an interrupted wait
        (Ctrl-C, a cancelled task) cancels it too.
        """
        payload = yield UploadLocal(arguments)
        deadline = None if timeout is None else time.monotonic() + timeout
        submitted: Submitted | None = None
        try:
            submitted = yield from self._submit(
                endpoint, payload, webhook_url, priority, start_timeout, headers
            )
            if on_enqueue is not None:
                yield Call(on_enqueue, (submitted.request_id,))
            yield from self.poll_flow(
                endpoint,
                submitted.request_id,
                with_logs and on_queue_update is not None,
                interval,
                deadline,
                on_status=on_queue_update or _ignore,
            )
            return (yield from self._fetch_result(endpoint, submitted.request_id, deadline))
        except INTERRUPTS:
            if submitted is not None:  # the caller never got the handle
                yield from self._cancel_quietly(endpoint, submitted.request_id)
            raise
        except RequestTimeoutError as exc:
            if deadline is None or time.monotonic() < deadline:
                raise  # the server's own deadline (504), not ours
            request_id = submitted.request_id if submitted else None
            if request_id is not None:
                yield from self._cancel_quietly(endpoint, request_id)
            raise RequestTimeoutError(
                f"no result within {timeout} s; the request was cancelled",
                request_id=request_id,
            ) from exc

    def _cancel_quietly(self, endpoint: str, request_id: str) -> Flow[None]:
        with contextlib.suppress(SuperscaleError):
            yield from self.cancel_flow(endpoint, request_id)

    def stream_flow(self, endpoint: str, request_id: str, *, with_logs: bool = False) -> Flow[None]:
        """Status events pushed by the server (SSE) until `Completed`; reconnects on drops."""
        url = self._urls.stream(endpoint, request_id)
        params = {"logs": "1" if with_logs else "0"}
        headers = {**self._auth(url), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self.timeout.connect, read=None)
        tries = _Tries()  # broken connections in a row; a status heard resets it
        while True:
            try:
                stream = yield OpenStream(url, timeout, headers, params)
                try:
                    completed = yield from self._events(stream, request_id, tries)
                except GeneratorExit:
                    raise  # the driver closes its streams itself
                except BaseException:
                    yield CloseStream(stream)
                    raise
                yield CloseStream(stream)
                if completed:
                    return
            except (httpx.TransportError, SSEError) as exc:
                tries.failures += 1
                if tries.failures > self.retry.max_retries:
                    raise NetworkError(
                        f"status stream broke: {exc}", request_id=request_id
                    ) from exc
                yield Sleep(self.retry.delay(tries.failures))
                continue
            # The server closed the stream before COMPLETED: reconnect (it resends the state).
            tries.failures += 1
            if tries.failures > self.retry.max_retries:
                raise NetworkError("status stream ended early", request_id=request_id)
            yield Sleep(self.retry.delay(tries.failures))

    @staticmethod
    def _events(stream: Any, request_id: str, tries: _Tries) -> Flow[bool]:
        """Hand on the statuses of one connection; True once `Completed` was among them."""
        if stream.response.is_error:
            raise error_from_response(stream.response, request_id)
        while True:
            event: ServerSentEvent | None = yield NextEvent(stream)
            if event is None:
                return False
            if not event.data.strip():
                continue
            status = parse_status(event.json())
            tries.failures = 0
            yield Emit(status)
            if isinstance(status, Completed):
                return True

    # --- the synchronous route -----------------------------------------------------------
    def run_flow(
        self, endpoint: str, arguments: dict[str, Any], *, timeout: float | None = None
    ) -> Flow[Any]:
        """Run on the synchronous route, holding the connection until the output is ready."""
        payload = yield UploadLocal(arguments)
        response = yield from self._send(
            "POST",
            self._urls.run(endpoint),
            idempotent=False,
            json=payload,
            timeout=httpx.Timeout(timeout, connect=self.timeout.connect),
        )
        return parse_output(endpoint, json_body(response), self._auth)

    # --- storage -------------------------------------------------------------------------
    def token_flow(self, refresh: bool = False) -> Flow[CdnToken]:
        """The storage token, fetched when missing, near its expiry, or `refresh`."""
        if refresh or self._token is None or not self._token.fresh():
            response = yield from self._send(
                "POST", self._urls.storage_token, idempotent=True, json={}
            )
            self._token = CdnToken.from_json(json_body(response))
        return self._token

    def upload_flow(
        self, data: bytes, content_type: str, file_name: str | None = None
    ) -> Flow[str]:
        """Store bytes on the server; returns their URL, usable as `image_url`."""
        for attempt in (1, 2):
            token = yield from self.token_flow(refresh=attempt == 2)
            try:
                response = yield from self._send(
                    "POST",
                    f"{token.base_url}/files/upload",  # fal's storage upload route
                    idempotent=False,
                    content=data,
                    headers=token.upload_headers(content_type, file_name),
                )
            except SuperscaleError as exc:
                if exc.status_code == 401 and attempt == 1:
                    continue  # the token was revoked or expired early: fetch a new one
                raise
            return access_url(json_body(response))
        raise AssertionError("unreachable")

    def upload_file_flow(self, path: str | Path) -> Flow[str]:
        """Upload a local file; returns its URL."""
        upload = yield Blocking(_inputs.read_path, (path,))
        return (yield from self.upload_flow(upload.data, upload.content_type, upload.file_name))

    def upload_image_flow(self, image: Any, format: str = "png") -> Flow[str]:
        """Encode a PIL image (PNG by default) and upload it."""
        upload = yield Blocking(_inputs.encode_pil, (image, format))
        return (yield from self.upload_flow(upload.data, upload.content_type, upload.file_name))


@dataclass
class _Tries:
    failures: int = 0


def _ignore(status: Status) -> None:
    """A status nobody asked to see."""


def present_as(method: Callable[..., Any], flow: Callable[..., Any]) -> None:
    """Give a driver's method the name, docstring and signature of the flow it runs."""
    method.__name__ = method.__qualname__ = flow.__name__.removesuffix("_flow")
    method.__doc__ = flow.__doc__
    method.__signature__ = inspect.signature(flow)  # type: ignore[attr-defined]


@dataclass
class Done:
    """The flow returned `value`."""

    value: Any


class Stepper:
    """Advances a flow one action at a time, feeding it the last answer or error: the part of
    running a flow that is the same in both drivers."""

    def __init__(self, flow: Flow[Any]) -> None:
        self.flow = flow
        self.answer: Any = None
        self.error: BaseException | None = None

    def next(self) -> Action | Done:
        answer, error, self.answer, self.error = self.answer, self.error, None, None
        try:
            return self.flow.throw(error) if error is not None else self.flow.send(answer)
        except StopIteration as stop:
            return Done(stop.value)
