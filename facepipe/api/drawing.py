"""Photos as the pages show them: shrunk, with the faces outlined, as JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

OUTLINE = (0, 200, 255)
HIGHLIGHT = (255, 214, 0)


def outlined_jpeg(rgb: np.ndarray, faces: list[dict], highlight: set[str], max_side: int) -> bytes:
    """The photo shrunk to `max_side`, each face (`face_id`, `top`, `right`, `bottom`, `left`) outlined,
    the `highlight` faces in yellow and thicker."""
    image = Image.fromarray(rgb)
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for face in faces:
        box = [face["left"] * scale, face["top"] * scale, face["right"] * scale, face["bottom"] * scale]
        chosen = face["face_id"] in highlight
        draw.rectangle(box, outline=HIGHLIGHT if chosen else OUTLINE, width=width * (2 if chosen else 1))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()
