"""Faces in Qdrant: a server from QDRANT_URL, or qdrant-client's embedded local mode under the data folder.

Local mode holds an exclusive file lock on its folder for as long as a client is open, and a second client
on the same folder fails even in the same process. So: one client per folder per process, shared by every
`QdrantStore` and serialised by a lock (the local client is not thread-safe either); it is opened for the
outermost `with store.client():` block and closed when that block ends, so other processes can get in.
A process that finds the folder locked waits with backoff up to `lock_timeout` seconds, then fails with
a message that names the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import PrivateAttr
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from facepipe.faces.records import Face
from facepipe.stores.base import (
    COLLECTION,
    DIM,
    Match,
    StoreError,
    as_matrix,
    as_vector,
    check_batch,
    payload_of,
    redact,
    resolve,
    within,
)

log = logging.getLogger(__name__)

UPSERT_BATCH = 1024
"""Points per upsert request: one request per batch, small enough for a server's 32 MB body limit."""
SCROLL_PAGE = 10_000
_INDEXED = ("image_key", "person_id")
_MATCH_PAYLOAD = ["image_key", "top", "right", "bottom", "left", "person_id"]


# -- the one local client per folder per process ------------------------------------------------------


def _lock_holders(lock_file: Path) -> list[int]:
    """Pids holding a flock on `lock_file`, from /proc/locks (Linux; best effort, for the error message)."""
    try:
        inode = lock_file.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(parts[4]))
    return pids


def _lock_is_free(folder: Path) -> bool:
    """Probe the folder's lock without loading the collection (QdrantLocal loads everything, then locks)."""
    lock_file = folder / ".lock"
    try:
        with open(lock_file, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True
    except FileNotFoundError:
        return True


def _open_local(folder: Path, timeout: float) -> QdrantClient:
    deadline = time.monotonic() + max(0.0, timeout)
    delay, told = 0.05, False
    while True:
        if _lock_is_free(folder):
            try:
                return QdrantClient(path=str(folder))
            except RuntimeError as err:  # lost a race with another process between probe and open
                if "already accessed" not in str(err):
                    raise
        remaining = deadline - time.monotonic()
        holders = _lock_holders(folder / ".lock")
        who = f"pid {', '.join(map(str, holders))}" if holders else "pid unknown"
        if remaining <= 0:
            raise StoreError(
                f"the embedded Qdrant at {folder} is in use by another process ({who}); waited "
                f"{timeout:g} s for it to finish. Stop that process or wait for it, or set QDRANT_URL "
                "to use a Qdrant server, which many processes can share."
            )
        if not told:
            log.info("embedded Qdrant at %s is locked by %s; waiting up to %g s", folder, who, timeout)
            told = True
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)


class _LocalSlot:
    """The shared client for one folder in this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.RLock()
        self.client: QdrantClient | None = None
        self.depth = 0
        self.keep_open = 0  # stores asking to keep the client between operations

    @contextlib.contextmanager
    def use(self, timeout: float) -> Iterator[QdrantClient]:
        if not self.lock.acquire(timeout=max(0.0, timeout)):
            raise StoreError(
                f"the embedded Qdrant at {self.folder} stayed busy in this process (pid {os.getpid()}) "
                f"for {timeout:g} s; set QDRANT_URL to use a Qdrant server"
            )
        try:
            if self.client is None:
                self.client = _open_local(self.folder, timeout)
            self.depth += 1
            try:
                yield self.client
            finally:
                self.depth -= 1
                if self.depth == 0 and self.keep_open == 0:
                    self.shut()
        finally:
            self.lock.release()

    def shut(self) -> None:
        with self.lock:
            client, self.client = self.client, None
            if client is not None:
                client.close()


_slots: dict[Path, _LocalSlot] = {}
_slots_lock = threading.Lock()
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    # The parent's clients share its flock (same open file description): closing them in the child
    # would unlock the parent's folder. Keep them referenced, never use or close them.
    global _slots_lock
    _inherited.extend(_slots.values())
    _slots.clear()
    _slots_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _slot(folder: Path) -> _LocalSlot:
    with _slots_lock:
        slot = _slots.get(folder)
        if slot is None:
            slot = _slots[folder] = _LocalSlot(folder)
        return slot


def _missing(err: Exception) -> bool:
    if isinstance(err, UnexpectedResponse):
        return err.status_code == 404
    return isinstance(err, ValueError) and "not found" in str(err).lower()


# -- the resource ------------------------------------------------------------------------------------


class QdrantStore(dg.ConfigurableResource):
    """Collection `faces` (128-d, Euclid). `url` unset: embedded storage in `path` (default `paths().qdrant`)."""

    url: str | None = None
    api_key: str | None = None
    path: str | None = None
    lock_timeout: float = 60.0
    keep_open: bool = False
    """Local mode: keep the client (and the folder lock) between operations until `close()`; for a server
    process answering many searches. Other processes then wait for the lock."""

    _remote: QdrantClient | None = PrivateAttr(default=None)
    _remote_pid: int | None = PrivateAttr(default=None)
    _mutex: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _pinned: _LocalSlot | None = PrivateAttr(default=None)
    _schema_for: str | None = PrivateAttr(default=None)  # the folder or url known to have the collection

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        url = resolve(self.url)
        yield "url", redact(url) if url else None
        yield "api_key", "***" if resolve(self.api_key) else None
        yield "path", None if url else str(self.folder)

    @property
    def folder(self) -> Path:
        return Path(resolve(self.path) or "qdrant").expanduser().resolve()

    def _target(self) -> str:
        return resolve(self.url) or str(self.folder)

    @property
    def is_local(self) -> bool:
        return not resolve(self.url)

    def _where(self) -> str:
        return f"embedded Qdrant at {self.folder}" if self.is_local else f"Qdrant at {redact(resolve(self.url))}"

    @contextlib.contextmanager
    def client(self) -> Iterator[QdrantClient]:
        """The client; in local mode the folder stays locked by this process only for the block."""
        if not self.is_local:
            yield self._remote_client()
            return
        slot = _slot(self.folder)
        if self.keep_open and self._pinned is not slot:
            self._unpin()  # FACEPIPE_DATA moved: let go of the old folder
            with slot.lock:
                slot.keep_open += 1
                self._pinned = slot
        with slot.use(self.lock_timeout) as client:
            yield client

    def _remote_client(self) -> QdrantClient:
        with self._mutex:
            if self._remote is None or self._remote_pid != os.getpid():
                self._remote = QdrantClient(url=resolve(self.url), api_key=resolve(self.api_key), timeout=60)
                self._remote_pid = os.getpid()
            return self._remote

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Release the client so other processes can open the embedded folder."""
        with self._mutex:
            remote, self._remote = self._remote, None
            if remote is not None and self._remote_pid == os.getpid():
                remote.close()
        self._unpin()

    def _unpin(self) -> None:
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            with pinned.lock:
                pinned.keep_open -= 1
                if pinned.keep_open == 0 and pinned.depth == 0:
                    pinned.shut()

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
                with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
                    warnings.simplefilter("ignore", UserWarning)
                    c.create_payload_index(COLLECTION, field, models.PayloadSchemaType.KEYWORD, wait=True)
        self._schema_for = self._target()

    def _ensure_once(self) -> None:
        if self._schema_for != self._target():
            self.ensure_schema()

    # -- writes ---------------------------------------------------------------------------------------

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None:
        """Upsert every new point first, then delete each image's other points."""
        if not faces_by_image:
            return
        check_batch(faces_by_image)
        faces = [f for fs in faces_by_image.values() for f in fs]
        new_ids = {f.face_id for f in faces}
        self._ensure_once()
        with self._errors(), self.client() as c:
            if self.is_local:
                faces = _changed(c, faces)
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
                found = c.retrieve(COLLECTION, ids[start : start + SCROLL_PAGE], with_payload=False)
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

    def search(self, embedding: np.ndarray, top_k: int = 10, max_distance: float | None = None) -> list[Match]:
        return self.search_many([embedding], top_k, max_distance)[0]

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]:
        queries = as_matrix(embeddings)
        if top_k <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        requests = [
            models.QueryRequest(
                query=q.tolist(), limit=top_k, with_payload=_MATCH_PAYLOAD, score_threshold=max_distance
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


def _changed(c: QdrantClient, faces: list[Face]) -> list[Face]:
    """The faces not already stored exactly so. Local mode writes each point to SQLite with its own
    commit (~3 ms); comparing in memory first makes re-running unchanged photos nearly free."""
    stored: dict[str, Any] = {}
    ids = [f.face_id for f in faces]
    for start in range(0, len(ids), SCROLL_PAGE):
        for p in c.retrieve(COLLECTION, ids[start : start + SCROLL_PAGE], with_payload=True, with_vectors=True):
            stored[str(p.id)] = p
    out = []
    for f in faces:
        p = stored.get(f.face_id)
        if p is None or p.payload != payload_of(f) or p.vector != as_vector(f.embedding).tolist():
            out.append(f)
    return out


def _keys_filter(keys: list[str]) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="image_key", match=models.MatchAny(any=keys))])


def _match(point: Any, distance: float = 0.0) -> Match:
    p = point.payload
    box = (int(p["top"]), int(p["right"]), int(p["bottom"]), int(p["left"]))
    return Match(str(point.id), p["image_key"], box, float(distance), p.get("person_id"))
