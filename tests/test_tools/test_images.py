"""Untrusted image files: converted correctly or refused with one clear message."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image2music.tools.images import ImageError, load_image


def _save(im: Image.Image, path: Path, **kw: object) -> Path:
    im.save(path, **kw)
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p, "not found"),
        (lambda p: (p.mkdir(), p)[1], "directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_text("hello, I am text"), p)[1], "not an image"),
    ],
)
def test_refused(tmp_path: Path, make, needle: str) -> None:  # noqa: ANN001
    p = make(tmp_path / "x.jpg")
    with pytest.raises(ImageError, match=needle):
        load_image(p)


def test_truncated_png(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (1, 2, 3)).save(buf, format="PNG")
    p = tmp_path / "t.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(p)


@pytest.mark.slow
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    p = _save(Image.new("1", (30000, 30000)), tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(p)


def test_modes_are_converted(tmp_path: Path) -> None:
    sixteen = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    assert load_image(_save(sixteen, tmp_path / "16.png")).mode == "RGB"
    assert load_image(_save(Image.new("CMYK", (20, 20), (0, 50, 100, 0)), tmp_path / "c.jpg")).mode == "RGB"
    pal = Image.new("P", (10, 10), 0)
    pal.info["transparency"] = 0
    out = load_image(_save(pal, tmp_path / "p.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 255, 0)]]
    p = tmp_path / "a.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert load_image(p).getpixel((0, 0))[0] > 200


def test_exif_rotation(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    p = tmp_path / "r.jpg"
    im.save(p, exif=exif)
    assert load_image(p).size == (20, 40)
