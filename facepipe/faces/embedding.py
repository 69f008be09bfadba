"""128-d face embeddings from the full-size image and the detected boxes.

Encoding from the full image (landmarks, then dlib's aligned 150x150 chip) is measurably more
accurate than re-encoding a saved crop, and all faces of a photo go through the encoder in one
batch. The landmarks are dlib's 5-point shape predictor; the encoder network runs on onnxruntime
(encoder.py, same descriptors) unless ``engines.embed`` is ``dlib`` or jitters are asked for
(dlib's jitter draws random crops from its own generator, so only dlib can reproduce it).
"""

from __future__ import annotations

import numpy as np

from facepipe.faces import models
from facepipe.faces.models import Engines
from facepipe.faces.records import Box

DIM = 128


def embed(rgb: np.ndarray, boxes: list[Box], num_jitters: int = 1, engines: Engines | None = None) -> np.ndarray:
    """One float32 row of 128 per box, in the order of `boxes`."""
    if not boxes:
        return np.zeros((0, DIM), dtype=np.float32)
    import dlib

    engines = engines or Engines()
    predictor = models.landmarks_5pt()
    shapes = dlib.full_object_detections()
    for top, right, bottom, left in boxes:
        shapes.append(predictor(rgb, dlib.rectangle(left, top, right, bottom)))
    fast = models.fast_encoder(engines.threads, engines.providers) if engines.embed == "onnx" else None
    if fast is not None and num_jitters <= 1:
        return fast.face_descriptors(rgb, shapes)
    vectors = models.encoder().compute_face_descriptor(rgb, shapes, num_jitters)
    return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)
