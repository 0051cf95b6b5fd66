"""Every `AsyncClient` method against a real `superscale serve` on loopback."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

import superscale.client as sc
from superscale.client import (
    AuraSrResult,
    Completed,
    Queued,
    RequestCancelledError,
    Status,
)
from superscale.schemas import ENDPOINT_ID

from .conftest import ServerProc


def test_async_subscribe_submit_status_stream_result(server: ServerProc, image_file: Path) -> None:
    async def main() -> None:
        async with server.async_client() as client:
            updates: list[Status] = []

            async def on_update(status: Status) -> None:  # coroutine callbacks are awaited
                updates.append(status)

            result = await client.subscribe(
                ENDPOINT_ID, {"image_url": image_file}, with_logs=True, on_queue_update=on_update
            )
            assert isinstance(result, AuraSrResult) and result.image.width == 96
            assert isinstance(updates[-1], Completed) and updates[-1].logs
            assert (await result.image.aread())[:8] == b"\x89PNG\r\n\x1a\n"

            handle = await client.submit(ENDPOINT_ID, {"image_url": image_file})
            streamed = [s async for s in handle.stream(with_logs=True)]
            assert isinstance(streamed[-1], Completed)
            polled = [s async for s in handle.iter_events(interval=0.05)]
            assert isinstance(polled[-1], Completed)
            assert isinstance(await handle.status(), Completed)
            assert isinstance(await client.status(ENDPOINT_ID, handle.request_id), Completed)
            events = [s async for s in client.stream(ENDPOINT_ID, handle.request_id)]
            assert isinstance(events[-1], Completed)
            first = await handle.result()
            second = await client.result(ENDPOINT_ID, handle.request_id)
            assert first.image.url == second.image.url

    asyncio.run(main())


def test_async_run_and_uploads(
    server: ServerProc,
    image_file: Path,
    image_factory: Callable[..., Image.Image],
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with server.async_client() as client:
            result = await client.run(ENDPOINT_ID, {"image_url": image_factory(8, 5)})
            saved = await result.image.adownload(tmp_path / "run.png")
            assert Image.open(saved).size == (32, 20)
            data = image_file.read_bytes()
            urls = await asyncio.gather(
                client.upload(data, "image/png"),
                client.upload_file(image_file),
                client.upload_image(Image.open(image_file)),
            )
            async with httpx.AsyncClient() as http:
                bodies = [(await http.get(url)).content for url in urls]
            assert bodies[0] == bodies[1] == data
            assert Image.open(io.BytesIO(bodies[2])).tobytes() == Image.open(image_file).tobytes()

    asyncio.run(main())


def test_async_cancel(idle_server: ServerProc, image_file: Path) -> None:
    async def main() -> None:
        async with idle_server.async_client() as client:
            handle = await client.submit(ENDPOINT_ID, {"image_url": image_file})
            assert await handle.status() == Queued(handle.request_id, 0)
            await client.cancel(ENDPOINT_ID, handle.request_id)
            with pytest.raises(RequestCancelledError):
                await handle.result()
            again = client.get_handle(ENDPOINT_ID, handle.request_id)
            assert isinstance(await again.status(), Completed)

    asyncio.run(main())


def test_async_module_shortcuts(
    server: ServerProc, image_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERSCALE_URL", server.url)
    monkeypatch.setenv("FAL_KEY", server.key)
    monkeypatch.setattr(sc, "_default_async", None)

    async def main() -> None:
        url = await sc.upload_file_async(image_file)
        handle = await sc.submit_async(ENDPOINT_ID, {"image_url": url})
        assert isinstance(
            [s async for s in sc.stream_async(ENDPOINT_ID, handle.request_id)][-1], Completed
        )
        assert isinstance(await sc.status_async(ENDPOINT_ID, handle.request_id), Completed)
        assert (await sc.result_async(ENDPOINT_ID, handle.request_id)).image.width == 96
        assert (await sc.subscribe_async(ENDPOINT_ID, {"image_url": url})).image.width == 96
        await sc.default_async_client().close()

    asyncio.run(main())
