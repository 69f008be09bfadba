"""What every face store offers, so assets, checks and the CLI never care which engine answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from facepipe.faces.records import Box, Face
from facepipe.secrets import describe_dsn, redact

__all__ = ["describe_dsn", "redact"]  # re-exported: the stores mask secrets through these

COLLECTION = "faces"
"""Qdrant collection and Postgres table name (contract)."""

DIM = 128
"""dlib embedding size (contract)."""


class StoreError(RuntimeError):
    """A store is unreachable or misconfigured; the message is safe to show (no secrets)."""


@dataclass(frozen=True, slots=True)
class Match:
    """One stored face as a search answer; `distance` is plain Euclidean (0.0 when not from a search)."""

    face_id: str
    image_key: str
    box: Box
    distance: float
    person_id: str | None = None


@runtime_checkable
class FaceStore(Protocol):
    """Same semantics in Qdrant and pgvector, so either can answer and a check can compare them."""

    def ensure_schema(self) -> None: ...

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None: ...

    def delete_images(self, image_keys: Iterable[str]) -> None: ...

    def delete_faces(self, face_ids: Iterable[str]) -> None: ...

    def search(self, embedding: np.ndarray, top_k: int = 10, max_distance: float | None = None) -> list[Match]: ...

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]: ...

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]: ...

    def faces_of_images(self, image_keys: Iterable[str]) -> dict[str, list[Match]]: ...

    def images_of_person(self, person_id: str) -> list[str]: ...

    def count(self) -> int: ...

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None: ...

    def close(self) -> None: ...


def payload_of(face: Face) -> dict[str, Any]:
    """The record minus embedding and crop, with plain Python types (numpy ints do not serialise)."""
    return {
        "face_id": face.face_id,
        "image_key": face.image_key,
        "sha256": face.sha256,
        "top": int(face.top),
        "right": int(face.right),
        "bottom": int(face.bottom),
        "left": int(face.left),
        "score": None if face.score is None else float(face.score),
        "detector": face.detector,
        "model_version": face.model_version,
        "person_id": face.person_id,
    }


def as_vector(embedding: Any) -> np.ndarray:
    """Validate early: a wrong size fails here with a clear message, not deep inside a client."""
    vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vec.shape != (DIM,):
        raise ValueError(f"embedding must have {DIM} values, got {vec.shape[0]}")
    if not np.isfinite(vec).all():
        raise ValueError("embedding contains NaN or infinity")
    return vec


def as_matrix(embeddings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
        return np.stack([as_vector(row) for row in embeddings]) if len(embeddings) else embeddings
    return np.stack([as_vector(e) for e in embeddings]) if len(embeddings) else np.empty((0, DIM), np.float32)


def batch_faces(faces_by_image: Mapping[str, Sequence[Face]]) -> list[Face]:
    """Every face of a replace batch, checked: a face filed under another image would be deleted by the
    next replace of its own image."""
    for key, faces in faces_by_image.items():
        for face in faces:
            if face.image_key != key:
                raise ValueError(f"face {face.face_id} has image_key {face.image_key!r}, filed under {key!r}")
    return [face for faces in faces_by_image.values() for face in faces]


class StoreBase:
    """What every vector store shares: one search is a batch of one; the schema is made once per client."""

    _schema_done = False

    def ensure_schema(self) -> None:
        raise NotImplementedError

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]:
        raise NotImplementedError

    def search(self, embedding: np.ndarray, top_k: int = 10, max_distance: float | None = None) -> list[Match]:
        return self.search_many([embedding], top_k, max_distance)[0]

    def _ensure_once(self) -> None:
        if not self._schema_done:
            self.ensure_schema()


def within(matches: list[Match], max_distance: float | None) -> list[Match]:
    if max_distance is None:
        return matches
    return [m for m in matches if m.distance <= max_distance]
