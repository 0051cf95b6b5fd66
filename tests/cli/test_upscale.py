"""`superscale upscale`: the real command (click's runner, in process) on the small random-weight
checkpoints. Inputs stay within one 64-px tile each, so every upscale is a single tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image, ImageCms

from superscale.cli import main


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["upscale", *map(str, args)], catch_exceptions=False)


def make(path: Path, mode: str, size: tuple[int, int], **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    bands = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    image = Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)
    image.save(path, **params)
    return path


def opened(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


@pytest.fixture
def models(small_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reach for the hub from a test
    monkeypatch.delenv("SUPERSCALE_MODEL_DIR", raising=False)
    return small_model_dir


def test_three_files_are_upscaled_4x_with_their_modes(models: Path, tmp_path: Path) -> None:
    a = make(tmp_path / "in" / "a.png", "RGB", (20, 12))
    b = make(tmp_path / "in" / "b.png", "RGBA", (9, 30))
    c = make(tmp_path / "in" / "c.jpg", "L", (33, 5))
    out = tmp_path / "out"
    result = invoke(a, b, c, "-o", out, "--model-dir", models, "--checkpoint", "v1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a_4x.png", "b_4x.png", "c_4x.png"]
    for name, size, mode in [
        ("a_4x.png", (80, 48), "RGB"),
        ("b_4x.png", (36, 120), "RGBA"),
        ("c_4x.png", (132, 20), "RGB"),
    ]:
        image = opened(out / name)
        assert (image.size, image.mode) == (size, mode)
        assert np.asarray(image).std() > 0  # a picture, not a blank canvas
    assert str(out / "a_4x.png") in result.stdout


def test_folder_with_a_bad_file_reports_it_and_writes_the_rest(
    models: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    make(folder / "one.png", "RGB", (16, 16))
    make(folder / "two.webp", "RGB", (8, 20), lossless=True)
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    (folder / "notes.txt").write_text("not an image, and not picked up")
    out = tmp_path / "out"
    result = invoke(folder, "-o", out, "--model-dir", models, "--format", "webp")
    assert result.exit_code == 1
    assert "broken.png" in result.stderr and "not a supported image" in result.stderr
    assert "1 of 3 inputs failed" in result.stderr
    assert "notes" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["one_4x.webp", "two_4x.webp"]
    assert opened(out / "one_4x.webp").size == (64, 64)
    assert opened(out / "two_4x.webp").size == (32, 80)


def test_single_file_output_keeps_icc_and_takes_format_from_suffix(
    models: Path, tmp_path: Path
) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = make(tmp_path / "photo.png", "RGB", (10, 10), icc_profile=profile)
    target = tmp_path / "result" / "big.jpg"
    result = invoke(src, "-o", target, "--model-dir", models, "--seed", "7")
    assert result.exit_code == 0, result.output
    image = opened(target)
    assert (image.format, image.size) == ("JPEG", (40, 40))
    assert image.info.get("icc_profile") == profile
    assert list(target.parent.iterdir()) == [target]  # no temporary file left behind


def test_missing_input_is_reported_and_the_others_still_run(models: Path, tmp_path: Path) -> None:
    a = make(tmp_path / "x" / "same.png", "RGB", (4, 4))
    b = make(tmp_path / "y" / "same.png", "RGB", (5, 3))
    out = tmp_path / "out"
    result = invoke(tmp_path / "nope.png", a, b, "-o", out, "--model-dir", models)
    assert result.exit_code == 1
    assert "nope.png: no such file or folder" in result.stderr
    assert "1 of 3 inputs failed" in result.stderr
    # Same stem twice: the second gets its own name instead of overwriting the first.
    assert opened(out / "same_4x.png").size == (16, 16)
    assert opened(out / "same_2_4x.png").size == (20, 12)


def test_progress_bar_counts_tiles_of_the_overlapping_pass(models: Path, tmp_path: Path) -> None:
    src = make(tmp_path / "p.png", "RGB", (30, 20))
    out = tmp_path / "p_big.png"
    args = ("--model-dir", models, "--progress", "--overlapping-tiles")
    result = invoke(src, "-o", out, *args)
    assert result.exit_code == 0, result.output
    assert "5/5" in result.stderr  # 1 tile, plus 2x2 in the offset pass
    assert opened(out).size == (120, 80)


def test_scale_sizes_names_and_counts_both_passes(models: Path, tmp_path: Path) -> None:
    src = make(tmp_path / "in" / "s.png", "RGB", (30, 20))
    out = tmp_path / "out"
    result = invoke(src, "-o", out, "--model-dir", models, "--scale", "2.5")
    assert result.exit_code == 0, result.output
    assert opened(out / "s_2.5x.png").size == (75, 50)
    result = invoke(src, "-o", out, "--model-dir", models, "--scale", "6", "--progress")
    assert result.exit_code == 0, result.output
    assert opened(out / "s_6x.png").size == (180, 120)
    assert "5/5" in result.stderr  # 1 tile, then 2×2 on the 120×80 first pass


def test_target_size_overlap_and_quality(models: Path, tmp_path: Path) -> None:
    src = make(tmp_path / "in" / "t.png", "RGB", (30, 20))
    out = tmp_path / "out"
    assert invoke(src, "-o", out, "--model-dir", models, "--width", "90").exit_code == 0
    assert opened(out / "t_90x.png").size == (90, 60)  # aspect kept
    args = ("--width", "50", "--height", "70", "--tile-overlap", "16")
    assert invoke(src, "-o", out, "--model-dir", models, *args).exit_code == 0
    assert opened(out / "t_50x70.png").size == (50, 70)
    sizes = {}
    for quality in ("10", "95"):
        target = tmp_path / f"q{quality}.webp"
        result = invoke(src, "-o", target, "--model-dir", models, "--quality", quality)
        assert result.exit_code == 0, result.output
        sizes[quality] = target.stat().st_size
    assert sizes["10"] < sizes["95"]
    result = invoke(src, "-o", tmp_path / "x.png", "--model-dir", models, "--quality", "50")
    assert result.exit_code == 2 and "png is lossless" in result.stderr


def test_an_output_over_the_limit_is_reported(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERSCALE_MAX_OUTPUT_PIXELS", "10000")
    src = make(tmp_path / "s.png", "RGB", (30, 20))
    result = invoke(src, "-o", tmp_path / "out", "--model-dir", models, "--scale", "5")
    assert result.exit_code == 1 and "SUPERSCALE_MAX_OUTPUT_PIXELS" in result.stderr


def test_same_seed_same_bytes(models: Path, tmp_path: Path) -> None:
    src = make(tmp_path / "s.png", "RGB", (12, 12))
    first, second = tmp_path / "1.png", tmp_path / "2.png"
    for target in (first, second):
        assert invoke(src, "-o", target, "--model-dir", models, "--seed", "3").exit_code == 0
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "v9"], "use v1 or v2"),
        (["--device", "tpu"], "device"),
        (["--dtype", "fp8"], "dtype"),
        (["--format", "gif"], "gif"),
        (["--scale", "17"], "--scale"),
        (["--scale", "0.5"], "--scale"),
    ],
)
def test_bad_options_are_usage_errors(
    models: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    src = make(tmp_path / "s.png", "RGB", (4, 4))
    result = invoke(src, "-o", tmp_path / "out", "--model-dir", models, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_format_conflicting_with_output_suffix_is_refused(tmp_path: Path) -> None:
    src = make(tmp_path / "s.png", "RGB", (4, 4))
    result = invoke(src, "-o", tmp_path / "out.png", "--format", "jpeg")
    assert result.exit_code == 2
    assert "does not match" in result.stderr


def test_missing_checkpoint_is_a_clear_error(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    empty = tmp_path / "no-models"
    empty.mkdir()
    src = make(tmp_path / "s.png", "RGB", (4, 4))
    result = invoke(src, "-o", tmp_path / "out", "--model-dir", empty)
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "v2" in result.stderr
    assert not (tmp_path / "out" / "s_4x.png").exists()


def test_output_too_big_for_the_format_is_refused_before_inference(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4100 px wide → 16400 px out: more than WebP holds. Refused up front, not after 65 tiles.
    # The encoder refuses with the same message, so the upscaler's calls are what tell.
    from superscale.engine import Upscaler

    calls: list[object] = []
    upscale = Upscaler.upscale

    def counted(self: Upscaler, *args: object, **kwargs: object) -> object:
        calls.append(args)
        return upscale(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Upscaler, "upscale", counted)
    src = make(tmp_path / "wide.png", "RGB", (4100, 1))
    result = invoke(src, "-o", tmp_path / "out", "--model-dir", models, "--format", "webp")
    assert result.exit_code == 1
    assert "webp cannot hold a 16400x4 image" in result.stderr
    assert calls == []  # no inference ran
    assert not list((tmp_path / "out").iterdir())
