"""`superscale.images.encode`: round trips, ICC kept, alpha handling, the fast PNG path and its
Pillow fallback."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imgsamples import noise, srgb_profile
from PIL import Image

from superscale import images
from superscale.images import ImageError, content_type, decode, encode, extension


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def written_by_fpng(data: bytes) -> bool:
    """fpng marks its files with a private `fdEC` chunk (for its own fast decoder)."""
    return b"fdEC" in data


@pytest.fixture(params=["fpng", "pillow"])
def png_writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the fast writer and again with the fallback used where it is absent."""
    if request.param == "pillow":
        monkeypatch.setattr(images, "_fpng", None)
    elif images._fpng is None:
        pytest.skip("fpng is not installed")
    assert images.png_encoder_name().startswith(request.param)
    return str(request.param)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (17, 33), (300, 7)])
def test_png_round_trips_exactly(png_writer: str, mode: str, size: tuple[int, int]) -> None:
    src = noise(*size, mode=mode)
    data = encode(src)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert written_by_fpng(data) == (png_writer == "fpng")  # the writer under test wrote it
    out = reopen(data)
    assert out.mode == mode
    np.testing.assert_array_equal(np.asarray(out), np.asarray(src))


def test_png_keeps_icc_profile(png_writer: str) -> None:
    profile = srgb_profile()
    src = noise(20, 10)
    data = encode(src, "png", icc_profile=profile)
    assert written_by_fpng(data) == (png_writer == "fpng")
    out = reopen(data)
    assert out.info.get("icc_profile") == profile
    np.testing.assert_array_equal(np.asarray(out), np.asarray(src))


def test_icc_survives_decode_then_encode() -> None:
    profile = srgb_profile()
    buf = io.BytesIO()
    noise(8, 8).save(buf, format="JPEG", icc_profile=profile)
    decoded = decode(buf.getvalue())
    out = decode(encode(decoded.image, "png", icc_profile=decoded.icc_profile))
    assert out.icc_profile == profile


def test_png_of_other_modes_is_normalized() -> None:
    out = reopen(encode(Image.new("L", (4, 4), 77)))
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (77, 77, 77)


def test_jpeg_flattens_alpha_onto_white_and_keeps_icc() -> None:
    src = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent black
    src.paste((200, 0, 0, 255), (0, 0, 8, 16))  # left half opaque red
    profile = srgb_profile()
    out = reopen(encode(src, "jpeg", icc_profile=profile))
    assert out.format == "JPEG"
    assert out.mode == "RGB"
    assert out.info.get("icc_profile") == profile
    right = np.asarray(out)[:, 12:].astype(int)
    left = np.asarray(out)[:, :4].astype(int)
    assert right.min() >= 250  # white, not black
    assert np.abs(left - (200, 0, 0)).max() <= 6


def test_webp_keeps_alpha_and_icc() -> None:
    src = Image.new("RGBA", (16, 16), (10, 200, 30, 128))
    profile = srgb_profile()
    out = reopen(encode(src, "webp", icc_profile=profile))
    assert out.format == "WEBP"
    assert out.mode == "RGBA"
    assert out.info.get("icc_profile") == profile
    got = np.asarray(out)[8, 8].astype(int)
    assert np.abs(got - (10, 200, 30, 128)).max() <= 6


def test_webp_refuses_sides_over_its_limit() -> None:
    with pytest.raises(ImageError, match="16383"):
        encode(Image.new("RGB", (16384, 1)), "webp")


@pytest.mark.parametrize(("fmt", "side"), [("webp", 16383), ("jpeg", 65535)])
def test_size_check_before_inference(fmt: str, side: int) -> None:
    images.check_size(side, 1, fmt)
    images.check_size(70000, 70000, "png")
    with pytest.raises(ImageError, match=f"{fmt} cannot hold a 1x{side + 1} image"):
        images.check_size(1, side + 1, fmt)


def test_png_past_fpng_limits_falls_back_to_pillow() -> None:
    # fpng returns no bytes (no error) for sides over 2**24; the output must still be a PNG.
    src = Image.new("RGB", ((1 << 24) + 1, 1), (9, 8, 7))
    src.putpixel((1 << 24, 0), (1, 2, 3))
    profile = srgb_profile()
    out = reopen(encode(src, icc_profile=profile))
    assert out.size == src.size
    assert out.getpixel((1 << 24, 0)) == (1, 2, 3)
    assert out.info.get("icc_profile") == profile


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ImageError, match="png, jpeg, webp"):
        encode(noise(2, 2), "gif")
    with pytest.raises(ImageError):
        content_type("bmp")


@pytest.mark.parametrize(
    ("fmt", "mime", "ext"),
    [
        ("png", "image/png", "png"),
        ("jpeg", "image/jpeg", "jpg"),
        ("JPG", "image/jpeg", "jpg"),
        ("webp", "image/webp", "webp"),
    ],
)
def test_content_type_and_extension(fmt: str, mime: str, ext: str) -> None:
    assert content_type(fmt) == mime
    assert extension(fmt) == ext
    assert reopen(encode(noise(3, 3), fmt)).get_format_mimetype() == mime
