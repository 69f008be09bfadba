"""Photos as the pages show them: shrunk, with the faces outlined, as JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

OUTLINE = (0, 200, 255)
HIGHLIGHT = (255, 214, 0)


def outlined_jpeg(
    rgb: np.ndarray, faces: list[dict], highlight: set[str], max_side: int, decoded_scale: float = 1.0
) -> bytes:
    """The photo shrunk to `max_side`, each face (`face_id`, `top`, `right`, `bottom`, `left`, in full-size
    pixels) outlined, the `highlight` faces in yellow and thicker. `decoded_scale`: `rgb`'s size over the
    full photo's (a JPEG decoded at a fraction of its size)."""
    image = Image.fromarray(rgb)
    shrink = min(1.0, max_side / max(image.size))
    if shrink < 1.0:
        image = image.resize((round(image.width * shrink), round(image.height * shrink)), Image.Resampling.LANCZOS)
    scale = shrink * decoded_scale
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for face in faces:
        box = [face["left"] * scale, face["top"] * scale, face["right"] * scale, face["bottom"] * scale]
        chosen = face["face_id"] in highlight
        draw.rectangle(box, outline=HIGHLIGHT if chosen else OUTLINE, width=width * (2 if chosen else 1))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()
