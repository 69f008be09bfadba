"""The records facepipe produces: one per detected face, one per image."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from facepipe.faces.metadata import PhotoMetadata

# Fixed namespace so face ids are reproducible across machines and re-runs.
FACE_NAMESPACE = uuid.UUID("6f1c2a3e-52d4-4f0b-9a57-3c1d7e0f9b21")

Box = tuple[int, int, int, int]
"""(top, right, bottom, left) in pixels of the upright, full-size image (face_recognition's order)."""


def face_id(image_key: str, sha256: str, box: Box) -> str:
    """Stable id: the same face of the same file content gets the same id on every run."""
    top, right, bottom, left = box
    return str(uuid.uuid5(FACE_NAMESPACE, f"{image_key}\x1f{sha256}\x1f{top},{right},{bottom},{left}"))


@dataclass(frozen=True, slots=True)
class Face:
    face_id: str
    image_key: str
    sha256: str
    top: int
    right: int
    bottom: int
    left: int
    score: float | None
    detector: str
    embedding: np.ndarray  # (128,) float32
    crop: bytes
    model_version: str
    person_id: str | None = None

    @property
    def box(self) -> Box:
        return (self.top, self.right, self.bottom, self.left)

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


@dataclass(slots=True)
class ImageRecord:
    """What happened to one image: `ok` with its faces, or `error` with the reason."""

    image_key: str
    sha256: str
    status: str  # "ok" | "error"
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    detector: str | None = None
    model_version: str | None = None
    seconds: float = 0.0
    faces: list[Face] = field(default_factory=list)
    metadata: PhotoMetadata = field(default_factory=PhotoMetadata)  # EXIF date, camera, GPS, file size

    @property
    def face_count(self) -> int:
        return len(self.faces)

    @property
    def ok(self) -> bool:
        return self.status == "ok"
