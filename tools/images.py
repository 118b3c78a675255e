"""Open untrusted image files safely: one clear message for anything that is not a usable picture."""

from __future__ import annotations

import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from image2music.tools.errors import InputError

MAX_PIXELS = 64_000_000  # a 8000 x 8000 photo; bigger is refused before decoding


class ImageError(InputError):
    """The file is not an image we can use."""


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An RGB image, EXIF-rotated, first frame of an animation, transparency flattened on white."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a directory, not an image file")
    mode = p.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = (
            "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file"
        )  # fmt: skip
        raise ImageError(f"{p} is {kind}, not an image file")
    if p.stat().st_size == 0:
        raise ImageError(f"{p} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(
                        f"{p} is {w}x{h} pixels, more than the limit of {max_pixels:,}; scale it down first"
                    )
                im.seek(0)
                im.load()
                img = ImageOps.exif_transpose(im) or im
                return _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{p} is too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{p} is not an image file PIL can read (wrong extension or not a picture)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{p} is damaged or truncated: {e}") from e


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def fit_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale ``image`` so that width x height <= ``max_pixels`` (aspect kept)."""
    w, h = image.size
    if max_pixels <= 0 or w * h <= max_pixels:
        return image
    scale = (max_pixels / (w * h)) ** 0.5
    return image.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)
