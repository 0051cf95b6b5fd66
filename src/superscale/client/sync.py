"""`SyncClient`: the blocking client — `ClientCore`'s flows (`_core.py`) carried out with
`httpx.Client`. `AsyncClient` (`aio.py`) has the same methods."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
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
_Core = _core.ClientCore[httpx.Client, "SyncRequestHandle"]
StatusCallback = Callable[[Status], Any]


@dataclass
class SyncRequestHandle(_core.HandleFields):
    """A submitted request: poll, stream, fetch or cancel it."""

    client: SyncClient = field(repr=False)

    def status(self, *, with_logs: bool = False) -> Status:
        return self.client.status(self.endpoint, self.request_id, with_logs=with_logs)

    def iter_events(
        self, *, with_logs: bool = False, interval: float | None = None
    ) -> Iterator[Status]:
        """Poll until the request completes, yielding each status (the last is `Completed`)."""
        flow = self.client.poll_flow(self.endpoint, self.request_id, with_logs, interval, None)
        return self.client._iterate(flow)

    def stream(self, *, with_logs: bool = False) -> Iterator[Status]:
        """Status events pushed by the server (SSE) until the request completes."""
        return self.client.stream(self.endpoint, self.request_id, with_logs=with_logs)

    def result(self) -> Any:
        """Wait for completion and return the output (raises the job's error, if any)."""
        return self.client.result(self.endpoint, self.request_id)

    get = result  # fal_client's name

    def cancel(self) -> None:
        self.client.cancel(self.endpoint, self.request_id)


class _Stream:
    """An open server-sent event stream."""

    def __init__(self, http: httpx.Client, action: _core.OpenStream) -> None:
        self._exit = contextlib.ExitStack()
        self.response = self._exit.enter_context(
            http.stream(
                "GET",
                action.url,
                params=action.params,
                headers=action.headers,
                timeout=action.timeout,
            )
        )
        if self.response.is_error:
            self.response.read()
        self._events = EventSource(self.response).iter_sse()

    def next(self) -> ServerSentEvent | None:
        return next(self._events, None)

    def close(self) -> None:
        self._exit.close()


def _driven(flow: Callable[Concatenate[Any, P], _core.Flow[R]]) -> Callable[Concatenate[Any, P], R]:
    """A client method that runs `flow` to its end and returns what it returns."""

    def method(self: SyncClient, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(flow(self, *args, **kwargs))

    _core.present_as(method, flow)
    return method


def _iterated(
    flow: Callable[Concatenate[Any, P], _core.Flow[None]], item: type[Y]
) -> Callable[Concatenate[Any, P], Iterator[Y]]:
    """A client method that iterates over what `flow` hands out."""

    def method(self: SyncClient, *args: P.args, **kwargs: P.kwargs) -> Iterator[Y]:
        return self._iterate(flow(self, *args, **kwargs))

    _core.present_as(method, flow)
    return method


class SyncClient(_core.ClientCore[httpx.Client, "SyncRequestHandle"]):
    """A blocking client for a superscale (or fal-compatible) server.

    `base_url` defaults to `SUPERSCALE_URL`, `key` to `FAL_KEY` (or `FAL_KEY_ID` +
    `FAL_KEY_SECRET`). Use as a context manager, or call `close()`, to release connections.
    """

    @staticmethod
    def _new_http(timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the driver ----------------------------------------------------------------------
    def _drive(self, flow: _core.Flow[T]) -> Generator[Any, None, T]:
        """Carry a flow's actions out: yields what it emits, returns what it returns."""
        stepper, streams = _core.Stepper(flow), list[_Stream]()
        try:
            while not isinstance(action := stepper.next(), _core.Done):
                if isinstance(action, _core.Emit):
                    yield action.value
                    continue
                try:
                    stepper.answer = self._do(action, streams)
                except BaseException as exc:  # the flow decides: retry, clean up, or raise
                    stepper.error = exc
            result: T = action.value
            return result
        finally:
            for stream in streams:
                stream.close()
            flow.close()

    def _iterate(self, flow: _core.Flow[None]) -> Iterator[Any]:
        return self._drive(flow)

    def _run(self, flow: _core.Flow[T]) -> T:
        driven = self._drive(flow)
        try:
            next(driven)
        except StopIteration as stop:
            result: T = stop.value
            return result
        driven.close()
        raise AssertionError("this flow hands values to a caller: iterate it")

    def _do(self, action: _core.Action, streams: list[_Stream]) -> Any:
        if isinstance(action, _core.Send):
            return self._http.request(
                action.method,
                action.url,
                headers=action.headers,
                timeout=action.timeout,
                **action.options,
            )
        if isinstance(action, _core.Sleep):
            time.sleep(action.seconds)
        elif isinstance(action, _core.Call):
            action.callback(*action.args)
        elif isinstance(action, _core.OpenStream):
            streams.append(_Stream(self._http, action))
            return streams[-1]
        elif isinstance(action, _core.NextEvent):
            return action.stream.next()
        elif isinstance(action, _core.CloseStream):
            action.stream.close()
        elif isinstance(action, _core.UploadLocal):
            return self.upload_inputs(action.arguments)
        elif isinstance(action, _core.Blocking):
            return action.function(*action.args)
        return None

    _handle_class = SyncRequestHandle

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

    def upload_inputs(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A copy of `arguments` with local data (paths, bytes, files, PIL images) uploaded."""
        urls: dict[int, str] = {}
        for value in _inputs.find_uploads(arguments):
            upload = _inputs.to_upload(value)
            urls[id(value)] = self.upload(upload.data, upload.content_type, upload.file_name)
        result: dict[str, Any] = _inputs.substitute(arguments, lambda v: urls[id(v)])
        return result
