"""Questions people ask of the index: similar faces, photos of a person, the state of things.

Shared by the CLI and the HTTP API, so both answer the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from facepipe.faces.extract import ExtractSettings, extract_faces
from facepipe.faces.loading import ImageLoadError
from facepipe.faces.records import Box, Face
from facepipe.secrets import redact
from facepipe.settings import current
from facepipe.stores.base import FaceStore, Match
from facepipe.stores.parquet import DamagedParquet, ParquetStore

SAME_PERSON = 0.6
"""dlib's documented threshold: the same person is usually closer than this (Euclidean)."""

SAME_PERSON_CUE = 0.5
"""Under this distance the search page marks a match as the same person. Measured on the sample photos
with `benchmarks/people_clustering.py` (the same-person cue line): the nearest two different people are
0.519 apart with HOG and 0.522 with YuNet (a Solvay face and a PASCAL VOC face), while 99% of the
same-person pairs are closer than that; 0.6 would mark strangers (Reagan matched two at 0.558, 0.582)."""


def no_face_found(photo: str) -> str:
    """The one wording for a query photo without a face (CLI commands and the page say the same)."""
    return f"No face found in {photo}."


class QueryImageError(ValueError):
    """The query photo could not be read: the caller's input is at fault (CLI exit 2, HTTP 400)."""


@dataclass
class QueryFace:
    box: Box
    face: Face
    matches: list[Match] = field(default_factory=list)


def faces_in(data: bytes, settings: ExtractSettings | None = None) -> list[Face]:
    """The faces of a query photo, largest first."""
    record = extract_faces(data, "query", settings or current().extract)
    if not record.ok:
        raise QueryImageError(record.reason or "unreadable image")
    return sorted(record.faces, key=lambda f: f.area, reverse=True)


def search(
    data: bytes,
    store: FaceStore,
    top_k: int = 10,
    max_distance: float | None = None,
    settings: ExtractSettings | None = None,
) -> list[QueryFace]:
    """For each face in the photo, the most similar stored faces, nearest first."""
    faces = faces_in(data, settings)
    results = store.search_many([f.embedding for f in faces], top_k=top_k, max_distance=max_distance)
    return [QueryFace(f.box, f, matches) for f, matches in zip(faces, results, strict=True)]


@dataclass
class PersonPhoto:
    image_key: str
    distance: float


def person(
    data: bytes,
    store: FaceStore,
    parquet: ParquetStore,
    max_distance: float = SAME_PERSON,
    settings: ExtractSettings | None = None,
    candidates: int = 1000,
) -> tuple[str | None, list[PersonPhoto]]:
    """Photos containing the person whose face is largest in `data`.

    Through the person's cluster when the nearest stored face belongs to one (so photos where
    they look different still count), by vector distance otherwise. Returns (person_id, photos).
    """
    faces = faces_in(data, settings)
    if not faces:
        return None, []
    return person_of_face(faces[0], store, parquet, max_distance, candidates)


def person_of_face(
    face: Face, store: FaceStore, parquet: ParquetStore, max_distance: float = SAME_PERSON, candidates: int = 1000
) -> tuple[str | None, list[PersonPhoto]]:
    """`person` for a face already extracted (so a caller can tell "no face" from "no match")."""
    matches = store.search(face.embedding, top_k=candidates, max_distance=max_distance)
    best: dict[str, float] = {}
    for match in matches:
        best[match.image_key] = min(best.get(match.image_key, match.distance), match.distance)
    person_id = matches[0].person_id if matches else None
    if person_id:
        for key in store.images_of_person(person_id):
            best.setdefault(key, nearest_in_image(parquet, key, face))
    photos = sorted((PersonPhoto(k, d) for k, d in best.items()), key=lambda p: (p.distance, p.image_key))
    return person_id, photos


def nearest_in_image(parquet: ParquetStore, image_key: str, face: Face) -> float:
    """Distance from `face` to the closest face of one stored image (for photos found via the cluster)."""
    try:
        table = parquet.read_faces(image_key, ["embedding"])
    except DamagedParquet:
        return float("inf")  # found through its cluster all the same; `facepipe index` re-extracts it
    if table.num_rows == 0:
        return float("inf")
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 128)
    return float(np.linalg.norm(vectors - face.embedding, axis=1).min())


def status(parquet: ParquetStore, stores: Mapping[str, FaceStore]) -> dict:
    """Images, errors and face counts per store (the DESIGN's `status --json` document)."""
    images = parquet.images(["image_key", "status", "reason"]).to_pylist()
    doc: dict = {
        "images": len(images),
        "errors": [{"image_key": r["image_key"], "reason": r["reason"]} for r in images if r["status"] != "ok"],
        "parquet": {"faces": parquet.faces(["face_id"]).num_rows},
    }
    if parquet.damaged:  # counted without them; `facepipe index` extracts their photos again
        doc["parquet"]["damaged"] = sorted(str(path) for path in parquet.damaged)
    for name, store in stores.items():
        try:
            doc[name] = {"faces": store.count()}
        except Exception as exc:  # a store that is down is reported, not fatal
            doc[name] = {"faces": None, "error": redact(str(exc))}  # a store's own errors are masked already
    return doc


__all__ = [
    "SAME_PERSON",
    "SAME_PERSON_CUE",
    "ImageLoadError",
    "QueryFace",
    "QueryImageError",
    "no_face_found",
    "person",
    "person_of_face",
    "search",
    "status",
]
