"""A corpus of awkward inputs, generated here: each either decodes to the right RGB array or raises
one clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from d2ov_core.errors import ImageError
from d2ov_core.runtime import images


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(w=30000, h=30000) -> bytes:
    """A valid PNG header claiming w x h pixels, with a few KB of data (never decoded)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + w // 8) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _rgb(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _exif_rotated() -> bytes:
    img = Image.fromarray(_rgb(20, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return _save(img, "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((30, 30, 3), v, np.uint8)) for v in (10, 200)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


GOOD = {  # name: (bytes factory, expected (H, W))
    "jpeg": (lambda: _save(Image.fromarray(_rgb()), "JPEG"), (48, 64)),
    "png": (lambda: _save(Image.fromarray(_rgb()), "PNG"), (48, 64)),
    "1x1": (lambda: _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), (1, 1)),
    "4x4000": (lambda: _save(Image.new("RGB", (4000, 4)), "PNG"), (4, 4000)),
    "4000x4": (lambda: _save(Image.new("RGB", (4, 4000)), "PNG"), (4000, 4)),
    "grayscale": (lambda: _save(Image.fromarray(_rgb()[:, :, 0]), "PNG"), (48, 64)),
    "rgba": (lambda: _save(Image.fromarray(np.dstack([_rgb(), np.full((48, 64), 128, np.uint8)])), "PNG"), (48, 64)),
    "palette": (lambda: _save(Image.fromarray(_rgb()).convert("P"), "PNG"), (48, 64)),
    "16bit": (
        lambda: _save(Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20), "PNG"),
        (48, 64),
    ),
    "cmyk_jpeg": (lambda: _save(Image.fromarray(_rgb()).convert("CMYK"), "JPEG"), (48, 64)),
    "exif_rotated": (_exif_rotated, (40, 20)),
    "animated_gif": (_animated_gif, (30, 30)),
    "webp": (lambda: _save(Image.fromarray(_rgb()), "WEBP"), (48, 64)),
    "tiff": (lambda: _save(Image.fromarray(_rgb()), "TIFF"), (48, 64)),
    "bmp": (lambda: _save(Image.fromarray(_rgb()), "BMP"), (48, 64)),
}

BAD = {  # name: (bytes factory, message fragment)
    "zero_bytes": (lambda: b"", "empty file"),
    "random_bytes": (lambda: np.random.default_rng(1).bytes(5000), "not an image"),
    "html_named_jpg": (lambda: b"<!doctype html><html><body>hi</body></html>", "not an image"),
    "truncated_jpeg": (lambda: _save(Image.fromarray(_rgb(200, 200)), "JPEG")[:700], "corrupt or truncated"),
    "truncated_png": (lambda: _save(Image.fromarray(_rgb(200, 200)), "PNG")[:900], "corrupt or truncated"),
    "decompression_bomb": (_png_bomb, "pixels"),
}


@pytest.mark.parametrize("name", GOOD)
def test_good_inputs_decode_to_rgb(name, tmp_path):
    make, (h, w) = GOOD[name]
    path = tmp_path / f"{name}.img"
    path.write_bytes(make())
    arr = images.load_image(path)
    assert arr.dtype == np.uint8 and arr.shape == (h, w, 3)
    assert images.load_image(path.read_bytes()).shape == (h, w, 3)


def test_exif_orientation_and_alpha_and_16bit_values(tmp_path):
    # EXIF 6: the stored 40x20 (WxH) image is displayed 20x40
    assert images.load_image(_exif_rotated()).shape == (40, 20, 3)
    # transparent pixels composite on white
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert np.all(images.load_image(_save(Image.fromarray(rgba), "PNG")) == 255)
    # 16-bit: full range maps to 0..255 monotonically
    ramp = (np.linspace(0, 65535, 64).astype(np.uint16)[None, :]).repeat(2, 0)
    out = images.load_image(_save(Image.fromarray(ramp), "PNG"))[0, :, 0]
    assert out[0] == 0 and out[-1] == 255 and np.all(np.diff(out.astype(int)) >= 0)
    # animated GIF: the first frame
    assert images.load_image(_animated_gif())[0, 0, 0] < 50


@pytest.mark.parametrize("name", BAD)
def test_bad_inputs_raise_one_clear_line(name, tmp_path):
    make, msg = BAD[name]
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(make())
    with pytest.raises(ImageError, match=msg) as exc:
        images.load_image(path)
    assert "\n" not in str(exc.value) and path.name in str(exc.value)


def test_arrays_and_limits(monkeypatch):
    assert images.load_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert images.load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    for bad, msg in [
        (np.zeros((5, 6, 3), np.float32), "uint8"),
        (np.zeros((5, 6, 2), np.uint8), "expected shape"),
        (np.zeros((0, 6, 3), np.uint8), "no pixels"),
        ("not-a-file.png", "image not found"),
        (3, "expected an image"),
    ]:
        with pytest.raises(ImageError, match=msg):
            images.load_image(bad)
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="the limit is 100"):
        images.load_image(np.zeros((20, 20, 3), np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_as_pillow_turns_it(orientation):
    """load_image turns the image in place (no copy when the orientation is 1): the same pixels as
    Pillow's exif_transpose copy, for each of the eight orientations."""
    from PIL import ImageOps

    rgb = np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(rgb), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    got = images.load_image(data)
    assert got.shape == ((50, 30, 3) if orientation >= 5 else (30, 50, 3))
    np.testing.assert_array_equal(got, expected)
