"""128-d face embeddings from the full-size image and the detected boxes.

Encoding from the full image (landmarks, then dlib's aligned 150x150 chip) is measurably more
accurate than re-encoding a saved crop, and all faces of a photo go to dlib in one call.
"""

from __future__ import annotations

import dlib
import numpy as np

from facepipe.faces import models
from facepipe.faces.records import Box


def embed(rgb: np.ndarray, boxes: list[Box], num_jitters: int = 1) -> np.ndarray:
    """One float32 row of 128 per box, in the order of `boxes`."""
    if not boxes:
        return np.zeros((0, 128), dtype=np.float32)
    predictor = models.landmarks_5pt()
    shapes = dlib.full_object_detections()
    for top, right, bottom, left in boxes:
        shapes.append(predictor(rgb, dlib.rectangle(left, top, right, bottom)))
    vectors = models.encoder().compute_face_descriptor(rgb, shapes, num_jitters)
    return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)
