"""`AsyncClient`: the asyncio twin of `SyncClient` — the same `ClientCore` flows (`_core.py`)
carried out with `httpx.AsyncClient`, with the same method names. Callbacks may be coroutines;
uploads of several local inputs run concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource, ServerSentEvent

from superscale.client import _core, _inputs
from superscale.client.status import Status

T = TypeVar("T")
# Callbacks may be plain functions or coroutines.
StatusCallback = Callable[[Status], Any]


@dataclass
class AsyncRequestHandle(_core.HandleFields):
    """A submitted request: poll, stream, fetch or cancel it."""

    client: AsyncClient = field(repr=False)

    async def status(self, *, with_logs: bool = False) -> Status:
        return await self.client.status(self.endpoint, self.request_id, with_logs=with_logs)

    def iter_events(
        self, *, with_logs: bool = False, interval: float | None = None
    ) -> AsyncIterator[Status]:
        """Poll until the request completes, yielding each status (the last is `Completed`)."""
        flow = self.client.poll_flow(self.endpoint, self.request_id, with_logs, interval, None)
        return self.client._iterate(flow)

    def stream(self, *, with_logs: bool = False) -> AsyncIterator[Status]:
        """Status events pushed by the server (SSE) until the request completes."""
        return self.client.stream(self.endpoint, self.request_id, with_logs=with_logs)

    async def result(self) -> Any:
        """Wait for completion and return the output (raises the job's error, if any)."""
        return await self.client.result(self.endpoint, self.request_id)

    get = result  # fal_client's name

    async def cancel(self) -> None:
        await self.client.cancel(self.endpoint, self.request_id)


class _Stream:
    """An open server-sent event stream."""

    def __init__(self) -> None:
        self._exit = contextlib.AsyncExitStack()

    async def open(self, http: httpx.AsyncClient, action: _core.OpenStream) -> _Stream:
        self.response = await self._exit.enter_async_context(
            http.stream(
                "GET",
                action.url,
                params=action.params,
                headers=action.headers,
                timeout=action.timeout,
            )
        )
        if self.response.is_error:
            await self.response.aread()
        self._events = EventSource(self.response).aiter_sse()
        return self

    async def next(self) -> ServerSentEvent | None:
        return await anext(self._events, None)

    async def close(self) -> None:
        await self._exit.aclose()


class AsyncClient(_core.ClientCore[httpx.AsyncClient]):
    """An asyncio client for a superscale (or fal-compatible) server; see `SyncClient`."""

    @staticmethod
    def _new_http(timeout: httpx.Timeout) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the driver ----------------------------------------------------------------------
    async def _iterate(
        self, flow: _core.Flow[Any], returned: list[Any] | None = None
    ) -> AsyncIterator[Any]:
        """Carry a flow's actions out, yielding what it emits (and appending what it returns
        to `returned`: an async generator cannot return a value)."""
        stepper, streams = _core.Stepper(flow), list[_Stream]()
        try:
            while not isinstance(action := stepper.next(), _core.Done):
                if isinstance(action, _core.Emit):
                    yield action.value
                    continue
                try:
                    stepper.answer = await self._do(action, streams)
                except BaseException as exc:  # the flow decides: retry, clean up, or raise
                    stepper.error = exc
            if returned is not None:
                returned.append(action.value)
        finally:
            for stream in streams:
                await stream.close()
            flow.close()

    async def _run(self, flow: _core.Flow[T]) -> T:
        """Carry a flow's actions out; what it returns."""
        returned: list[T] = []
        async for _ in self._iterate(flow, returned):
            raise AssertionError("this flow hands values to a caller: iterate it")
        return returned[0]

    async def _do(self, action: _core.Action, streams: list[_Stream]) -> Any:
        if isinstance(action, _core.Send):
            return await self._http.request(
                action.method,
                action.url,
                headers=action.headers,
                timeout=action.timeout,
                **action.options,
            )
        if isinstance(action, _core.Sleep):
            await asyncio.sleep(action.seconds)
        elif isinstance(action, _core.Call):
            outcome = action.callback(*action.args)
            if inspect.isawaitable(outcome):
                await outcome
        elif isinstance(action, _core.OpenStream):
            streams.append(_Stream())
            return await streams[-1].open(self._http, action)
        elif isinstance(action, _core.NextEvent):
            return await action.stream.next()
        elif isinstance(action, _core.CloseStream):
            await action.stream.close()
        return None

    # --- the queue -----------------------------------------------------------------------
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
        flow = self.submit_flow(endpoint, payload, webhook_url, priority, start_timeout, headers)
        return self._handle(endpoint, await self._run(flow))

    def _handle(self, endpoint: str, submitted: _core.Submitted) -> AsyncRequestHandle:
        return AsyncRequestHandle(
            self,
            endpoint,
            submitted.request_id,
            submitted.response_url,
            submitted.status_url,
            submitted.cancel_url,
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
        webhook_url: str | None = None,
        priority: str | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Submit, wait for completion and return the output; on `timeout`, or when the task
        is cancelled, cancel the request on the server (`RequestTimeoutError` on timeout)."""
        payload = await self.upload_inputs(arguments)
        return await self._run(
            self.subscribe_flow(
                endpoint,
                payload,
                on_enqueue=on_enqueue,
                on_queue_update=on_queue_update,
                with_logs=with_logs,
                timeout=timeout,
                interval=interval,
                webhook_url=webhook_url,
                priority=priority,
                start_timeout=start_timeout,
                headers=headers,
            )
        )

    async def status(self, endpoint: str, request_id: str, *, with_logs: bool = False) -> Status:
        return await self._run(self.status_flow(endpoint, request_id, with_logs))

    async def result(self, endpoint: str, request_id: str) -> Any:
        """Wait until the request completes and return its output."""
        return await self._run(self.result_flow(endpoint, request_id))

    async def cancel(self, endpoint: str, request_id: str) -> None:
        """Ask the server to cancel; raises if it already completed or is unknown."""
        await self._run(self.cancel_flow(endpoint, request_id))

    def stream(
        self, endpoint: str, request_id: str, *, with_logs: bool = False
    ) -> AsyncIterator[Status]:
        """Status events pushed by the server (SSE) until `Completed`; reconnects on drops."""
        return self._iterate(self.stream_flow(endpoint, request_id, with_logs))

    # --- the synchronous route -----------------------------------------------------------
    async def run(
        self, endpoint: str, arguments: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Run on the synchronous route, holding the connection until the output is ready."""
        payload = await self.upload_inputs(arguments)
        return await self._run(self.run_flow(endpoint, payload, timeout))

    # --- storage -------------------------------------------------------------------------
    async def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Store bytes on the server; returns their URL, usable as `image_url`."""
        return await self._run(self.upload_flow(data, content_type, file_name))

    async def upload_file(self, path: str | Path) -> str:
        upload = await asyncio.to_thread(_inputs.read_path, path)
        return await self.upload(upload.data, upload.content_type, upload.file_name)

    async def upload_image(self, image: Any, format: str = "png") -> str:
        """Encode a PIL image (PNG by default) and upload it."""
        upload = await asyncio.to_thread(_inputs.encode_pil, image, format)
        return await self.upload(upload.data, upload.content_type, upload.file_name)

    async def upload_inputs(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A copy of `arguments` with local data uploaded, the uploads running concurrently
        (after one storage token is fetched for all of them)."""
        values = _inputs.find_uploads(arguments)
        if values:
            await self._run(self.token_flow())

        async def one(value: Any) -> str:
            upload = await asyncio.to_thread(_inputs.to_upload, value)
            return await self.upload(upload.data, upload.content_type, upload.file_name)

        urls = dict(zip(map(id, values), await asyncio.gather(*map(one, values)), strict=True))
        result: dict[str, Any] = _inputs.substitute(arguments, lambda v: urls[id(v)])
        return result
