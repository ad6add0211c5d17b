"""`tlbench.images.open_rgb`: every file ends up as upright 8-bit RGB with the right values."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, UnidentifiedImageError

from tlbench.images import FileImages, is_image_file, open_rgb, to_rgb


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_rgb_passes_through_unchanged(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    out = open_rgb(tmp_path / "x.png")
    assert out.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(out), array)


def test_greyscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 100, 255]], np.uint8)).save(tmp_path / "g.png")
    out = _pixels(open_rgb(tmp_path / "g.png"))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [100, 100, 100], [255, 255, 255]])


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        # The case this guards: Pillow's own conversion clips 16-bit to white.
        assert raw.mode.startswith("I")
        assert np.asarray(raw.convert("RGB"))[0, 2, 0] == 255
    out = _pixels(open_rgb(tmp_path / "deep.png"))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_mode_i_with_16bit_range_and_float_images_are_scaled() -> None:
    as_i = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert as_i.mode == "I"
    assert _pixels(to_rgb(as_i))[0, :, 0].tolist() == [0, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert _pixels(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], np.float32))
    assert _pixels(to_rgb(wide))[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.array(
        [[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]],
        np.uint8,  # opaque red, fully transparent black, half-transparent blue
    )
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = _pixels(open_rgb(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]  # not the black under the transparency
    assert out[0, 2].tolist() == pytest.approx([127, 127, 255], abs=1)


def test_transparent_colour_of_rgb_and_greyscale_pngs_becomes_white(tmp_path: Path) -> None:
    rgb = np.array([[[10, 20, 30], [200, 100, 50]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "t.png", transparency=(10, 20, 30))
    assert _pixels(open_rgb(tmp_path / "t.png"))[0].tolist() == [[255, 255, 255], [200, 100, 50]]
    Image.fromarray(np.array([[0, 90]], np.uint8)).save(tmp_path / "g.png", transparency=0)
    assert _pixels(open_rgb(tmp_path / "g.png"))[0].tolist() == [[255, 255, 255], [90, 90, 90]]


def test_greyscale_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    la = Image.fromarray(np.array([[[0, 255], [0, 0]]], np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    out = _pixels(open_rgb(tmp_path / "la.png"))
    assert out[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_palette_images_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png")
    assert _pixels(open_rgb(tmp_path / "p.png"))[0].tolist() == [[255, 0, 0], [0, 255, 0]]
    palette.save(tmp_path / "pt.png", transparency=1)  # index 1 is transparent
    assert _pixels(open_rgb(tmp_path / "pt.png"))[0].tolist() == [[255, 0, 0], [255, 255, 255]]
    palette.save(tmp_path / "p.gif", transparency=1)
    assert _pixels(open_rgb(tmp_path / "p.gif"))[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    out = _pixels(open_rgb(tmp_path / "c.jpg"))
    assert out[4, 4].tolist() == pytest.approx([255, 0, 0], abs=8)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # A 16 wide, 8 tall image, left half black and right half white, tagged
    # "rotate 90 clockwise to display" (orientation 6).
    array = np.zeros((8, 16, 3), np.uint8)
    array[:, 8:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    out = _pixels(open_rgb(tmp_path / "r.jpg"))
    assert out.shape == (16, 8, 3)
    # After the clockwise turn the stored left (black) half is on top.
    assert out[2, 4].mean() < 30 and out[13, 4].mean() > 225


def test_truncated_jpeg_raises_instead_of_loading_grey(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(OSError, match="truncated"):
        open_rgb(tmp_path / "cut.jpg")


def test_not_an_image_raises(tmp_path: Path) -> None:
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(UnidentifiedImageError):
        open_rgb(tmp_path / "fake.jpg")
    with pytest.raises(FileNotFoundError):
        open_rgb(tmp_path / "missing.png")


def test_is_image_file() -> None:
    assert is_image_file("a.JPG") and is_image_file("b.tiff") and is_image_file("c.webp")
    assert not is_image_file("notes.txt") and not is_image_file(".hidden.jpg")


def test_file_images_is_an_image_source(tmp_path: Path) -> None:
    from tlbench.plugin_types import ImageSource

    Image.new("L", (3, 2), 7).save(tmp_path / "a.png")
    source = FileImages([tmp_path / "a.png"], [4])
    assert isinstance(source, ImageSource)
    assert len(source) == 1 and source.labels == [4]
    assert source.describe(0) == str(tmp_path / "a.png")
    assert source.load(0).mode == "RGB"
    with pytest.raises(ValueError):
        FileImages([tmp_path / "a.png"], [])
