"""YuNet (libfacedetection) through the `yuface` wheel: weights compiled in, nothing downloaded.

`yuface.detect(bgr_uint8)` answers scores 0-100, XYWH boxes and 5 landmarks (eyes, nose tip,
mouth corners). Its boxes are taller than dlib's (forehead to chin) and dlib's 5-point shape
predictor, which places the landmarks the 128-d encoder aligns on, was trained on dlib's own
detector boxes. So each YuNet box is mapped to the box dlib's CNN gives the same face
(`BOX_TO_DLIB`, a fixed affine map in units of the YuNet box), and the embedding runs from that
box exactly as for the other detectors.

How the map was chosen (sample photos: the face_recognition portraits and knn photos, cocoindex,
dlib_faces; 58 faces both detectors found): distance from the CNN-box embedding of the same face,
fitted on half the photos and measured on the other half, median / 90th percentile:
YuNet box as is 0.114 / 0.322; mean affine box map 0.060 / 0.285; linear map of the box from
YuNet's landmarks 0.083 / 0.316; dlib's 5 points built from YuNet's landmarks (mean shape in the
eye frame) 0.311 / 0.453, (linear on nose and mouth) 0.219 / 0.472. On the identity pairs (knn
train + obama3), same-person max / different-person min: CNN 0.430 / 0.775, YuNet box as is
0.452 / 0.703, mapped box 0.432 / 0.755. The mapped box keeps identity best.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np

from facepipe.faces.tiling import DetectorBand, Rect

BOX_TO_DLIB = (-0.10, 0.10, 1.09, 0.81)
"""dlib box from the YuNet box (x, y, w, h): left = x + a*w, top = y + b*h, width = c*w, height = d*h
(means over the 58 faces above)."""

BAND = DetectorBand(min_px=32, max_px=320, tile=1536, pad=0)
"""Measured on obama.jpg shrunk and enlarged: a clean face of 15-18 px scores 0.85, 10 px 0.44; up
to ~320 px they score 0.91-0.95, at 460 px 0.84 and at ~700 px the face is missed. Old, grainy
photos need more: the two ~40 px faces of einplanck3.jpg are found with min_px >= 28 and lost at
20-24, so the finest level keeps a `min_face` face at >= 32 px (photos at their own size by
default). Per-megapixel time is lowest for tiles of 1-1.5k px (5-6 MP/s). Padding the photo's
edges with 32 black pixels found fewer edge-cut faces on the composites (11/27 vs 13/27), so none."""

DEFAULT_MIN_SCORE = 0.7
"""Below ~0.7 YuNet starts to box flag tops, drawings and textures (see BENCHMARKS.md)."""


@cache
def _yuface():
    """Imported on first use, after a worker's initializer has set OMP_NUM_THREADS=1: the bundled
    libgomp reads it when it is loaded."""
    import yuface

    return yuface


def detect(rgb: np.ndarray, min_score: float = DEFAULT_MIN_SCORE) -> list[Rect]:
    """Faces in an RGB image as dlib-style (left, top, right, bottom, score 0-1) in its pixels."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "too large" above 960 px: it is about faces over ~500 px, see BAND
        result = _yuface().c_detect(bgr)
    if result.size == 0:
        return []
    values = result.astype(np.int64)
    values[values > 32767] -= 65536  # XYWH come back as uint16: boxes starting left of / above the image wrap
    a, b, c, d = BOX_TO_DLIB
    out: list[Rect] = []
    for row in values:
        score = float(row[0]) / 100.0
        if score < min_score:
            continue
        x, y, w, h = (float(v) for v in row[1:5])
        left, top = x + a * w, y + b * h
        out.append((left, top, left + c * w, top + d * h, score))
    return out
