"""`AsyncClient`: the asyncio twin of `SyncClient` — the same `ClientCore` flows (`_core.py`)
carried out with `httpx.AsyncClient`, with the same method names. Callbacks may be coroutines;
uploads of several local inputs run concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from httpx_sse import EventSource, ServerSentEvent

from superscale.client import _core, _inputs
from superscale.client.status import Status

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
_Core = _core.ClientCore[httpx.AsyncClient, "AsyncRequestHandle"]
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


def _driven(
    flow: Callable[Concatenate[Any, P], _core.Flow[R]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """A client coroutine that runs `flow` to its end and returns what it returns."""

    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._run(flow(self, *args, **kwargs))

    _core.present_as(method, flow)
    return method


def _iterated(
    flow: Callable[Concatenate[Any, P], _core.Flow[None]], item: type[Y]
) -> Callable[Concatenate[Any, P], AsyncIterator[Y]]:
    """A client method that iterates (async for) over what `flow` hands out."""

    def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Y]:
        return self._iterate(flow(self, *args, **kwargs))

    _core.present_as(method, flow)
    return method


class AsyncClient(_core.ClientCore[httpx.AsyncClient, "AsyncRequestHandle"]):
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
        elif isinstance(action, _core.UploadLocal):
            return await self.upload_inputs(action.arguments)
        elif isinstance(action, _core.Blocking):
            return await asyncio.to_thread(action.function, *action.args)
        return None

    _handle_class = AsyncRequestHandle

    # --- what it offers: the core's flows, carried out -----------------------------------
    submit = _driven(_Core.submit_flow)
    subscribe = _driven(_Core.subscribe_flow)
    status = _driven(_Core.status_flow)
    result = _driven(_Core.result_flow)
    cancel = _driven(_Core.cancel_flow)
    stream = _iterated(_Core.stream_flow, Status)
    run = _driven(_Core.run_flow)
    upload = _driven(_Core.upload_flow)
    upload_file = _driven(_Core.upload_file_flow)
    upload_image = _driven(_Core.upload_image_flow)

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
