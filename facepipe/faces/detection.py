"""Face detection: the detectors behind one call, boxes in full-size upright pixels.

Where each detector looks (working scales, tiles, padding, merging) is facepipe.faces.tiling's
job: `min_face` pixels of the original photo are kept at every photo size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dlib
import numpy as np

from facepipe.faces import models, tiling, yunet
from facepipe.faces.records import Box

DETECTOR_WINDOW_PX = 64
"""Smallest face box (pixels) dlib's CNN and HOG detectors find at upsample 0, measured on obama.jpg."""

DLIB_BAND = tiling.DetectorBand(
    min_px=DETECTOR_WINDOW_PX, max_px=512, tile=2048, pad=0, whole_pyramid=True, upsample_steps=True
)
"""dlib's detectors scan their own image pyramid, so one tile finds faces of any size it holds; 2x
levels are left to dlib (a 32 px minimum on a small photo is face_recognition's upsample=1)."""

DETECTORS = ("yunet", "cnn", "hog")
TILING_VERSION = "t2"
"""Part of the code version: bump when plan()/search() change which faces are found."""


@dataclass(frozen=True)
class DetectSettings:
    detector: str = "yunet"  # "yunet" | "cnn" | "hog"
    upsample: int | None = None  # None: derive the scale from min_face; n: a 2**n working scale
    min_face: int = 32  # smallest face (pixels of the full image) to find, at any photo size
    max_side: int = 0  # > 0: cap the finest working image's longest side (speed over small faces)
    min_score: float = yunet.DEFAULT_MIN_SCORE  # yunet only: lowest score kept (0-1)

    def tag(self) -> str:
        size = f"min{self.min_face}" if self.upsample is None else f"up{self.upsample}"
        cap = f"-max{self.max_side}" if self.max_side > 0 else ""
        score = f"-s{self.min_score:g}" if self.detector == "yunet" else ""
        return f"{self.detector}{score}-{size}{cap}-{TILING_VERSION}"

    def effective_min_face(self) -> float:
        """The min_face the working scale is derived from (an explicit upsample fixes the scale instead)."""
        if self.upsample is None:
            return float(self.min_face)
        return self.band().min_px / 2**self.upsample

    def band(self) -> tiling.DetectorBand:
        if self.detector == "yunet":
            return yunet.BAND
        if self.detector in ("cnn", "hog"):
            return DLIB_BAND
        raise ValueError(f"unknown detector {self.detector!r} (expected one of {', '.join(DETECTORS)})")


@dataclass(frozen=True)
class Detection:
    box: Box  # full-size, upright coordinates
    score: float | None


def detect(rgb: np.ndarray, settings: DetectSettings, engines: models.Engines | None = None) -> list[Detection]:
    """Faces in an upright RGB image, boxes in its own pixel coordinates."""
    band = settings.band()
    run = _engine(settings, engines or models.Engines())
    height, width = rgb.shape[:2]
    rects = tiling.search(rgb, band, settings.effective_min_face(), run, settings.max_side)
    detections = []
    for left, top, right, bottom, score in sorted(rects, key=lambda r: (r[1], r[0])):
        box = _to_full_size(top, right, bottom, left, height, width)
        if box[2] > box[0] and box[1] > box[3]:
            detections.append(Detection(box, score))
    return detections


def _engine(settings: DetectSettings, engines: models.Engines):
    """run(image, upsample) -> [(left, top, right, bottom, score)] in the image's pixels."""
    if settings.detector == "yunet":
        return lambda image, upsample: yunet.detect(image, settings.min_score)
    if (
        settings.detector == "cnn"
        and engines.cnn == "onnx"
        and (fast := models.fast_cnn(engines.threads, engines.providers)) is not None
    ):
        return lambda image, upsample: [
            (*_rect(dlib.rectangle(*rect)), score) for rect, score in fast.detect(image, upsample)
        ]
    if settings.detector == "cnn":
        return lambda image, upsample: [
            (*_rect(d.rect), float(d.confidence)) for d in models.cnn_detector()(image, upsample)
        ]
    if settings.detector == "hog":
        return lambda image, upsample: [(*_rect(r), None) for r in models.hog_detector()(image, upsample)]
    raise ValueError(f"unknown detector {settings.detector!r} (expected one of {', '.join(DETECTORS)})")


def _rect(rect: dlib.rectangle) -> tuple[int, int, int, int]:
    return rect.left(), rect.top(), rect.right(), rect.bottom()


def _to_full_size(top: float, right: float, bottom: float, left: float, height: int, width: int) -> Box:
    """Round and clip to the image (boxes may overhang the border)."""
    return (
        max(0, math.floor(top + 0.5)),
        min(width - 1, math.floor(right + 0.5)),
        min(height - 1, math.floor(bottom + 0.5)),
        max(0, math.floor(left + 0.5)),
    )
