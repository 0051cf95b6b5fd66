"""Local data anywhere in `arguments` is uploaded and replaced by its URL before submit."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from pngs import encode
from superscale.client import SyncClient
from superscale.schemas import ENDPOINT_ID

from .conftest import ServerProc

Factory = Callable[..., Image.Image]


@pytest.mark.parametrize("kind", ["path", "bytes", "file", "pil"])
def test_each_input_kind_becomes_the_image_the_server_upscales(
    client: SyncClient, image_factory: Factory, tmp_path: Path, kind: str
) -> None:
    # Each kind gets its own size, so the output's size proves which image the server ran on.
    width, height = {"path": (9, 4), "bytes": (5, 7), "file": (6, 3), "pil": (4, 4)}[kind]
    image = image_factory(width, height, seed=width)
    path = tmp_path / "in.png"
    path.write_bytes(encode(image))
    with path.open("rb") as handle:
        value: Any = {"path": path, "bytes": encode(image), "file": handle, "pil": image}[kind]
        result = client.subscribe(ENDPOINT_ID, {"image_url": value})
    out = result.image.to_pil()
    assert out.size == (4 * width, 4 * height)


def test_nested_values_are_uploaded_once_each(
    client: SyncClient, image_factory: Factory, tmp_path: Path
) -> None:
    image = image_factory(3, 3)
    data = encode(image)
    path = tmp_path / "n.png"
    path.write_bytes(data)
    with path.open("rb") as handle:
        args = {"a": [data, {"b": path}], "c": (handle, image), "d": "http://x/y.png", "e": 4}
        sent = client.upload_inputs(args)
    assert sent["d"] == "http://x/y.png" and sent["e"] == 4
    urls = [sent["a"][0], sent["a"][1]["b"], sent["c"][0], sent["c"][1]]
    assert len(set(urls)) == 4 and all(u.startswith(client.base_url) for u in urls)
    for url in urls:
        assert Image.open(io.BytesIO(httpx.get(url).content)).tobytes() == image.tobytes()
    assert args["a"][0] is data  # the caller's arguments are left as they were


def test_async_auto_upload(server: ServerProc, image_factory: Factory, tmp_path: Path) -> None:
    image = image_factory(5, 2)
    path = tmp_path / "x.png"
    path.write_bytes(encode(image))

    async def main() -> None:
        async with server.async_client() as client:
            sent = await client.upload_inputs({"x": [path, encode(image), image]})
            assert len(set(sent["x"])) == 3
            result = await client.subscribe(ENDPOINT_ID, {"image_url": image})
            assert (result.image.width, result.image.height) == (20, 8)

    asyncio.run(main())
