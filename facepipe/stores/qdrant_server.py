"""Faces in a Qdrant server (`QDRANT_URL`), through qdrant-client.

The embedded default is the in-process engine (facepipe.stores.qdrant_edge); `QdrantStore` chooses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from facepipe.faces.records import Face
from facepipe.stores.base import (
    COLLECTION,
    DIM,
    Match,
    StoreBase,
    StoreError,
    as_matrix,
    as_vector,
    batch_faces,
    describe_dsn,
    payload_of,
    within,
)

log = logging.getLogger(__name__)

UPSERT_BATCH = 1024
"""Points per upsert request: one request per batch, small enough for a server's 32 MB body limit."""
SCROLL_PAGE = 10_000
EF_SEARCH = 200
"""HNSW candidates per search (>= top_k), as the embedded engine (BENCHMARKS.md "Scale")."""
_INDEXED = ("image_key", "person_id")
_MATCH_PAYLOAD = ["image_key", "top", "right", "bottom", "left", "person_id"]


def _missing(err: Exception) -> bool:
    if isinstance(err, UnexpectedResponse):
        return err.status_code == 404
    return isinstance(err, ValueError) and "not found" in str(err).lower()


# -- the resource ------------------------------------------------------------------------------------


class ServerQdrantStore(StoreBase):
    """Collection `faces` (128-d, Euclid) on the Qdrant server at `url`; many processes may share it."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        if not url:
            raise ValueError("a Qdrant server needs a url")
        self._url = url
        self._api_key = api_key or None
        self._remote: QdrantClient | None = None
        self._remote_pid: int | None = None
        self._mutex = threading.Lock()
        self._schema_done = False

    def __repr__(self) -> str:
        return f"ServerQdrantStore(url={describe_dsn(self._url)!r}, api_key={'***' if self._api_key else None})"

    @property
    def url(self) -> str:
        """The server's address with any password in it hidden (safe to show)."""
        return describe_dsn(self._url)

    def _where(self) -> str:
        return f"Qdrant at {describe_dsn(self._url)}"

    @contextlib.contextmanager
    def client(self) -> Iterator[QdrantClient]:
        """The client of this process (re-created after a fork: its connections belong to the parent)."""
        with self._mutex:
            if self._remote is None or self._remote_pid != os.getpid():
                self._remote = QdrantClient(url=self._url, api_key=self._api_key, timeout=60)
                self._remote_pid = os.getpid()
            remote = self._remote
        yield remote

    def close(self) -> None:
        with self._mutex:
            remote, self._remote = self._remote, None
            if remote is not None and self._remote_pid == os.getpid():
                remote.close()

    def compact(self, progress: bool = False) -> dict[str, Any]:
        """A server vacuums deleted points with its own optimizers in the background; nothing to force here."""
        return {"points": None, "seconds": 0.0, "note": "a Qdrant server compacts on its own"}

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn transport errors into a message without the api key (the url is redacted)."""
        try:
            yield
        except StoreError:
            raise
        except UnexpectedResponse as err:
            if err.status_code in (401, 403):
                raise StoreError(f"the {self._where()} refused the API key (HTTP {err.status_code})") from None
            raise
        except ResponseHandlingException as err:
            cause = type(err.source).__name__ if getattr(err, "source", None) else "no response"
            raise StoreError(f"cannot reach the {self._where()}: {cause}") from None
        except Exception as err:
            if type(err).__module__.startswith(("httpx", "httpcore", "grpc")):
                raise StoreError(f"cannot reach the {self._where()}: {type(err).__name__}") from None
            raise

    # -- schema ---------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self._errors(), self.client() as c:
            if not c.collection_exists(COLLECTION):
                try:
                    c.create_collection(
                        COLLECTION,
                        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
                    )
                except (UnexpectedResponse, ValueError):
                    if not c.collection_exists(COLLECTION):  # else: another process created it first
                        raise
            info = c.get_collection(COLLECTION)
            vectors = info.config.params.vectors
            if not isinstance(vectors, models.VectorParams) or (vectors.size, vectors.distance) != (
                DIM,
                models.Distance.EUCLID,
            ):
                raise StoreError(
                    f"the {self._where()} has a collection '{COLLECTION}' with vectors {vectors}, "
                    f"expected {DIM} dimensions with Euclid distance"
                )
            for field in _INDEXED:
                if field in (info.payload_schema or {}):
                    continue
                c.create_payload_index(COLLECTION, field, models.PayloadSchemaType.KEYWORD, wait=True)
        self._schema_done = True

    # -- writes ---------------------------------------------------------------------------------------

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None:
        """Upsert every new point first, then delete each image's other points."""
        if not faces_by_image:
            return
        faces = batch_faces(faces_by_image)
        new_ids = {f.face_id for f in faces}
        self._ensure_once()
        with self._errors(), self.client() as c:
            for start in range(0, len(faces), UPSERT_BATCH):
                chunk = faces[start : start + UPSERT_BATCH]
                c.upsert(
                    COLLECTION,
                    points=models.Batch(
                        ids=[f.face_id for f in chunk],
                        vectors=[as_vector(f.embedding).tolist() for f in chunk],
                        payloads=[payload_of(f) for f in chunk],
                    ),
                    wait=True,
                )
            existing = self._ids_where(c, list(faces_by_image))
            stale = [fid for ids in existing.values() for fid in ids if fid not in new_ids]
            if stale:
                c.delete(COLLECTION, points_selector=models.PointIdsList(points=stale), wait=True)

    def delete_images(self, image_keys: Iterable[str]) -> None:
        keys = list(image_keys)
        if keys:
            self._delete(models.FilterSelector(filter=_keys_filter(keys)))

    def delete_faces(self, face_ids: Iterable[str]) -> None:
        ids = list(face_ids)
        if ids:
            self._delete(models.PointIdsList(points=ids))

    def _delete(self, selector: models.FilterSelector | models.PointIdsList) -> None:
        with self._errors(), self.client() as c:
            try:
                c.delete(COLLECTION, points_selector=selector, wait=True)
            except (UnexpectedResponse, ValueError) as err:
                if not _missing(err):  # nothing to delete before the collection exists
                    raise

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None:
        if not mapping:
            return
        with self._errors(), self.client() as c:
            # set_payload fails on unknown ids; pgvector's UPDATE skips them, so skip them here too.
            known: set[str] = set()
            ids = [str(uuid.UUID(k)) for k in mapping]
            for start in range(0, len(ids), SCROLL_PAGE):
                try:
                    found = c.retrieve(COLLECTION, ids[start : start + SCROLL_PAGE], with_payload=False)
                except (UnexpectedResponse, ValueError) as err:
                    if _missing(err):  # no collection yet (a forget re-clustering before the first export)
                        return
                    raise
                known.update(str(p.id) for p in found)
            by_person: dict[str | None, list[str]] = {}
            for fid, person in mapping.items():
                if str(uuid.UUID(fid)) in known:
                    by_person.setdefault(person, []).append(str(uuid.UUID(fid)))
            ops = [
                models.SetPayloadOperation(set_payload=models.SetPayload(payload={"person_id": person}, points=fids))
                for person, fids in by_person.items()
            ]
            for start in range(0, len(ops), UPSERT_BATCH):
                c.batch_update_points(COLLECTION, ops[start : start + UPSERT_BATCH], wait=True)

    # -- reads ----------------------------------------------------------------------------------------

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]:
        queries = as_matrix(embeddings)
        if top_k <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        requests = [
            models.QueryRequest(
                query=q.tolist(),
                limit=top_k,
                with_payload=_MATCH_PAYLOAD,
                score_threshold=max_distance,
                params=models.SearchParams(hnsw_ef=max(EF_SEARCH, top_k)),
            )
            for q in queries
        ]
        with self._errors(), self.client() as c:
            try:
                responses = c.query_batch_points(COLLECTION, requests=requests)
            except (UnexpectedResponse, ValueError) as err:
                if _missing(err):
                    return [[] for _ in range(len(queries))]
                raise
        return [within([_match(p, p.score) for p in r.points], max_distance) for r in responses]

    def _ids_where(self, c: QdrantClient, keys: list[str] | None) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {k: set() for k in keys} if keys is not None else {}
        if keys == []:
            return out
        offset = None
        while True:
            points, offset = c.scroll(
                COLLECTION,
                scroll_filter=None if keys is None else _keys_filter(keys),
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=["image_key"],
                with_vectors=False,
            )
            for p in points:
                out.setdefault(p.payload["image_key"], set()).add(str(p.id))
            if offset is None:
                return out

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        keys = None if image_keys is None else list(image_keys)
        with self._errors(), self.client() as c:
            try:
                return self._ids_where(c, keys)
            except (UnexpectedResponse, ValueError) as err:
                if _missing(err):
                    return {k: set() for k in keys or ()}
                raise

    def faces_of_images(self, image_keys: Iterable[str]) -> dict[str, list[Match]]:
        keys = list(image_keys)
        out: dict[str, list[Match]] = {k: [] for k in keys}
        if not keys:
            return out
        with self._errors(), self.client() as c:
            offset = None
            while True:
                try:
                    points, offset = c.scroll(
                        COLLECTION,
                        scroll_filter=_keys_filter(keys),
                        limit=SCROLL_PAGE,
                        offset=offset,
                        with_payload=_MATCH_PAYLOAD,
                        with_vectors=False,
                    )
                except (UnexpectedResponse, ValueError) as err:
                    if _missing(err):
                        return out
                    raise
                for p in points:
                    out[p.payload["image_key"]].append(_match(p))
                if offset is None:
                    break
        for matches in out.values():
            matches.sort(key=lambda m: (m.box[0], m.box[3]))
        return out

    def images_of_person(self, person_id: str) -> list[str]:
        flt = models.Filter(must=[models.FieldCondition(key="person_id", match=models.MatchValue(value=person_id))])
        keys: set[str] = set()
        with self._errors(), self.client() as c:
            offset = None
            while True:
                try:
                    points, offset = c.scroll(
                        COLLECTION,
                        scroll_filter=flt,
                        limit=SCROLL_PAGE,
                        offset=offset,
                        with_payload=["image_key"],
                        with_vectors=False,
                    )
                except (UnexpectedResponse, ValueError) as err:
                    if _missing(err):
                        return []
                    raise
                keys.update(p.payload["image_key"] for p in points)
                if offset is None:
                    break
        return sorted(keys)

    def count(self) -> int:
        with self._errors(), self.client() as c:
            try:
                return c.count(COLLECTION, exact=True).count
            except (UnexpectedResponse, ValueError) as err:
                if _missing(err):
                    return 0
                raise


def _keys_filter(keys: list[str]) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="image_key", match=models.MatchAny(any=keys))])


def _match(point: Any, distance: float = 0.0) -> Match:
    p = point.payload
    box = (int(p["top"]), int(p["right"]), int(p["bottom"]), int(p["left"]))
    return Match(str(point.id), p["image_key"], box, float(distance), p.get("person_id"))
