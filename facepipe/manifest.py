"""What facepipe knows about each file: its stat, its hash, and what was last indexed from it.

Kept in SQLite in the data folder (not in a sensor cursor) so the sensor, `facepipe index` and
the assets share one truth. Stat comes first and hashing only when size or mtime moved, so a
tick over an unchanged folder reads no file content.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.keys import UnsafeKeyError, key_for_relpath, path_for_key
from facepipe.objects import BucketImages
from facepipe.statedb import Connection, SqliteDB, StateDB
from facepipe.walk import walk_files

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)

WAY_OUT = (
    "move it aside (e.g. add .damaged to its name); the next `facepipe index` builds a new one from the photos "
    "and extracts their faces again (photos you had forgotten must be forgotten again)"
)
"""What to do with a damaged manifest: the photos and the Parquet hold everything in it but the list of
forgotten photos."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    indexed_sha256 TEXT,
    indexed_version TEXT,
    status TEXT,
    faces INTEGER  -- faces the Parquet holds for it: what every store must hold too
);
-- Photos and faces the user asked to forget: never indexed again until the user asks. A photo's row is
-- its tombstone: written before anything is erased (erased = 0 until every copy is gone), and checked by
-- every writer after it writes, so a run in flight never brings a forgotten photo back.
CREATE TABLE IF NOT EXISTS forgotten_images (key TEXT PRIMARY KEY, sha256 TEXT, forgotten_at REAL, erased INTEGER);
CREATE TABLE IF NOT EXISTS forgotten_faces (face_id TEXT PRIMARY KEY);
-- Which indexed content each vector store holds, so a failed or lost export is redone.
CREATE TABLE IF NOT EXISTS exports (
    key TEXT NOT NULL,
    store TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (key, store)
);
-- Parquet files (path under parquet/) whose footer was read and found whole, at this stat: a file
-- that changed since (truncated, replaced behind facepipe's back) is read again.
CREATE TABLE IF NOT EXISTS checked_files (path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER) WITHOUT ROWID;
"""

ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "files": {"faces": "INTEGER"},
    "forgotten_images": {"sha256": "TEXT", "forgotten_at": "REAL", "erased": "INTEGER"},
}
"""Columns later versions added: a manifest written before them gains them on open."""


@dataclass
class SyncPlan:
    """How the folder differs from the manifest (keys in a stable, sorted order)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    stats: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # key -> (size, mtime_ns, sha256)

    @property
    def to_run(self) -> list[str]:
        return self.new + self.changed

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.deleted)


def scan(root: Path) -> Iterator[tuple[str, int, int]]:
    """(key, size, mtime_ns) of every image file under root; links are never followed out of it."""
    for rel, info in walk_files(root, IMAGE_SUFFIXES, links_inside=True):
        yield key_for_relpath(rel), info.st_size, info.st_mtime_ns


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SCHEMA = _SCHEMA
"""The manifest's tables (SQLite text; `facepipe.statedb` derives the Postgres DDL from it)."""


def sqlite_manifest_db(db_path: Path) -> SqliteDB:
    # No fsync per commit (WAL stays consistent); a power cut can only lose the last marks,
    # and a photo not marked indexed is simply indexed again.
    return SqliteDB(db_path, SCHEMA, durable=False, way_out=WAY_OUT, added_columns=ADDED_COLUMNS)


class Manifest:
    """The manifest of one images folder, in SQLite (a path) or any `StateDB` (Postgres: shared by nodes)."""

    def __init__(self, db: Path | StateDB, images_root: Path | BucketImages):
        self.db = sqlite_manifest_db(db) if isinstance(db, Path) else db
        self.db_path: Path | None = getattr(self.db, "path", None)
        self.images_root = images_root if isinstance(images_root, BucketImages) else images_root.resolve()
        with self._db():
            pass  # create the tables now: a bad DSN or an unwritable folder fails here, not mid-run

    @contextmanager
    def _db(self) -> Iterator[Connection]:
        """One transaction per call: a failed call leaves the manifest as it was."""
        with self.db.writing() as db:
            yield db

    def diff(self) -> SyncPlan:
        """How the folder differs from the manifest; writes nothing, so a failed caller loses nothing."""
        plan = SyncPlan()
        with self._db() as db:
            known = {row[0]: row[1:] for row in db.execute("SELECT key, size, mtime_ns, sha256 FROM files")}
            forgotten = {row[0] for row in db.execute("SELECT key FROM forgotten_images")}
        seen: set[str] = set()
        for key, size, mtime_ns in self._scan():
            if key in forgotten:
                continue
            seen.add(key)
            previous = known.get(key)
            if previous is not None and previous[0] == size and previous[1] == mtime_ns:
                plan.unchanged += 1
                continue
            try:
                digest = self._sha256(key)
            except (OSError, UnsafeKeyError):
                continue  # vanished or unreadable between scan and hash: the next diff decides
            plan.stats[key] = (size, mtime_ns, digest)
            if previous is None:
                plan.new.append(key)
            elif previous[2] != digest:
                plan.changed.append(key)
            else:
                plan.unchanged += 1  # touched, same bytes
        plan.deleted = sorted(set(known) - seen - forgotten)  # a forget under way erases those itself
        plan.new.sort()
        plan.changed.sort()
        return plan

    def _scan(self) -> Iterator[tuple[str, int, int]]:
        """A folder's files with their stat, or a bucket's objects with size and LastModified."""
        if isinstance(self.images_root, BucketImages):
            return self.images_root.scan(IMAGE_SUFFIXES)
        return scan(self.images_root)

    def _sha256(self, key: str) -> str:
        if isinstance(self.images_root, BucketImages):
            return self.images_root.sha256(key)
        return file_sha256(path_for_key(key, self.images_root))

    def apply(self, plan: SyncPlan) -> None:
        """Record a diff once its consequences (runs requested, deleted faces erased) are under way."""
        with self._db() as db:
            db.executemany(
                "INSERT INTO files(key, size, mtime_ns, sha256) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                "sha256=excluded.sha256",
                [(key, *stat_) for key, stat_ in plan.stats.items()],
            )
            db.executemany("DELETE FROM files WHERE key = ?", [(k,) for k in plan.deleted])
            db.executemany("DELETE FROM exports WHERE key = ?", [(k,) for k in plan.deleted])

    def pending(self, model_version: str) -> list[str]:
        """Keys whose current content was never indexed with these settings."""
        with self._db() as db:
            rows = db.execute(
                "SELECT key FROM files WHERE indexed_sha256 IS DISTINCT FROM sha256 "
                "OR indexed_version IS DISTINCT FROM ? ORDER BY key",
                (model_version,),
            )
            return [row[0] for row in rows]

    def needs_indexing(self, keys: Iterable[str], model_version: str) -> list[str]:
        """The keys not already indexed from their current content with these settings (or unknown here)."""
        keys = list(keys)
        done: set[str] = set()
        with self._db() as db:
            for start in range(0, len(keys), 500):  # only these keys: a run must not read a 100k-row table
                chunk = keys[start : start + 500]
                rows = db.execute(
                    "SELECT key FROM files WHERE indexed_sha256 = sha256 AND indexed_version = ? "
                    f"AND key IN ({','.join('?' * len(chunk))})",
                    (model_version, *chunk),
                )
                done.update(row[0] for row in rows)
        return [k for k in keys if k not in done]

    def unexported(self, store: str) -> list[str]:
        """Indexed keys whose current faces the store may not hold (export failed, never ran, or reset)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT f.key FROM files f LEFT JOIN exports e ON e.key = f.key AND e.store = ? "
                "WHERE f.indexed_sha256 IS NOT NULL "
                "AND (e.sha256 IS DISTINCT FROM f.indexed_sha256 OR e.version IS DISTINCT FROM f.indexed_version) "
                "ORDER BY f.key",
                (store,),
            )
            return [row[0] for row in rows]

    def mark_exported(self, store: str, keys: Iterable[str]) -> None:
        """Record that the store now holds what is indexed for these keys."""
        with self._db() as db:
            db.executemany(
                "INSERT INTO exports(key, store, sha256, version) "
                "SELECT key, ?, indexed_sha256, indexed_version FROM files "
                "WHERE key = ? AND indexed_sha256 IS NOT NULL "
                "ON CONFLICT(key, store) DO UPDATE SET sha256 = excluded.sha256, version = excluded.version",
                [(store, k) for k in keys],
            )

    def reset_exports(self, keys: Iterable[str], store: str | None = None) -> None:
        """Forget what the store(s) hold for these keys, so the next index exports them again."""
        with self._db() as db:
            if store is None:
                db.executemany("DELETE FROM exports WHERE key = ?", [(k,) for k in keys])
            else:
                db.executemany("DELETE FROM exports WHERE key = ? AND store = ?", [(k, store) for k in keys])

    def error_keys(self) -> list[str]:
        """Photos whose last indexing gave an `error` row (unreadable, not an image, ...)."""
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT key FROM files WHERE status = 'error' ORDER BY key")]

    def mark_indexed_many(self, marks: Iterable[tuple]) -> None:
        """Several (key, sha256, model_version, status[, faces written]) in one transaction."""
        with self._db() as db:
            db.executemany(
                "UPDATE files SET indexed_sha256 = ?, indexed_version = ?, status = ?, faces = ? WHERE key = ?",
                [(m[1], m[2], m[3], m[4] if len(m) > 4 else None, m[0]) for m in marks],
            )

    # -- what the Parquet and the stores should hold (self-healing) ----------------------------------------

    def indexed_faces(self) -> dict[str, tuple[str | None, int | None]]:
        """Every indexed key -> (status, faces in its Parquet; None when an older version did not count)."""
        with self._db() as db:
            rows = db.execute("SELECT key, status, faces FROM files WHERE indexed_sha256 IS NOT NULL")
            return {row[0]: (row[1], row[2]) for row in rows}

    def set_faces(self, counts: dict[str, int]) -> None:
        with self._db() as db:
            db.executemany("UPDATE files SET faces = ? WHERE key = ?", [(n, k) for k, n in counts.items()])

    def expected_faces(self, store: str) -> int | None:
        """Faces the store should hold for what the manifest says it exported (None: a count is unknown)."""
        with self._db() as db:
            total, unknown = db.execute(
                "SELECT COALESCE(SUM(f.faces), 0), COUNT(*) - COUNT(f.faces) FROM files f "
                "JOIN exports e ON e.key = f.key AND e.store = ? "
                "AND e.sha256 = f.indexed_sha256 AND e.version = f.indexed_version",
                (store,),
            ).fetchone()
        return None if unknown else int(total)

    def reindex(self, keys: Iterable[str]) -> None:
        """Extract these photos again (their Parquet is lost or damaged) and export them afresh."""
        keys = list(keys)
        with self._db() as db:
            db.executemany(
                "UPDATE files SET indexed_sha256 = NULL, indexed_version = NULL, faces = NULL WHERE key = ?",
                [(k,) for k in keys],
            )
            db.executemany("DELETE FROM exports WHERE key = ?", [(k,) for k in keys])

    def checked_files(self) -> dict[str, tuple[int, int]]:
        with self._db() as db:
            return {row[0]: (row[1], row[2]) for row in db.execute("SELECT path, mtime_ns, size FROM checked_files")}

    def record_checked(self, whole: dict[str, tuple[int, int]], gone: Iterable[str] = ()) -> None:
        with self._db() as db:
            db.executemany(
                "INSERT INTO checked_files(path, mtime_ns, size) VALUES (?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET mtime_ns = excluded.mtime_ns, size = excluded.size",
                [(path, *stat) for path, stat in whole.items()],
            )
            db.executemany("DELETE FROM checked_files WHERE path = ?", [(p,) for p in gone])

    def remove(self, keys: Iterable[str]) -> None:
        with self._db() as db:
            db.executemany("DELETE FROM files WHERE key = ?", [(k,) for k in keys])
            db.executemany("DELETE FROM exports WHERE key = ?", [(k,) for k in keys])

    def tombstone(self, keys: Iterable[str]) -> None:
        """Step one of forgetting photos: from this commit on, every writer drops what it writes of them."""
        now = time.time()
        with self._db() as db:
            db.executemany(
                "INSERT INTO forgotten_images(key, sha256, forgotten_at, erased) "
                "VALUES (?, (SELECT sha256 FROM files WHERE key = ?), ?, 0) "
                "ON CONFLICT(key) DO UPDATE SET forgotten_at = excluded.forgotten_at, erased = 0",
                [(k, k, now) for k in keys],
            )

    def forget_images(self, keys: Iterable[str]) -> None:
        """Last step of forgetting: drop the files' rows and keep them out of every later diff, even while
        the files exist (the tombstone, now marked erased)."""
        keys = list(keys)
        now = time.time()
        with self._db() as db:
            db.executemany("DELETE FROM files WHERE key = ?", [(k,) for k in keys])
            db.executemany("DELETE FROM exports WHERE key = ?", [(k,) for k in keys])
            db.executemany(
                "INSERT INTO forgotten_images(key, forgotten_at, erased) VALUES (?, ?, 1) "
                "ON CONFLICT(key) DO UPDATE SET erased = 1",
                [(k, now) for k in keys],
            )

    def unfinished_forgets(self) -> list[str]:
        """Photos whose erasure was interrupted (a tombstone not yet marked erased): to erase again."""
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT key FROM forgotten_images WHERE erased = 0 ORDER BY key")]

    def forgotten_among(self, keys: Iterable[str]) -> set[str]:
        """Which of these photos carry a tombstone (a writer checks right after it wrote them)."""
        return self._among("SELECT key FROM forgotten_images WHERE key IN ({})", list(keys))

    def forgotten_faces_among(self, face_ids: Iterable[str]) -> set[str]:
        return self._among("SELECT face_id FROM forgotten_faces WHERE face_id IN ({})", list(face_ids))

    def _among(self, query: str, values: list[str]) -> set[str]:
        found: set[str] = set()
        if not values:
            return found
        with self._db() as db:
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                found.update(row[0] for row in db.execute(query.format(",".join("?" * len(chunk))), chunk))
        return found

    def forget_faces(self, face_ids: Iterable[str]) -> None:
        with self._db() as db:
            db.executemany(
                "INSERT INTO forgotten_faces(face_id) VALUES (?) ON CONFLICT DO NOTHING", [(f,) for f in face_ids]
            )

    def remember_images(self, keys: Iterable[str]) -> list[str]:
        """Undo forget_images: the next diff sees the files again (if they still exist). Returns the keys undone."""
        keys = list(keys)
        with self._db() as db:
            present = [k for k in keys if db.execute("SELECT 1 FROM forgotten_images WHERE key = ?", (k,)).fetchone()]
            db.executemany("DELETE FROM forgotten_images WHERE key = ?", [(k,) for k in present])
        return present

    def forgotten_face_ids(self) -> set[str]:
        with self._db() as db:
            return {row[0] for row in db.execute("SELECT face_id FROM forgotten_faces")}

    def keys(self) -> list[str]:
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT key FROM files ORDER BY key")]
