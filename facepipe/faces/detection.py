"""Face detection at a working scale chosen from the photo's size, boxes mapped back to full size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image

from facepipe.faces import models
from facepipe.faces.records import Box

DETECTOR_WINDOW_PX = 64
"""Smallest face box (pixels) dlib's CNN and HOG detectors find at upsample 0, measured on obama.jpg."""


@dataclass(frozen=True)
class DetectSettings:
    detector: str = "cnn"  # "cnn" | "hog"
    upsample: int | None = None  # None: derive the scale from min_face; n: dlib-style 2**n upscale
    min_face: int = 32  # smallest face (pixels of the full image) to find when upsample is None
    max_side: int = 2560  # longest side of the working image; caps time and memory on huge photos

    def tag(self) -> str:
        up = "auto" if self.upsample is None else str(self.upsample)
        return f"{self.detector}-up{up}-min{self.min_face}-max{self.max_side}"


@dataclass(frozen=True)
class Detection:
    box: Box  # full-size, upright coordinates
    score: float | None


def working_scale(height: int, width: int, settings: DetectSettings) -> tuple[float, int]:
    """(downscale, dlib upsample count) so faces of `min_face` px reach the detector's window.

    Upscaling is left to dlib's own pyramid (2x per step) so results match face_recognition's;
    only photos larger than `max_side` are shrunk first.
    """
    if settings.upsample is not None:
        upsample = settings.upsample
    else:
        upsample = max(0, math.ceil(math.log2(DETECTOR_WINDOW_PX / max(settings.min_face, 1)) - 1e-9))
        upsample = min(upsample, 1)
    longest = max(height, width) * 2**upsample
    while upsample > 0 and longest > settings.max_side:
        upsample, longest = upsample - 1, longest / 2
    return min(1.0, settings.max_side / longest), upsample


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    if math.isclose(scale, 1.0, rel_tol=1e-3):
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def detect(rgb: np.ndarray, settings: DetectSettings, engines: models.Engines | None = None) -> list[Detection]:
    """Faces in an upright RGB image, boxes in its own pixel coordinates."""
    height, width = rgb.shape[:2]
    scale, upsample = working_scale(height, width, settings)
    work = resize(rgb, scale)
    engines = engines or models.Engines()
    if (
        settings.detector == "cnn"
        and engines.cnn == "onnx"
        and (fast := models.fast_cnn(engines.threads, engines.providers)) is not None
    ):
        found = [(dlib.rectangle(*rect), score) for rect, score in fast.detect(work, upsample)]
    elif settings.detector == "cnn":
        found = [(d.rect, float(d.confidence)) for d in models.cnn_detector()(work, upsample)]
    elif settings.detector == "hog":
        found = [(rect, None) for rect in models.hog_detector()(work, upsample)]
    else:
        raise ValueError(f"unknown detector {settings.detector!r} (expected cnn or hog)")
    detections = []
    for rect, score in found:
        box = _to_full_size(rect.top(), rect.right(), rect.bottom(), rect.left(), scale, height, width)
        if box[2] > box[0] and box[1] > box[3]:
            detections.append(Detection(box, score))
    return detections


def _to_full_size(top: int, right: int, bottom: int, left: int, scale: float, height: int, width: int) -> Box:
    """Undo the working scale and clip to the image (dlib boxes may overhang the border)."""
    return (
        max(0, round(top / scale)),
        min(width - 1, round(right / scale)),
        min(height - 1, round(bottom / scale)),
        max(0, round(left / scale)),
    )
