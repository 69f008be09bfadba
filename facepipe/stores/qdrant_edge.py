"""Faces in embedded Qdrant: Qdrant's own engine in-process (`qdrant-edge-py`), one shard under the data folder.

Same collection semantics as a Qdrant server (128-d, Euclid, payload = the record minus embedding and crop,
point id = face_id, keyword indexes on `image_key` and `person_id`), searched with HNSW once a segment
is indexed and exactly below that.

Files, under the folder given as `path` (`<data>/qdrant`):

* `edge/`: the shard (`edge_config.json`, `segments/`, `wal/`).
* `edge.lock`: the inter-process lock (facepipe.stores.locks). The engine itself locks its write-ahead log
  and a second open fails at once, even read-only and in the same process ("Can't init WAL:
  WouldBlock"), so processes take turns: one at a time, the others wait up to `lock_timeout`.
* An older facepipe kept qdrant-client's local mode here (`collection/faces/storage.sqlite`,
  `meta.json`, `.lock`). The first open migrates it once, with a progress bar: the points are read with
  qdrant-client, written to `edge.migrating/`, which is renamed to `edge/` (the atomic switch), then the
  old files are removed (a stale copy would keep faces that are later forgotten). An interrupted
  migration starts again from scratch on the next open.

Indexing: the engine optimizes only when asked (`EdgeShard.optimize()`, blocking). Writes ask once more
than `OPTIMIZE_AFTER` points are not in an HNSW index yet; until then new points are searched exactly.

Erasure: a deleted point is only flagged in its segment; its vector and payload stay in the segment files
until the engine's vacuum rewrites that segment (at an optimize, once >= 20% of a segment of >= 1000
vectors is deleted), and its upsert stays in the write-ahead log until that log segment is retired
(measured: after ~64 MB, about 100k points, of later writes). `compact()` forces both: it rebuilds the
shard from the live points into a new folder and switches to it, so no byte of a deleted point remains.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from facepipe.faces.records import Face
from facepipe.stores import locks
from facepipe.stores.base import (
    COLLECTION,
    DIM,
    Match,
    StoreBase,
    StoreError,
    as_matrix,
    as_vector,
    batch_faces,
    payload_of,
    within,
)

log = logging.getLogger(__name__)

SHARD_DIR = "edge"
LOCK_FILE = "edge.lock"
UPSERT_BATCH = 1024
SCROLL_PAGE = 10_000
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_KB = 10_000
"""Segments under ~10 MB of vectors (~20k faces) are searched exactly (Qdrant's default threshold)."""
EF_SEARCH = 200
"""HNSW candidates per search (>= top_k): recall@10 0.97 at 1M faces in 1-2.4 ms, 1.00 at 100k (BENCHMARKS.md)."""
OPTIMIZE_AFTER = 20_000
"""Unindexed points tolerated before a write builds the index (searching them exactly costs a few ms)."""
_INDEXED = ("image_key", "person_id")
_MATCH_PAYLOAD = ["image_key", "top", "right", "bottom", "left", "person_id"]
_HINT = ", or set QDRANT_URL to use a Qdrant server, which many processes can share"
_OLD_LOCAL_MODE = ("collection", "meta.json", ".lock")


def edge_config() -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Euclid),
        hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB),
    )


class _Engine:
    """The open shard of one folder (or none yet: reads answer "nothing" until the first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / SHARD_DIR
        self.shard: qe.EdgeShard | None = None

    def open(self) -> _Engine:
        migrate_local_mode(self.root)
        if (self.dir / "edge_config.json").exists():
            self._check_config()
            try:
                self.shard = qe.EdgeShard.load(str(self.dir))
            except Exception as err:
                raise StoreError(f"cannot open the embedded Qdrant at {self.root}: {err}") from None
        return self

    def _check_config(self) -> None:
        vectors = json.loads((self.dir / "edge_config.json").read_text()).get("vectors", {})
        params = vectors.get("", {}) if isinstance(vectors, dict) else {}
        if (params.get("size"), params.get("distance")) != (DIM, "Euclid"):
            raise StoreError(
                f"the embedded Qdrant at {self.root} holds vectors {vectors}, "
                f"expected {DIM} dimensions with Euclid distance"
            )

    def create(self) -> qe.EdgeShard:
        if self.shard is None:
            self.shard = qe.EdgeShard.create(str(self.dir), edge_config())
        info = self.shard.info()
        for field in _INDEXED:
            if field not in info.payload_schema:
                self.shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        self.shard.flush()
        return self.shard

    def close(self) -> None:
        shard, self.shard = self.shard, None
        if shard is not None:
            shard.close()


def _open(root: Path) -> _Engine:
    return _Engine(root).open()


def _close(engine: _Engine) -> None:
    engine.close()


class EdgeQdrantStore(StoreBase):
    """Collection `faces` in the in-process engine under `path`; one process at a time (see the module)."""

    def __init__(self, path: Path | str, *, lock_timeout: float = 60.0, keep_open: bool = False) -> None:
        self.folder = Path(path).expanduser().resolve()
        self.lock_timeout = lock_timeout
        self.keep_open = keep_open
        self._pinned: locks.SharedSlot[Any] | None = None
        self._deferred = 0

    def __repr__(self) -> str:
        return f"EdgeQdrantStore(path={str(self.folder)!r})"

    def _where(self) -> str:
        return f"the embedded Qdrant at {self.folder}"

    @contextlib.contextmanager
    def session(self) -> Iterator[_Engine]:
        """The open engine for the block: this process holds the folder for its duration."""
        slot = locks.slot(self.folder / LOCK_FILE, self._where(), _HINT)
        if self.keep_open and self._pinned is not slot:
            slot.pin()
            self._pinned = slot
        with slot.use(self.lock_timeout, lambda: _open(self.folder), _close) as engine:
            yield engine

    @contextlib.contextmanager
    def bulk(self) -> Iterator[EdgeQdrantStore]:
        """Hold the folder for a large load: the writes inside build no index, one build runs at the end
        (a load of 1M faces otherwise rebuilds growing segments again and again)."""
        with self.session():
            self._deferred += 1
            try:
                yield self
            finally:
                self._deferred -= 1
                if self._deferred == 0:
                    self.optimize()

    def close(self) -> None:
        """Let go of the folder (when this was the last user in the process) so other processes can open it."""
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            pinned.unpin()

    # -- schema ---------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self.session() as engine:
            engine.create()

    # -- writes ---------------------------------------------------------------------------------------

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None:
        """Upsert every new point first, then delete each image's other points."""
        if not faces_by_image:
            return
        faces = batch_faces(faces_by_image)
        new_ids = {f.face_id for f in faces}
        with self.session() as engine:
            shard = engine.shard or engine.create()
            for start in range(0, len(faces), UPSERT_BATCH):
                chunk = _changed(shard, faces[start : start + UPSERT_BATCH])
                if chunk:
                    shard.update(
                        qe.UpdateOperation.upsert_points(
                            [qe.Point(f.face_id, as_vector(f.embedding).tolist(), payload_of(f)) for f in chunk]
                        )
                    )
            existing = _ids_where(shard, list(faces_by_image))
            stale = [fid for ids in existing.values() for fid in ids if fid not in new_ids]
            if stale:
                shard.update(qe.UpdateOperation.delete_points(stale))
            shard.flush()
            if not self._deferred:
                _optimize_if_due(shard)

    def delete_images(self, image_keys: Iterable[str]) -> None:
        keys = list(image_keys)
        if keys:
            with self.session() as engine:
                if engine.shard is not None:
                    engine.shard.update(qe.UpdateOperation.delete_points_by_filter(_keys_filter(keys)))
                    engine.shard.flush()

    def delete_faces(self, face_ids: Iterable[str]) -> None:
        ids = [str(uuid.UUID(f)) for f in face_ids]
        if ids:
            with self.session() as engine:
                if engine.shard is not None:
                    engine.shard.update(qe.UpdateOperation.delete_points(ids))
                    engine.shard.flush()

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None:
        if not mapping:
            return
        with self.session() as engine:
            shard = engine.shard
            if shard is None:
                return
            # Unknown ids are skipped, as pgvector's UPDATE skips them.
            ids = [str(uuid.UUID(k)) for k in mapping]
            known: set[str] = set()
            for start in range(0, len(ids), SCROLL_PAGE):
                found = shard.retrieve(ids[start : start + SCROLL_PAGE], with_payload=False, with_vector=False)
                known.update(str(p.id) for p in found)
            by_person: dict[str | None, list[str]] = {}
            for fid, person in mapping.items():
                if str(uuid.UUID(fid)) in known:
                    by_person.setdefault(person, []).append(str(uuid.UUID(fid)))
            for person, fids in by_person.items():
                for start in range(0, len(fids), SCROLL_PAGE):
                    shard.update(
                        qe.UpdateOperation.set_payload(fids[start : start + SCROLL_PAGE], {"person_id": person})
                    )
            shard.flush()

    # -- reads ----------------------------------------------------------------------------------------

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]:
        queries = as_matrix(embeddings)
        if top_k <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        params = qe.SearchParams(hnsw_ef=max(EF_SEARCH, top_k))
        requests = [
            qe.QueryRequest(
                limit=top_k,
                query=qe.Query.Nearest(q.tolist()),
                with_payload=_MATCH_PAYLOAD,
                score_threshold=max_distance,  # Euclid: an upper bound on the distance
                params=params,
            )
            for q in queries
        ]
        with self.session() as engine:
            if engine.shard is None:
                return [[] for _ in range(len(queries))]
            responses = engine.shard.query_batch(qe.QueryBatchRequest(requests))
        return [within([_match(p, p.score) for p in points], max_distance) for points in responses]

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        keys = None if image_keys is None else list(image_keys)
        with self.session() as engine:
            if engine.shard is None:
                return {k: set() for k in keys or ()}
            return _ids_where(engine.shard, keys)

    def faces_of_images(self, image_keys: Iterable[str]) -> dict[str, list[Match]]:
        keys = list(image_keys)
        out: dict[str, list[Match]] = {k: [] for k in keys}
        if not keys:
            return out
        with self.session() as engine:
            if engine.shard is not None:
                for p in _scroll(engine.shard, _keys_filter(keys), _MATCH_PAYLOAD):
                    out[p.payload["image_key"]].append(_match(p))
        for matches in out.values():
            matches.sort(key=lambda m: (m.box[0], m.box[3]))
        return out

    def images_of_person(self, person_id: str) -> list[str]:
        flt = qe.Filter(must=[qe.FieldCondition(key="person_id", match=qe.MatchValue(person_id))])
        with self.session() as engine:
            if engine.shard is None:
                return []
            return sorted({p.payload["image_key"] for p in _scroll(engine.shard, flt, ["image_key"])})

    def count(self) -> int:
        with self.session() as engine:
            if engine.shard is None:
                return 0
            return int(engine.shard.count(qe.CountRequest(exact=True)))

    # -- maintenance ----------------------------------------------------------------------------------

    def optimize(self) -> bool:
        """Build every pending index now (a bulk load's last step); True when anything was rebuilt."""
        with self.session() as engine:
            return bool(engine.shard.optimize()) if engine.shard is not None else False

    def compact(self, progress: bool = False) -> dict[str, Any]:
        """Rebuild the shard from its live points and switch to it: afterwards no file under the folder
        holds a byte of a deleted point (segments and write-ahead log are new). Blocks other users of the
        folder meanwhile; at 1M faces it costs about as long as a bulk load and its index build."""
        started = time.perf_counter()
        with self.session() as engine:
            if engine.shard is None:
                return {"points": 0, "seconds": 0.0}
            before = _folder_bytes(engine.dir)
            tmp = self.folder / f"{SHARD_DIR}.compacting"
            shutil.rmtree(tmp, ignore_errors=True)
            new = qe.EdgeShard.create(str(tmp), edge_config())
            total = int(engine.shard.count(qe.CountRequest(exact=True)))
            with _progress(total, "compacting embedded Qdrant", progress) as bar:
                for page in _pages(engine.shard, None, True, True):
                    new.update(qe.UpdateOperation.upsert_points([qe.Point(p.id, p.vector, p.payload) for p in page]))
                    bar.update(len(page))
            for field in _INDEXED:
                new.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
            new.flush()
            new.optimize()
            new.close()
            engine.close()
            old = self.folder / f"{SHARD_DIR}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(engine.dir, old)
            os.replace(tmp, engine.dir)
            _fsync_dir(self.folder)
            shutil.rmtree(old)
            engine.open()
            after = _folder_bytes(engine.dir)
        return {
            "points": total,
            "bytes_before": before,
            "bytes_after": after,
            "seconds": round(time.perf_counter() - started, 2),
        }


# -- migration from qdrant-client's local mode ------------------------------------------------------


def has_local_mode(root: Path) -> bool:
    return (root / "collection").is_dir() or (root / "meta.json").is_file()


def migrate_local_mode(root: Path, progress: bool | None = None) -> int | None:
    """Move a qdrant-client local-mode folder into the engine, once (call with the folder's lock held).

    Returns the number of points migrated, or None when there was nothing to migrate.
    """
    if not has_local_mode(root):
        return None
    final = root / SHARD_DIR
    migrated = None
    if not (final / "edge_config.json").exists():
        migrated = _copy_local_mode(root, final, sys.stderr.isatty() if progress is None else progress)
    # The switch happened (now or in an earlier, interrupted open): the old files are a stale copy.
    for name in _OLD_LOCAL_MODE:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    log.info("embedded Qdrant at %s: removed the old local-mode files", root)
    return migrated


def _copy_local_mode(root: Path, final: Path, progress: bool) -> int:
    import warnings

    from qdrant_client import QdrantClient

    tmp = root / f"{SHARD_DIR}.migrating"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)  # a shard folder without its config: an aborted create
    with warnings.catch_warnings():  # local mode warns above 20k points: the reason to move
        warnings.simplefilter("ignore")
        try:
            client = QdrantClient(path=str(root))
        except RuntimeError as err:
            raise StoreError(f"cannot migrate the embedded Qdrant at {root}: {err}") from None
    done = 0
    try:
        shard = qe.EdgeShard.create(str(tmp), edge_config())
        if client.collection_exists(COLLECTION):
            total = client.count(COLLECTION, exact=True).count
            log.info("migrating %d faces of the embedded Qdrant at %s to the in-process engine", total, root)
            with _progress(total, "migrating embedded Qdrant", progress) as bar:
                offset = None
                while True:
                    points, offset = client.scroll(
                        COLLECTION, limit=UPSERT_BATCH, offset=offset, with_payload=True, with_vectors=True
                    )
                    if points:
                        shard.update(
                            qe.UpdateOperation.upsert_points(
                                [qe.Point(str(p.id), list(p.vector), dict(p.payload or {})) for p in points]
                            )
                        )
                        done += len(points)
                        bar.update(len(points))
                    if offset is None:
                        break
        for field in _INDEXED:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        shard.flush()
        shard.optimize()
        shard.close()
    finally:
        client.close()
    os.replace(tmp, final)  # the atomic switch: from here on the engine's folder is the store
    _fsync_dir(root)
    return done


# -- helpers -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="face", disable=not enabled, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _optimize_if_due(shard: qe.EdgeShard) -> None:
    info = shard.info()
    if info.points_count - info.indexed_vectors_count > OPTIMIZE_AFTER:
        started = time.perf_counter()
        shard.optimize()
        log.info("embedded Qdrant: index built in %.1f s", time.perf_counter() - started)


def _changed(shard: qe.EdgeShard, faces: list[Face]) -> list[Face]:
    """The faces not already stored exactly so: re-running unchanged photos writes nothing."""
    stored = {str(p.id): p for p in shard.retrieve([f.face_id for f in faces], with_payload=True, with_vector=True)}
    out = []
    for f in faces:
        p = stored.get(str(uuid.UUID(f.face_id)))
        if p is None or p.payload != payload_of(f) or p.vector != as_vector(f.embedding).tolist():
            out.append(f)
    return out


def _pages(
    shard: qe.EdgeShard, flt: qe.Filter | None, payload: bool | list[str], vectors: bool = False
) -> Iterator[list[Any]]:
    offset = None
    while True:
        points, offset = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, filter=flt, with_payload=payload, with_vector=vectors)
        )
        if points:
            yield points
        if offset is None:
            return


def _scroll(shard: qe.EdgeShard, flt: qe.Filter | None, payload: list[str]) -> Iterator[Any]:
    for page in _pages(shard, flt, payload):
        yield from page


def _ids_where(shard: qe.EdgeShard, keys: list[str] | None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {k: set() for k in keys} if keys is not None else {}
    if keys == []:
        return out
    for p in _scroll(shard, None if keys is None else _keys_filter(keys), ["image_key"]):
        out.setdefault(p.payload["image_key"], set()).add(str(p.id))
    return out


def _keys_filter(keys: list[str]) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key="image_key", match=qe.MatchAny(keys))])


def _match(point: Any, distance: float = 0.0) -> Match:
    p = point.payload
    box = (int(p["top"]), int(p["right"]), int(p["bottom"]), int(p["left"]))
    return Match(str(point.id), p["image_key"], box, float(distance), p.get("person_id"))
