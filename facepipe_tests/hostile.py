"""A corpus of hostile and odd files, generated (no binary fixtures in the repo)."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe_tests.conftest import FR

# EXIF orientation -> the transpose that, applied to the upright photo, gives the stored pixels.
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def oriented(upright: Image.Image, orientation: int) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF tag that turns them back."""
    transpose = STORED[orientation]
    stored = upright.transpose(transpose) if transpose is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=92, exif=exif.tobytes())


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (with a correct CRC) claiming a huge size, and no pixels."""
    png = encode(Image.new("L", (1, 1)), "PNG")
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    return png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]


def portrait() -> Image.Image:
    return Image.open(FR / "tests/test_images/obama.jpg").convert("RGB")


def good_files() -> dict[str, bytes]:
    """Files with exactly one face each, in every format and mode a photo library may hold."""
    face = portrait()
    small = face.resize((face.width // 2, face.height // 2))
    heif = None
    try:
        import pillow_heif

        out = io.BytesIO()
        pillow_heif.from_pillow(small).save(out, format="HEIF", quality=85)
        heif = out.getvalue()
    except ImportError:  # pragma: no cover
        pass
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tiff = io.BytesIO()
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:])
    sixteen = Image.fromarray((np.asarray(small.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    files = {
        "formats/alpha.png": encode(small.convert("RGBA"), "PNG"),
        "formats/sixteen-bit.png": encode(sixteen, "PNG"),
        "formats/cmyk.jpg": encode(small.convert("CMYK"), "JPEG", quality=90),
        "formats/gray.jpg": encode(small.convert("L"), "JPEG", quality=90),
        "formats/palette.png": encode(small.convert("P"), "PNG"),
        "formats/animated.gif": gif.getvalue(),
        "formats/photo.webp": encode(small, "WEBP", quality=85),
        "formats/pages.tiff": tiff.getvalue(),
        **{f"orientation/{n}.jpg": oriented(small, n) for n in STORED},
    }
    if heif:
        files["formats/photo.heic"] = heif
    return files


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a word the error reason must contain)."""
    whole = (FR / "tests/test_images/obama.jpg").read_bytes()
    rng = np.random.default_rng(7)
    return {
        "bad/empty.jpg": (b"", "empty"),
        "bad/truncated.jpg": (whole[: len(whole) // 3], "truncated"),
        "bad/random.jpg": (rng.bytes(50_000), "identify"),
        "bad/text.jpg": (b"Just some notes, saved with the wrong name.\n" * 20, "identify"),
        "bad/bomb.png": (png_claiming(60000, 60000), "60000x60000"),
    }


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def link_outside(root: Path, target: Path) -> Path:
    """A symlink inside the images folder pointing at a photo outside it."""
    link = root / "bad/outside.jpg"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return link
