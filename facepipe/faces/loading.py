"""Decoding photos into upright 8-bit RGB arrays, refusing what would not be safe to decode."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos); optional at import so the core still loads without it.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover
    pass

DEFAULT_MAX_PIXELS = 100_000_000
"""About 10000x10000: far above any camera, far below what would exhaust memory."""

# facepipe checks its own pixel budget from the header (below), with a message that names the size.
Image.MAX_IMAGE_PIXELS = None


class ImageLoadError(ValueError):
    """The bytes are not a photo facepipe can read; the message says why, for the status row."""


def load_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `data` to an upright (EXIF-transposed) HxWx3 uint8 RGB array.

    The pixel budget is checked from the header, before any pixel is decoded, so a
    decompression bomb costs nothing. Multi-frame files (GIF, TIFF) use their first frame.
    """
    return _decode(_open_checked(data, max_pixels))


def load_rgb_shrunk(data: bytes, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """For drawing, not for faces: an upright RGB array at least `max_side` on its longest side (or the
    whole photo, if smaller), and its size over the full photo's.

    A JPEG is decoded straight to 1/2, 1/4 or 1/8 of its size from its DCT (Pillow's draft mode): a
    35 MP photo drawn 512 px wide took 0.05 s and 129 MB of process memory instead of 0.8 s and 452 MB.
    """
    image = _open_checked(data, max_pixels)
    width = image.size[0]
    shrink = max_side / max(image.size)
    if shrink < 1 and image.format == "JPEG":
        image.draft("RGB", (max(1, math.ceil(image.size[0] * shrink)), max(1, math.ceil(image.size[1] * shrink))))
    scale = image.size[0] / width
    return _decode(image), scale


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """The photo opened lazily (no pixel decoded), its size checked against the pixel budget."""
    if not data:
        raise ImageLoadError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageLoadError("not an image Pillow can identify") from None
        except Exception as exc:
            raise ImageLoadError(f"unreadable image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            f"refused: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
            f"over the {max_pixels / 1e6:.0f} MP budget (FACEPIPE_MAX_PIXELS)"
        )
    return image


def _decode(image: Image.Image) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
        except Exception as exc:
            raise ImageLoadError(f"could not decode {image.format or 'image'}: {exc}") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit RGB; transparency goes on white, 16/32-bit depth is scaled down."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def encode_crop(rgb: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.25, size: int = 160) -> bytes:
    """The face with some context, as a small JPEG for viewing (never used for embedding)."""
    top, right, bottom, left = box
    height, width = rgb.shape[:2]
    pad_y, pad_x = int((bottom - top) * margin), int((right - left) * margin)
    region = rgb[max(0, top - pad_y) : min(height, bottom + pad_y), max(0, left - pad_x) : min(width, right + pad_x)]
    crop = Image.fromarray(region)
    crop.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=85)
    return out.getvalue()
