"""Output options through the real server and worker: target sizes, output quality, lossless
WebP, tile_overlap — exact sizes, smaller files for lower quality, the same pixels for lossless,
the same bytes for the same options — and their refusals at submit."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from .server import LiveServer
from .test_fal_client import png_bytes

SUBMIT = "/queue/fal-ai/aura-sr"


def _uri(data: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode()


IMAGE = _uri(png_bytes(20, 21))  # 20×20


def _run(srv: LiveServer, **options: object) -> tuple[dict, bytes]:
    with srv.client() as c:
        r = c.post("/fal-ai/aura-sr", json={"image_url": IMAGE, "seed": 1, **options})
        assert r.status_code == 200, r.text
        image = r.json()["image"]
        return image, httpx.get(image["url"]).content


def test_target_sizes(worker_server: LiveServer) -> None:
    for options, size in (
        ({"target_width": 50, "target_height": 30}, (50, 30)),  # exactly, aspect or not
        ({"target_width": 70}, (70, 70)),  # one side: aspect kept
        ({"target_height": 33}, (33, 33)),
        ({"target_width": 320}, (320, 320)),  # 16×: two model passes
    ):
        image, data = _run(worker_server, **options)
        assert (image["width"], image["height"]) == size, options
        assert Image.open(io.BytesIO(data)).size == size


def test_quality_and_lossless(worker_server: LiveServer) -> None:
    _, low = _run(worker_server, output_format="jpeg", output_quality=20)
    _, high = _run(worker_server, output_format="jpeg", output_quality=95)
    assert len(low) < len(high)
    _, webp_low = _run(worker_server, output_format="webp", output_quality=10)
    _, webp_high = _run(worker_server, output_format="webp", output_quality=90)
    assert len(webp_low) < len(webp_high)
    _, png = _run(worker_server)
    _, lossless = _run(worker_server, output_format="webp", lossless=True)
    decoded = np.asarray(Image.open(io.BytesIO(lossless)).convert("RGB"))
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def test_every_new_option_gives_the_same_bytes_twice(worker_server: LiveServer) -> None:
    for options in (
        {"upscale_factor": 2.5},
        {"upscale_factor": 6},
        {"target_width": 45},
        {"tile_overlap": 8},
        {"output_format": "jpeg", "output_quality": 40},
        {"output_format": "webp", "lossless": True},
    ):
        first = _run(worker_server, **options)[1]
        assert first == _run(worker_server, **options)[1], options


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"target_width": 0}, "target_width"),
        ({"target_width": 10, "upscale_factor": 2}, None),  # one or the other
        ({"tile_overlap": 8, "overlapping_tiles": True}, None),
        ({"tile_overlap": 33}, "tile_overlap"),
        ({"output_quality": 80}, None),  # png is always lossless
        ({"output_format": "jpeg", "output_quality": 101}, "output_quality"),
        ({"output_format": "jpeg", "lossless": True}, None),
        ({"target_width": 400}, "target_width"),  # 20×20 → 400 is 20×: over 16×
        ({"target_width": 10}, "target_width"),  # shrinking: under 1×
    ],
)
def test_refusals_at_submit(server: LiveServer, options: dict, field: str | None) -> None:
    with server.client() as c:
        r = c.post(SUBMIT, json={"image_url": IMAGE, **options})
    assert r.status_code == 422, (options, r.text)
    loc = r.json()["detail"][0]["loc"]
    assert loc[0] == "body" and (field is None or loc[-1] == field), (options, loc)
