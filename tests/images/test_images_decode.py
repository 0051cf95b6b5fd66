"""`superscale.images.decode` and `normalize`: every kind of image users send, and bad input."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
from imgsamples import noise, png16_rgb, srgb_profile
from PIL import Image, ImageFile, features

from pngs import encode as save
from pngs import png_chunk as chunk
from pngs import png_header_only
from superscale import images
from superscale.images import ImageError, decode, normalize
from superscale.settings import Settings


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


# --- what users send ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM", "WEBP"])
def test_rgb_lossless_formats_decode_exactly(fmt: str) -> None:
    src = noise(17, 9)
    params = {"lossless": True} if fmt == "WEBP" else {}
    out = decode(save(src, fmt, **params))
    assert out.image.mode == "RGB"
    assert out.image.size == (17, 9)
    assert out.format == fmt
    np.testing.assert_array_equal(pixels(out.image), pixels(src))
    assert out.icc_profile is None


def test_camera_multi_picture_jpeg_gives_first_picture() -> None:
    first, second = noise(8, 8), Image.new("RGB", (8, 8), (0, 0, 0))
    out = decode(save(first, "MPO", save_all=True, append_images=[second], quality=95))
    assert (out.format, out.image.mode, out.image.size) == ("MPO", "RGB", (8, 8))
    assert pixels(out.image).mean() > 60  # the noise picture, not the black one


def test_jpeg_decodes_close_to_source() -> None:
    src = Image.new("RGB", (32, 16), (200, 40, 90))
    out = decode(save(src, "JPEG", quality=95))
    assert (out.image.mode, out.image.size, out.format) == ("RGB", (32, 16), "JPEG")
    assert np.abs(pixels(out.image).astype(int) - (200, 40, 90)).max() <= 3


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_decodes() -> None:
    src = Image.new("RGB", (24, 16), (50, 100, 150))
    out = decode(save(src, "AVIF", quality=90))
    assert (out.image.mode, out.image.size, out.format) == ("RGB", (24, 16), "AVIF")
    assert np.abs(pixels(out.image).astype(int) - (50, 100, 150)).max() <= 4


def test_rgba_keeps_alpha() -> None:
    src = noise(8, 8, "RGBA")
    out = decode(save(src, "PNG"))
    assert out.image.mode == "RGBA"
    np.testing.assert_array_equal(pixels(out.image), pixels(src))


def test_greyscale_becomes_equal_channel_rgb() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = decode(save(Image.fromarray(grey, "L"), "PNG"))
    assert out.image.mode == "RGB"
    for channel in range(3):
        np.testing.assert_array_equal(pixels(out.image)[..., channel], grey)


def test_greyscale_alpha_becomes_rgba() -> None:
    la = Image.merge("LA", [Image.new("L", (4, 4), 100), Image.new("L", (4, 4), 30)])
    out = decode(save(la, "PNG"))
    assert out.image.mode == "RGBA"
    assert out.image.getpixel((2, 2)) == (100, 100, 100, 30)


def test_one_bit_becomes_black_and_white_rgb() -> None:
    bits = Image.new("1", (8, 8), 0)
    bits.putpixel((3, 3), 1)
    out = decode(save(bits, "PNG"))
    assert out.image.mode == "RGB"
    assert out.image.getpixel((3, 3)) == (255, 255, 255)
    assert out.image.getpixel((0, 0)) == (0, 0, 0)


def _palette_image() -> Image.Image:
    pal = Image.new("P", (4, 2), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    for x in range(4):
        pal.putpixel((x, 1), 1)
    pal.putpixel((3, 0), 2)
    return pal


def test_palette_without_transparency_becomes_rgb() -> None:
    out = decode(save(_palette_image(), "PNG"))
    assert out.image.mode == "RGB"
    assert out.image.getpixel((0, 0)) == (255, 0, 0)
    assert out.image.getpixel((0, 1)) == (0, 255, 0)
    assert out.image.getpixel((3, 0)) == (0, 0, 255)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_becomes_rgba(fmt: str) -> None:
    out = decode(save(_palette_image(), fmt, transparency=0))  # red is the transparent index
    assert out.image.mode == "RGBA"
    assert out.image.getpixel((0, 0))[3] == 0
    assert out.image.getpixel((0, 1)) == (0, 255, 0, 255)
    assert out.image.getpixel((3, 0)) == (0, 0, 255, 255)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_pure_cyan_becomes_cyan_rgb(fmt: str) -> None:
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    out = decode(save(cmyk, fmt))
    assert out.image.mode == "RGB"
    r, g, b = pixels(out.image)[4, 4].astype(int)
    assert r < 40 and g > 215 and b > 215


def test_cmyk_profile_is_dropped_and_an_unusable_one_falls_back() -> None:
    # An RGB profile on CMYK pixels cannot drive the conversion: the plain formula is used,
    # and the profile is not carried over to the RGB result either way.
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red ink
    out = decode(save(cmyk, "TIFF", icc_profile=srgb_profile()))
    assert out.icc_profile is None
    assert out.image.getpixel((0, 0)) == (255, 0, 0)


def test_16bit_greyscale_png_scales_to_8bit_gradient() -> None:
    values = np.arange(0, 65536, 257, dtype=np.uint16)  # 0, 257, …, 65535: 256 levels
    grad = np.tile(values, (4, 1))
    src = Image.fromarray(grad)
    assert src.mode == "I;16"
    out = decode(save(src, "PNG"))
    assert out.image.mode == "RGB"
    row = pixels(out.image)[0, :, 0]
    np.testing.assert_array_equal(row, np.arange(256))  # not clipped to white at 255


def test_16bit_rgb_png_scales_to_8bit() -> None:
    arr = np.zeros((2, 3, 3), dtype=np.uint16)
    arr[0, 0] = (65535, 0, 32896)
    arr[1, 2] = (257 * 10, 257 * 200, 257 * 128)
    out = decode(png16_rgb(arr))
    assert out.image.mode == "RGB"
    got = pixels(out.image).astype(int)
    assert np.abs(got[0, 0] - (255, 0, 128)).max() <= 1
    assert np.abs(got[1, 2] - (10, 200, 128)).max() <= 1


def test_32bit_integer_image_with_16bit_range_scales() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.int32)
    out = decode(save(Image.fromarray(arr, "I"), "TIFF"))
    assert pixels(out.image)[0, :, 0].tolist() == [0, 128, 255]


def test_float_image_in_unit_range_scales() -> None:
    arr = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = decode(save(Image.fromarray(arr, "F"), "TIFF"))
    assert out.image.mode == "RGB"
    assert pixels(out.image)[0, :, 0].tolist() == [0, 128, 255]


# EXIF orientation → how the stored pixels must be turned to be seen upright.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # "rotate 90° clockwise to display"
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(orientation: int) -> None:
    src = noise(6, 3)  # stored 6 wide, 3 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode(save(src, "PNG", exif=exif.tobytes()))
    np.testing.assert_array_equal(pixels(out.image), UPRIGHT[orientation](pixels(src)))


def test_exif_orientation_6_in_jpeg_rotates_clockwise() -> None:
    src = Image.new("RGB", (32, 16), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 16, 16))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode(save(src, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.image.size == (16, 32)
    top, bottom = pixels(out.image)[4, 8].astype(int), pixels(out.image)[28, 8].astype(int)
    assert top[0] > 200 and top[2] < 50  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_damaged_exif_is_ignored_not_fatal() -> None:
    src = noise(5, 4)
    out = decode(save(src, "PNG", exif=b"Exif\x00\x00garbage"))
    assert out.image.size == (5, 4)


def test_icc_profile_of_rgb_image_is_kept() -> None:
    profile = srgb_profile()
    out = decode(save(noise(4, 4), "PNG", icc_profile=profile))
    assert out.icc_profile == profile
    out = decode(save(noise(4, 4), "JPEG", icc_profile=profile))
    assert out.icc_profile == profile


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode(data)
    assert out.image.mode == "RGB"
    assert out.image.getpixel((3, 3)) == (255, 0, 0)


def test_animated_webp_gives_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = decode(data)
    assert out.image.getpixel((3, 3))[:3] == (255, 0, 0)


def test_animated_png_gives_first_frame() -> None:
    frames = [Image.new("RGBA", (6, 6), c) for c in [(0, 255, 0, 255), (0, 0, 255, 128)]]
    data = save(frames[0], "PNG", save_all=True, append_images=frames[1:])
    out = decode(data)
    assert out.image.getpixel((3, 3)) == (0, 255, 0, 255)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("1", "RGB"),
        ("L", "RGB"),
        ("LA", "RGBA"),
        ("La", "RGBA"),
        ("P", "RGB"),
        ("PA", "RGBA"),
        ("RGB", "RGB"),
        ("RGBA", "RGBA"),
        ("RGBa", "RGBA"),
        ("RGBX", "RGB"),
        ("CMYK", "RGB"),
        ("YCbCr", "RGB"),
        ("LAB", "RGB"),
        ("HSV", "RGB"),
        ("I", "RGB"),
        ("I;16", "RGB"),
        ("I;16B", "RGB"),
        ("F", "RGB"),
    ],
)
def test_normalize_turns_every_mode_into_rgb_or_rgba(mode: str, expected: str) -> None:
    out = normalize(Image.new(mode, (3, 2)))
    assert out.mode == expected
    assert out.size == (3, 2)


def test_normalize_16bit_white_stays_white() -> None:
    out = normalize(Image.new("I;16", (2, 2), 65535))
    assert out.getpixel((0, 0)) == (255, 255, 255)


# --- what must be refused -----------------------------------------------------------------


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(ImageError, match="empty"):
        decode(b"")


@pytest.mark.parametrize(
    "data",
    [b"hello, this is not an image", bytes(np.random.default_rng(1).integers(0, 256, 4096))],
)
def test_non_image_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a supported image"):
        decode(data)


def test_formats_outside_the_list_are_refused() -> None:
    # TGA has no magic number (it would "recognise" random bytes); it is not accepted.
    with pytest.raises(ImageError, match="not a supported image"):
        decode(save(noise(4, 4), "TGA"))


def test_truncated_png_is_refused() -> None:
    data = save(noise(64, 64), "PNG")
    with pytest.raises(ImageError, match="truncated"):
        decode(data[: len(data) // 2])


def test_truncated_jpeg_is_refused() -> None:
    data = save(noise(64, 64), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        decode(data[: len(data) // 2])


def test_damaged_png_header_says_so() -> None:
    data = bytearray(save(noise(8, 8), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    with pytest.raises(ImageError, match="PNG"):
        decode(bytes(data))


def test_bomb_header_is_refused_quickly() -> None:
    data = png_header_only(20000, 20000)  # 400 Mpx claimed, a few bytes of data
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"^image too large"):  # the worker keys on the prefix
        decode(data)
    assert time.perf_counter() - start < 1.0


def test_size_limit_is_checked_from_the_header_before_decoding() -> None:
    # 5000×5000 is under Pillow's own bomb limit, over ours; the file holds almost no pixel
    # data, so only a header check can answer "too large" (decoding would fail as truncated).
    with pytest.raises(ImageError, match=r"^image too large: 5000x5000 = 25,000,000 .*16,777,216"):
        decode(png_header_only(5000, 5000))


def test_max_pixels_argument_is_honoured() -> None:
    data = save(noise(100, 100), "PNG")
    assert decode(data, max_pixels=10_000).image.size == (100, 100)
    with pytest.raises(ImageError, match="too large"):
        decode(data, max_pixels=9_999)


def test_compressed_metadata_bomb_is_refused() -> None:
    # 50 MB of "ICC profile" in a 51 kB file: refused, not inflated.
    png = save(noise(4, 4), "PNG")
    bomb = png[:33] + chunk(b"iCCP", b"x\x00\x00" + zlib.compress(bytes(50 << 20))) + png[33:]
    with pytest.raises(ImageError, match="too large"):
        decode(bomb)


def test_zero_size_is_refused() -> None:
    with pytest.raises(ImageError, match="zero size"):
        decode(png_header_only(0, 5))


def test_image_error_is_a_value_error() -> None:
    assert issubclass(ImageError, ValueError)


def test_truncated_images_are_not_loaded_silently() -> None:
    # Pillow's global switch would turn a truncated upload into a half-grey picture.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_default_limit_is_the_settings_default() -> None:
    default = Settings.model_fields["max_input_pixels"].default
    assert default == images.DEFAULT_MAX_PIXELS
