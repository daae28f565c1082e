"""Opening hostile and unusual image files: what is rejected, and exact RGB for the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.test_data_factory import jpeg_bytes, rgb_image, png_bomb_bytes, png_bytes, write
from tl_studio.data import ImageRejected, check_image, load_rgb


def _px(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def _noise_png() -> bytes:
    return png_bytes(rgb_image(1, (64, 64)))


# ---- rejected files ----------------------------------------------------------------------------
def test_pixel_count_bomb_rejected_from_header(tmp_path):
    p = write(tmp_path / "huge.png", png_bomb_bytes(100_000, 100_000))
    assert p.stat().st_size < 200
    with pytest.raises(ImageRejected, match="pixel-count bomb"):
        check_image(p)


def test_pixel_cap_does_not_depend_on_pils_global_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone else switched PIL's check off
    p = write(tmp_path / "huge.png", png_bomb_bytes(100_000, 100_000))
    with pytest.raises(ImageRejected, match=r"pixel-count bomb: header claims 100000x100000 = 10,000,000,000 pixels"):
        check_image(p)
    small = write(tmp_path / "small.jpg", jpeg_bytes(1, (48, 40)))
    with pytest.raises(ImageRejected, match="more than the limit 1,000"):
        check_image(small, max_pixels=1000)
    assert check_image(small, max_pixels=48 * 40).width == 48


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes(1, (64, 64))
    p = write(tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(ImageRejected, match="truncated image"):
        check_image(p)


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("text.jpg", b"this is not a picture, it is text\n" * 10, "not an image in an allowed format"),
        ("empty.jpg", b"", "empty file (0 bytes)"),
        # PIL reads PPM, but it is not on the allow-list: the extension does not matter
        ("disguised.png", b"P6\n4 4\n255\n" + bytes(48), "not an image in an allowed format"),
        ("cut.png", _noise_png()[:-20], "truncated image"),
        ("garbled.png", _noise_png()[:200] + bytes(range(256)) * 4 + _noise_png()[1224:], "corrupt image data"),
    ],
)
def test_non_images_rejected(tmp_path, name, data, reason):
    p = write(tmp_path / name, data)
    with pytest.raises(ImageRejected) as err:
        check_image(p)
    assert reason in str(err.value)


# ---- colour modes ---------------------------------------------------------------------------------
def test_cmyk_becomes_rgb(tmp_path):
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    img.paste((0, 0, 0, 255), (0, 0, 4, 8))  # left half black
    img.save(tmp_path / "cmyk.tif")
    px = _px(load_rgb(tmp_path / "cmyk.tif"))
    assert (px[:, :4] == 0).all()
    assert (px[:, 4:] == [255, 0, 0]).all()
    img.save(tmp_path / "cmyk.jpg", quality=95)
    assert check_image(tmp_path / "cmyk.jpg").mode == "CMYK"
    jpx = _px(load_rgb(tmp_path / "cmyk.jpg"))
    assert np.abs(jpx[:, 6:] - [255, 0, 0]).max() < 12


def test_rgba_composites_over_white(tmp_path):
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    a[:, 0] = [255, 0, 0, 255]  # opaque red
    a[:, 1] = [255, 0, 0, 0]  # fully transparent: white
    a[:, 2] = [0, 0, 255, 128]  # half blue over white
    write(tmp_path / "rgba.png", png_bytes(Image.fromarray(a, "RGBA")))
    px = _px(load_rgb(tmp_path / "rgba.png"))
    assert (px[:, 0] == [255, 0, 0]).all()
    assert (px[:, 1] == [255, 255, 255]).all()
    assert np.abs(px[:, 2] - [127, 127, 255]).max() <= 1


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 1))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putdata([0, 1, 0, 1])
    img.info["transparency"] = 0  # index 0 is see-through
    img.save(tmp_path / "pal.png")
    img.save(tmp_path / "pal.gif")
    for name in ("pal.png", "pal.gif"):
        px = _px(load_rgb(tmp_path / name))
        assert (px[0, 0] == [255, 255, 255]).all() and (px[0, 2] == [255, 255, 255]).all(), name
        assert (px[0, 1] == [10, 200, 30]).all(), name


def test_palette_without_transparency_and_greyscale_modes(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([250, 100, 5, 1, 2, 3] + [0] * 762)
    p.putdata([0, 1])
    p.save(tmp_path / "p.png")
    assert _px(load_rgb(tmp_path / "p.png")).tolist() == [[[250, 100, 5], [1, 2, 3]]]

    Image.new("L", (2, 2), 77).save(tmp_path / "l.png")
    assert (_px(load_rgb(tmp_path / "l.png")) == 77).all()

    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert _px(load_rgb(tmp_path / "la.png")).tolist() == [[[255, 255, 255], [0, 0, 0]]]

    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    one.save(tmp_path / "one.bmp")
    assert _px(load_rgb(tmp_path / "one.bmp")).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_16_bit_is_rescaled_not_clipped(tmp_path):
    a = np.array([[0, 25700, 65535, 1000, 40000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert check_image(tmp_path / "g16.png").mode == "I;16"
    px = _px(load_rgb(tmp_path / "g16.png"))
    assert px[0, :, 0].tolist() == [0, 100, 255, 4, 156]  # x / 257, rounded
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()

    # 32-bit integer TIFF: values in the 16-bit range scale the same way ...
    Image.fromarray(a.astype(np.int32), "I").save(tmp_path / "i32.tif")
    assert _px(load_rgb(tmp_path / "i32.tif"))[0, :, 0].tolist() == [0, 100, 255, 4, 156]
    # ... wider ranges are stretched, never clipped at 255
    wide = np.array([[-100, 0, 100_000]], dtype=np.int32)
    Image.fromarray(wide, "I").save(tmp_path / "wide.tif")
    assert _px(load_rgb(tmp_path / "wide.tif"))[0, :, 0].tolist() == [0, 0, 255]


def test_exif_orientation_is_applied(tmp_path):
    # landscape 40x20: left half red, right half blue; EXIF 6 = "rotate 90 degrees clockwise to view"
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = [255, 0, 0]
    a[:, 20:] = [0, 0, 255]
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    p = write(tmp_path / "rotated.jpg", buf.getvalue())

    info = check_image(p)
    assert (info.width, info.height) == (20, 40)
    px = _px(load_rgb(p))
    assert px.shape == (40, 20, 3)  # now portrait
    assert np.abs(px[5, 10] - [255, 0, 0]).max() < 40  # the left (red) half is on top
    assert np.abs(px[35, 10] - [0, 0, 255]).max() < 40


def test_allowed_formats_open(tmp_path):
    img = Image.new("RGB", (16, 12), (10, 120, 230))
    for fmt, ext in [("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tif"), ("WEBP", "webp"), ("JPEG", "jpg")]:
        p = tmp_path / f"x.{ext}"
        img.save(p, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        info = check_image(p)
        assert (info.format, info.width, info.height) == (fmt, 16, 12)
        assert load_rgb(p).size == (16, 12)
