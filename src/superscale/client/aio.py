"""`AsyncClient`: the asyncio twin of `SyncClient`, with the same method names."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

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

# Callbacks may be plain functions or coroutines.
StatusCallback = Callable[[Status], Any]


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    outcome = callback(*args)
    if inspect.isawaitable(outcome):
        await outcome


@dataclass
class AsyncRequestHandle:
    """A submitted request: poll, stream, fetch or cancel it."""

    client: AsyncClient = field(repr=False)
    endpoint: str
    request_id: str
    response_url: str = field(default="", repr=False)
    status_url: str = field(default="", repr=False)
    cancel_url: str = field(default="", repr=False)

    async def status(self, *, with_logs: bool = False) -> Status:
        return await self.client.status(self.endpoint, self.request_id, with_logs=with_logs)

    def iter_events(
        self, *, with_logs: bool = False, interval: float | None = None
    ) -> AsyncIterator[Status]:
        """Poll until the request completes, yielding each status (the last is `Completed`)."""
        return self.client._poll(self.endpoint, self.request_id, with_logs, interval, None)

    def stream(self, *, with_logs: bool = False) -> AsyncIterator[Status]:
        """Status events pushed by the server (SSE) until the request completes."""
        return self.client.stream(self.endpoint, self.request_id, with_logs=with_logs)

    async def result(self) -> Any:
        """Wait for completion and return the output (raises the job's error, if any)."""
        return await self.client.result(self.endpoint, self.request_id)

    get = result  # fal_client's name

    async def cancel(self) -> None:
        await self.client.cancel(self.endpoint, self.request_id)


class AsyncClient:
    """An asyncio client for a superscale (or fal-compatible) server; see `SyncClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.key = resolve_key(key)
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._urls = Urls(self.base_url)
        self._http = http or httpx.AsyncClient(timeout=self.timeout)
        self._token: CdnToken | None = None
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- queue -------------------------------------------------------------------------

    async def submit(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        webhook_url: str | None = None,
        priority: str | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncRequestHandle:
        """Queue a request (uploading local data in `arguments` first); returns its handle."""
        payload = await self.upload_inputs(arguments)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self._send(
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
        return AsyncRequestHandle(
            self,
            endpoint,
            data["request_id"],
            str(data.get("response_url", "")),
            str(data.get("status_url", "")),
            str(data.get("cancel_url", "")),
        )

    def get_handle(self, endpoint: str, request_id: str) -> AsyncRequestHandle:
        return AsyncRequestHandle(self, endpoint, request_id)

    async def subscribe(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        on_enqueue: Callable[[str], Any] | None = None,
        on_queue_update: StatusCallback | None = None,
        with_logs: bool = False,
        timeout: float | None = None,
        interval: float | None = None,
        **submit_options: Any,
    ) -> Any:
        """Submit, wait for completion and return the output; on `timeout`, cancel the request
        on the server and raise `RequestTimeoutError`. Callbacks may be coroutines."""
        deadline = None if timeout is None else time.monotonic() + timeout
        handle: AsyncRequestHandle | None = None
        try:
            handle = await self.submit(endpoint, arguments, **submit_options)
            if on_enqueue is not None:
                await _call(on_enqueue, handle.request_id)
            logs = with_logs and on_queue_update is not None
            async for status in self._poll(endpoint, handle.request_id, logs, interval, deadline):
                if on_queue_update is not None:
                    await _call(on_queue_update, status)
            return await self._fetch_result(endpoint, handle.request_id, deadline)
        except asyncio.CancelledError:
            # Cancelled from outside (asyncio.wait_for, Ctrl-C): the caller never got the
            # handle, so cancel the request rather than leave the server working for nobody.
            if handle is not None:
                with contextlib.suppress(SuperscaleError):
                    await self.cancel(endpoint, handle.request_id)
            raise
        except RequestTimeoutError as exc:
            if deadline is None or time.monotonic() < deadline:
                raise  # the server's own deadline (504), not ours
            request_id = handle.request_id if handle else None
            if request_id is not None:
                with contextlib.suppress(SuperscaleError):
                    await self.cancel(endpoint, request_id)
            raise RequestTimeoutError(
                f"no result within {timeout} s; the request was cancelled",
                request_id=request_id,
            ) from exc

    async def status(self, endpoint: str, request_id: str, *, with_logs: bool = False) -> Status:
        return await self._status(endpoint, request_id, with_logs, None)

    async def result(self, endpoint: str, request_id: str) -> Any:
        """Wait until the request completes and return its output."""
        async for _ in self._poll(endpoint, request_id, False, None, None):
            pass
        return await self._fetch_result(endpoint, request_id)

    async def cancel(self, endpoint: str, request_id: str) -> None:
        """Ask the server to cancel; raises if it already completed or is unknown."""
        await self._send(
            "PUT", self._urls.cancel(endpoint, request_id), idempotent=True, request_id=request_id
        )

    async def stream(
        self, endpoint: str, request_id: str, *, with_logs: bool = False
    ) -> AsyncIterator[Status]:
        """Status events pushed by the server (SSE) until `Completed`; reconnects on drops."""
        url = self._urls.stream(endpoint, request_id)
        params = {"logs": "1" if with_logs else "0"}
        failures = 0
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    url,
                    params=params,
                    headers={**self._auth(url), "Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout.connect, read=None),
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_response(response, request_id)
                    async for event in EventSource(response).aiter_sse():
                        if not event.data.strip():
                            continue
                        status = parse_status(event.json())
                        failures = 0
                        yield status
                        if isinstance(status, Completed):
                            return
            except (httpx.TransportError, SSEError) as exc:
                failures += 1
                if failures > self.retry.max_retries:
                    raise NetworkError(
                        f"status stream broke: {exc}", request_id=request_id
                    ) from exc
                await asyncio.sleep(self.retry.delay(failures))
                continue
            # The server closed the stream before COMPLETED: reconnect (it resends the state).
            failures += 1
            if failures > self.retry.max_retries:
                raise NetworkError("status stream ended early", request_id=request_id)
            await asyncio.sleep(self.retry.delay(failures))

    # --- synchronous route -------------------------------------------------------------

    async def run(
        self, endpoint: str, arguments: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Run on the synchronous route, holding the connection until the output is ready."""
        payload = await self.upload_inputs(arguments)
        response = await self._send(
            "POST",
            self._urls.run(endpoint),
            idempotent=False,
            json=payload,
            timeout=httpx.Timeout(timeout, connect=self.timeout.connect),
        )
        return parse_output(endpoint, json_body(response), self._auth)

    # --- storage -----------------------------------------------------------------------

    async def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Store bytes on the server; returns their URL, usable as `image_url`."""
        for attempt in (1, 2):
            token = await self._cdn_token(refresh=attempt == 2)
            try:
                response = await self._send(
                    "POST",
                    f"{token.base_url}/files/upload",
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

    async def upload_file(self, path: str | Path) -> str:
        upload = await asyncio.to_thread(_inputs.read_path, path)
        return await self.upload(upload.data, upload.content_type, upload.file_name)

    async def upload_image(self, image: Any, format: str = "png") -> str:
        """Encode a PIL image (PNG by default) and upload it."""
        upload = await asyncio.to_thread(_inputs.encode_pil, image, format)
        return await self.upload(upload.data, upload.content_type, upload.file_name)

    async def upload_inputs(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A copy of `arguments` with local data uploaded, the uploads running concurrently."""
        values = _inputs.find_uploads(arguments)

        async def one(value: Any) -> str:
            upload = await asyncio.to_thread(_inputs.to_upload, value)
            return await self.upload(upload.data, upload.content_type, upload.file_name)

        urls = dict(zip(map(id, values), await asyncio.gather(*map(one, values)), strict=True))
        result: dict[str, Any] = _inputs.substitute(arguments, lambda v: urls[id(v)])
        return result

    # --- internals ---------------------------------------------------------------------

    def _auth(self, url: str) -> dict[str, str]:
        return auth_headers(self.key) if self._urls.same_origin(url) else {}

    async def _cdn_token(self, refresh: bool = False) -> CdnToken:
        async with self._token_lock:  # concurrent uploads share one token request
            if refresh or self._token is None or not self._token.fresh():
                response = await self._send(
                    "POST", self._urls.storage_token, idempotent=True, json={}
                )
                self._token = CdnToken.from_json(json_body(response))
            return self._token

    async def _status(
        self, endpoint: str, request_id: str, with_logs: bool, deadline: float | None
    ) -> Status:
        response = await self._send(
            "GET",
            self._urls.status(endpoint, request_id),
            idempotent=True,
            request_id=request_id,
            params={"logs": "1" if with_logs else "0"},
            deadline=deadline,
        )
        return parse_status(json_body(response))

    async def _poll(
        self,
        endpoint: str,
        request_id: str,
        with_logs: bool,
        interval: float | None,
        deadline: float | None,
    ) -> AsyncIterator[Status]:
        interval = self.poll_interval if interval is None else interval
        while True:
            status = await self._status(endpoint, request_id, with_logs, deadline)
            yield status
            if isinstance(status, Completed):
                return
            if deadline is not None and time.monotonic() + interval >= deadline:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                raise RequestTimeoutError("deadline passed", request_id=request_id)
            await asyncio.sleep(interval)

    async def _fetch_result(
        self, endpoint: str, request_id: str, deadline: float | None = None
    ) -> Any:
        response = await self._send(
            "GET",
            self._urls.request(endpoint, request_id),
            idempotent=True,
            request_id=request_id,
            deadline=deadline,
        )
        return parse_output(endpoint, json_body(response), self._auth)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        request_id: str | None = None,
        deadline: float | None = None,
        timeout: httpx.Timeout | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request with retries; returns a 2xx answer or raises the matching error."""
        headers = {**self._auth(url), **(headers or {})}
        retries = 0
        while True:
            request_timeout = deadline_timeout(deadline, timeout or self.timeout)
            response: httpx.Response | None
            try:
                response = await self._http.request(
                    method, url, headers=headers, timeout=request_timeout, **kwargs
                )
            except httpx.TimeoutException as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RequestTimeoutError(str(exc), request_id=request_id) from exc
                error: Exception = exc
                retry, response = self.retry.should_retry_error(exc, idempotent), None
            except httpx.TransportError as exc:
                error, retry, response = exc, self.retry.should_retry_error(exc, idempotent), None
            else:
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
            await asyncio.sleep(delay)
