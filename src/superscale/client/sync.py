"""`SyncClient`: the blocking client — `ClientCore`'s flows (`_core.py`) carried out with
`httpx.Client`. `AsyncClient` (`aio.py`) has the same methods."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource, ServerSentEvent

from superscale.client import _core, _inputs
from superscale.client.status import Status

T = TypeVar("T")
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


class SyncClient(_core.ClientCore[httpx.Client]):
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
        return None

    # --- the queue -----------------------------------------------------------------------
    def submit(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        *,
        webhook_url: str | None = None,
        priority: str | None = None,
        start_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> SyncRequestHandle:
        """Queue a request (uploading local data in `arguments` first); returns its handle.

        `start_timeout` is a server-side deadline: a job not started by then ends with 504.
        """
        payload = self.upload_inputs(arguments)
        flow = self.submit_flow(endpoint, payload, webhook_url, priority, start_timeout, headers)
        return self._handle(endpoint, self._run(flow))

    def _handle(self, endpoint: str, submitted: _core.Submitted) -> SyncRequestHandle:
        return SyncRequestHandle(
            self,
            endpoint,
            submitted.request_id,
            submitted.response_url,
            submitted.status_url,
            submitted.cancel_url,
        )

    def get_handle(self, endpoint: str, request_id: str) -> SyncRequestHandle:
        return SyncRequestHandle(self, endpoint, request_id)

    def subscribe(
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
        """Submit, wait for completion and return the output.

        `on_queue_update` gets every polled status (with logs if `with_logs`). When `timeout`
        seconds pass first, the request is cancelled on the server and `RequestTimeoutError`
        is raised; an interrupted wait (Ctrl-C) cancels it too.
        """
        payload = self.upload_inputs(arguments)
        return self._run(
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

    def status(self, endpoint: str, request_id: str, *, with_logs: bool = False) -> Status:
        return self._run(self.status_flow(endpoint, request_id, with_logs))

    def result(self, endpoint: str, request_id: str) -> Any:
        """Wait until the request completes and return its output."""
        return self._run(self.result_flow(endpoint, request_id))

    def cancel(self, endpoint: str, request_id: str) -> None:
        """Ask the server to cancel; raises if it already completed or is unknown."""
        self._run(self.cancel_flow(endpoint, request_id))

    def stream(
        self, endpoint: str, request_id: str, *, with_logs: bool = False
    ) -> Iterator[Status]:
        """Status events pushed by the server (SSE) until `Completed`; reconnects on drops."""
        return self._iterate(self.stream_flow(endpoint, request_id, with_logs))

    # --- the synchronous route -----------------------------------------------------------
    def run(self, endpoint: str, arguments: dict[str, Any], *, timeout: float | None = None) -> Any:
        """Run on the synchronous route, holding the connection until the output is ready."""
        return self._run(self.run_flow(endpoint, self.upload_inputs(arguments), timeout))

    # --- storage -------------------------------------------------------------------------
    def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Store bytes on the server; returns their URL, usable as `image_url`."""
        return self._run(self.upload_flow(data, content_type, file_name))

    def upload_file(self, path: str | Path) -> str:
        upload = _inputs.read_path(path)
        return self.upload(upload.data, upload.content_type, upload.file_name)

    def upload_image(self, image: Any, format: str = "png") -> str:
        """Encode a PIL image (PNG by default) and upload it."""
        upload = _inputs.encode_pil(image, format)
        return self.upload(upload.data, upload.content_type, upload.file_name)

    def upload_inputs(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A copy of `arguments` with local data (paths, bytes, files, PIL images) uploaded."""
        urls: dict[int, str] = {}
        for value in _inputs.find_uploads(arguments):
            upload = _inputs.to_upload(value)
            urls[id(value)] = self.upload(upload.data, upload.content_type, upload.file_name)
        result: dict[str, Any] = _inputs.substitute(arguments, lambda v: urls[id(v)])
        return result
