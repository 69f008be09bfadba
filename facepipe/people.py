"""Persons: every face clustered into people, with ids, names and merges that survive re-clustering.

Clustering is dlib's Chinese whispers on the graph of faces closer than `THRESHOLD` (0.5,
Euclidean), without edges between two faces of the same photo (they are two people). Measured
with `benchmarks/people_clustering.py` on the 86 HOG faces of the sample photos (knn `train/`,
the face_recognition photos of the same people, cocoindex and dlib_faces as distractors):

    method                         pairwise P    R     F1   same-photo pairs joined
    chinese whispers 0.5, apart          0.99  0.99  0.99      0
    chinese whispers 0.5                 0.62  0.99  0.76     96
    agglomerative complete 0.5           0.93  0.99  0.96     13
    agglomerative average 0.6            0.49  1.00  0.66    169
    dbscan eps 0.6 (min 2 or 3)          0.17  1.00  0.29    428

Every method keeps the labelled people apart (their inter-person distances are >= 0.76); they
differ on distractors: at 0.6, and without the same-photo rule, the 29 small monochrome faces of
the Solvay photo chain into one "person". CNN faces give the same ranking (F1 0.98 for the
choice). A face that joins no one (a singleton) stays unassigned: `person_id` null.

Ids are `p1`, `p2`, ... and never reused. Between runs only what changed is recomputed: the
faces of Parquet files whose size or mtime moved are re-read, their edges recomputed against
every face, and Chinese whispers re-run on the connected components they touch. New clusters
inherit the id of the previous person they share most faces with (named persons first), else
of a person that lost all its faces and whose centroid is within `RECLAIM` (photos re-indexed
with other settings get new face ids), else a new id. A merge (B folds into A) is kept as
"B's clusters belong to A", so it holds whatever the clustering does next.

State lives in `<FACEPIPE_DATA>/people.sqlite` (tables `persons`, `faces`, `edges`, `files`;
view `people`), and a snapshot of the persons goes to `<FACEPIPE_DATA>/parquet/people.parquet`
for analytics. No Dagster here: the `people` asset and the CLI are thin shells over `People`.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facepipe.stores.parquet import ParquetStore, _write_atomic

THRESHOLD = 0.5
"""Chinese whispers links two faces closer than this (Euclidean on dlib's 128-d encodings)."""

RECLAIM = 0.5
"""A new cluster takes over a person that lost all its faces if their centroids are this close."""

STATE_FILE = "people.sqlite"
SNAPSHOT_FILE = "people.parquet"
_BLOCK = 256  # new faces per distance block: 256 x 100k float32 distances is 100 MB
_FACE_COLUMNS = ["face_id", "image_key", "embedding", "person_id"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons (
    person_id TEXT PRIMARY KEY,
    name TEXT,
    merged_into TEXT,            -- set by `people merge`: this person's faces belong to that one
    centroid BLOB,               -- float32[128] mean of the faces clustered under this id
    cover_face_id TEXT,          -- the face nearest the centroid (thumbnail)
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: edges and seeds refer to it
    face_id TEXT NOT NULL UNIQUE,
    image_key TEXT NOT NULL,
    embedding BLOB NOT NULL,     -- float32[128]
    cluster TEXT,                -- the id clustering gave this face (null: singleton)
    person_id TEXT               -- after merges: what Parquet and the stores hold
);
CREATE INDEX IF NOT EXISTS faces_image_key ON faces (image_key);
CREATE INDEX IF NOT EXISTS faces_cluster ON faces (cluster);
CREATE INDEX IF NOT EXISTS faces_person_id ON faces (person_id);
CREATE TABLE IF NOT EXISTS edges (
    a INTEGER NOT NULL, b INTEGER NOT NULL, distance REAL NOT NULL, PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_b ON edges (b);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,       -- Parquet file under parquet/faces/, as last read or written here
    image_key TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS people AS
    SELECT f.person_id, p.name, count(*) AS faces, count(DISTINCT f.image_key) AS images
    FROM faces f JOIN persons p ON p.person_id = f.person_id
    WHERE f.person_id IS NOT NULL GROUP BY f.person_id;
"""


class PeopleError(ValueError):
    """A person id that does not exist, a merge with itself, an empty name: the caller's input."""


@dataclass
class Person:
    person_id: str
    name: str | None
    faces: int
    image_keys: list[str]
    cover_face_id: str | None = None

    def as_json(self) -> dict:
        """The DESIGN's `people --json` entry (plus the cover face, for thumbnails)."""
        return {
            "person_id": self.person_id,
            "name": self.name,
            "faces": self.faces,
            "image_keys": self.image_keys,
            "cover_face_id": self.cover_face_id,
        }


@dataclass
class UpdateReport:
    faces: int = 0  # faces known after the update
    assigned: int = 0  # of which in a person
    persons: int = 0
    files_read: int = 0
    files_rewritten: int = 0
    added: int = 0
    removed: int = 0
    reclustered: int = 0  # faces in the components Chinese whispers ran on
    changed: int = 0  # faces whose person_id changed in Parquet or a store
    new_persons: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # files rewritten by someone else meanwhile
    seconds: float = 0.0

    def metadata(self) -> dict:
        out = asdict(self)
        out["new_persons"] = ", ".join(self.new_persons) or "none"
        out["retry"] = ", ".join(self.retry) or "none"
        out["seconds"] = round(self.seconds, 3)
        return out


class PersonIdSink(Protocol):
    """What a store must offer to receive person ids (both FaceStores do)."""

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None: ...


# -- small helpers ----------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _vec(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _pid_number(pid: str) -> int:
    return int(pid[1:]) if pid[1:].isdigit() else 1 << 62


def _chunks(items: Sequence, size: int = 500) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of a and b (float32, clipped at 0 before the root)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0, out=sq))


def chinese_whispers(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """dlib's Chinese whispers on vertices 0..n-1 (deterministic: dlib seeds its own generator)."""
    import dlib

    return list(dlib.chinese_whispers([(i, i) for i in range(n)] + [(int(a), int(b)) for a, b in edges]))


# -- the state ---------------------------------------------------------------------------------------------


class People:
    """The people state of one data folder; every method opens and closes its own connection."""

    def __init__(self, data_dir: Path | str, parquet: ParquetStore | None = None):
        self.data = Path(data_dir)
        self.parquet = parquet or ParquetStore(self.data / "parquet")

    @property
    def path(self) -> Path:
        return self.data / STATE_FILE

    @property
    def snapshot_path(self) -> Path:
        return self.parquet.base / SNAPSHOT_FILE

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.data.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            db.executescript(_SCHEMA)
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time (a file lock: Dagster runs, the daemon and the CLI are separate
        processes), in one transaction: a failure leaves the previous state, and the next run redoes it."""
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.data / "people.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with self._db() as db:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        yield db
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                    db.execute("COMMIT")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- reads ---------------------------------------------------------------------------------------------

    def list(self) -> list[Person]:
        """Persons with at least one face, largest first."""
        if not self.path.exists():
            return []
        with self._db() as db:
            return self._list(db)

    def _list(self, db: sqlite3.Connection, only: str | None = None) -> list[Person]:
        where = "f.person_id IS NOT NULL" + (" AND f.person_id = ?" if only else "")
        rows = db.execute(
            f"SELECT f.person_id, f.image_key, count(*) FROM faces f WHERE {where} "
            "GROUP BY f.person_id, f.image_key ORDER BY f.person_id, f.image_key",
            (only,) if only else (),
        ).fetchall()
        faces: Counter[str] = Counter()
        keys: dict[str, list[str]] = defaultdict(list)
        for pid, key, n in rows:
            faces[pid] += n
            keys[pid].append(key)
        names = dict(db.execute("SELECT person_id, name FROM persons"))
        covers = self._covers(db, set(faces))
        people = [Person(pid, names.get(pid), faces[pid], keys[pid], covers.get(pid)) for pid in faces]
        return sorted(people, key=lambda p: (-p.faces, _pid_number(p.person_id)))

    def _covers(self, db: sqlite3.Connection, pids: set[str]) -> dict[str, str]:
        """A canonical person's thumbnail: the cover of its largest cluster (merges bring several)."""
        out: dict[str, tuple[int, str]] = {}
        for pid, cover, n in db.execute(
            "SELECT f.person_id, p.cover_face_id, count(*) FROM faces f JOIN persons p ON p.person_id = f.cluster "
            "WHERE f.person_id IS NOT NULL AND p.cover_face_id IS NOT NULL GROUP BY f.person_id, f.cluster"
        ):
            if pid in pids and (pid not in out or n > out[pid][0]):
                out[pid] = (n, cover)
        return {pid: cover for pid, (_, cover) in out.items()}

    def get(self, person_id: str) -> Person:
        """One person (a merged id answers as the person it was merged into)."""
        if not self.path.exists():
            raise PeopleError(f"no person {person_id!r}: people have not been clustered yet")
        with self._db() as db:
            pid = self._canonical(db, person_id)
            found = self._list(db, only=pid)
            if found:
                return found[0]
            name = db.execute("SELECT name FROM persons WHERE person_id = ?", (pid,)).fetchone()[0]
            return Person(pid, name, 0, [])

    def canonical(self, person_id: str) -> str:
        with self._db() as db:
            return self._canonical(db, person_id)

    def _canonical(self, db: sqlite3.Connection, person_id: str) -> str:
        seen = set()
        pid = person_id
        while True:
            row = db.execute("SELECT merged_into FROM persons WHERE person_id = ?", (pid,)).fetchone()
            if row is None:
                raise PeopleError(f"no person {person_id!r} (see `facepipe people`)")
            if row[0] is None or row[0] in seen:
                return pid
            seen.add(pid)
            pid = row[0]

    def names(self) -> dict[str, tuple[str, str | None]]:
        """Every person id ever given -> (the person it now is, that person's name)."""
        if not self.path.exists():
            return {}
        with self._db() as db:
            rows = db.execute("SELECT person_id, name, merged_into FROM persons").fetchall()
        name = {pid: n for pid, n, _ in rows}
        into = {pid: m for pid, _, m in rows}
        out = {}
        for pid in name:
            target, hops = pid, 0
            while into.get(target) and hops < len(into):
                target, hops = into[target], hops + 1
            out[pid] = (target, name.get(target))
        return out

    def image_of_face(self, face_id: str) -> str | None:
        if not self.path.exists():
            return None
        with self._db() as db:
            row = db.execute("SELECT image_key FROM faces WHERE face_id = ?", (face_id,)).fetchone()
        return row[0] if row else None

    def face_files(self) -> dict[str, tuple[int, int]]:
        """Every faces Parquet file (path relative to parquet/faces) with its (mtime_ns, size)."""
        base = self.parquet.faces_dir
        out = {}
        for file in self.parquet.iter_face_files():
            with contextlib.suppress(FileNotFoundError):  # deleted while we look
                st = file.stat()
                out[file.relative_to(base).as_posix()] = (st.st_mtime_ns, st.st_size)
        return out

    def is_stale(self) -> bool:
        """Whether any faces Parquet file appeared, changed or vanished since the last update (stat only)."""
        seen = self.face_files()
        if not self.path.exists():
            return bool(seen)
        with self._db() as db:
            known = {p: (m, s) for p, m, s in db.execute("SELECT path, mtime_ns, size FROM files")}
        return known != seen

    # -- naming and merging -----------------------------------------------------------------------------

    def name(self, person_id: str, name: str | None) -> Person:
        """Give a person a name (None or blank: remove it). Names survive re-clustering."""
        name = " ".join((name or "").split()) or None
        if name and len(name) > 200:
            raise PeopleError("a name has at most 200 characters")
        with self._writing() as db:
            pid = self._canonical(db, person_id)
            db.execute("UPDATE persons SET name = ?, updated_at = ? WHERE person_id = ?", (name, _now(), pid))
        self.write_snapshot()
        return self.get(pid)

    def merge(self, keep: str, fold: str, stores: Sequence[PersonIdSink] = ()) -> tuple[Person, int]:
        """Fold person `fold` into `keep`: its faces take `keep`'s id in Parquet and the stores, now and
        after every later clustering. `keep` takes `fold`'s name if it has none. Returns (person, faces moved)."""
        with self._writing() as db:
            a, b = self._canonical(db, keep), self._canonical(db, fold)
            if a == b:
                raise PeopleError(f"{keep} and {fold} are already the same person ({a})")
            now = _now()
            db.execute("UPDATE persons SET merged_into = ?, updated_at = ? WHERE person_id = ?", (a, now, b))
            db.execute("UPDATE persons SET merged_into = ? WHERE merged_into = ?", (a, b))  # keep chains short
            db.execute(
                "UPDATE persons SET name = (SELECT name FROM persons WHERE person_id = ?), updated_at = ? "
                "WHERE person_id = ? AND name IS NULL",
                (b, now, a),
            )
            moved = db.execute("SELECT face_id, image_key FROM faces WHERE person_id = ?", (b,)).fetchall()
            db.execute("UPDATE faces SET person_id = ? WHERE person_id = ?", (a, b))
            mapping = {fid: a for fid, _ in moved}
            for store in stores:
                store.set_person_ids(mapping)
            by_image: dict[str, dict[str, str | None]] = defaultdict(dict)
            for fid, key in moved:
                by_image[key][fid] = a
            self._rewrite(db, by_image, {})
        self.write_snapshot()
        return self.get(a), len(moved)

    def forget(self, person_id: str) -> list[str]:
        """Erase a person: its row (name, centroid), the persons merged into it, and its faces' embeddings
        and edges here. The caller erases the faces from Parquet and the stores; the next `update` clusters
        the faces that were linked to them again (their ids are kept as pending seeds until then).
        Returns the person ids erased."""
        with self._writing() as db:
            pid = self._canonical(db, person_id)
            rows = db.execute("SELECT person_id, merged_into FROM persons").fetchall()
            gone = {pid}
            while True:
                more = {p for p, into in rows if into in gone} - gone
                if not more:
                    break
                gone |= more
            marks = ",".join("?" * len(gone))
            ids = [
                i
                for (i,) in db.execute(
                    f"SELECT id FROM faces WHERE cluster IN ({marks}) OR person_id IN ({marks})", [*gone, *gone]
                )
            ]
            seeds: set[int] = set()
            for row_id in ids:
                seeds |= self._unlink(db, row_id)
            db.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
            db.execute(f"DELETE FROM persons WHERE person_id IN ({marks})", list(gone))
            pending = self._pending(db) | (seeds - set(ids))
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('pending_seeds', ?)",
                (",".join(map(str, sorted(pending))),),
            )
        self.write_snapshot()
        return sorted(gone, key=_pid_number)

    @staticmethod
    def _pending(db: sqlite3.Connection) -> set[int]:
        row = db.execute("SELECT value FROM meta WHERE key = 'pending_seeds'").fetchone()
        return {int(v) for v in row[0].split(",") if v} if row else set()

    # -- clustering ------------------------------------------------------------------------------------------

    def update(self, stores: Sequence[PersonIdSink] = ()) -> UpdateReport:
        """Bring persons up to date with the faces Parquet; push changed person ids to Parquet and `stores`."""
        started = time.perf_counter()
        report = UpdateReport()
        with self._writing() as db:
            seen = self.face_files()
            known = {p: (k, m, s) for p, k, m, s in db.execute("SELECT path, image_key, mtime_ns, size FROM files")}
            changed = sorted(p for p, st in seen.items() if known.get(p, (None,))[1:] != st)
            vanished = sorted(p for p in known if p not in seen)

            # 1. Read what moved: the faces each touched image has now, and the person_id Parquet holds.
            now_faces: dict[str, dict[str, np.ndarray]] = {}  # image_key -> face_id -> embedding
            in_parquet: dict[str, dict[str, str | None]] = {}  # image_key -> face_id -> person_id as written
            read_stats: dict[str, tuple[str, tuple[int, int]]] = {}  # path -> (image_key, stat when read)
            for rel in changed:
                table, stat = self._read(rel)
                if table is None:
                    continue  # gone between listing and reading: it counts as vanished next time
                report.files_read += 1
                keys = set(table.column("image_key").to_pylist())
                key = keys.pop() if len(keys) == 1 else (known.get(rel) or (_key_of(rel),))[0]
                read_stats[rel] = (key, stat)
                embeddings = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 128)
                ids = table.column("face_id").to_pylist()
                now_faces[key] = {fid: np.asarray(e, np.float32) for fid, e in zip(ids, embeddings, strict=True)}
                in_parquet[key] = dict(zip(ids, table.column("person_id").to_pylist(), strict=True))
            for rel in vanished:
                now_faces.setdefault(known[rel][0], {})

            # 2. Apply the difference to the face table and the graph.
            seeds: set[int] = set()
            removed: set[int] = set()
            added: list[int] = []
            for keys in _chunks(sorted(now_faces)):
                marks = ",".join("?" * len(keys))
                for row_id, fid, key, blob in db.execute(
                    f"SELECT id, face_id, image_key, embedding FROM faces WHERE image_key IN ({marks})", keys
                ).fetchall():
                    emb = now_faces[key].pop(fid, None)
                    if emb is not None and np.array_equal(_vec(blob), emb):
                        continue
                    seeds |= self._unlink(db, row_id)
                    if emb is None:
                        db.execute("DELETE FROM faces WHERE id = ?", (row_id,))
                        removed.add(row_id)
                    else:  # same face, new embedding (other settings): keep its row and cluster
                        db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (_blob(emb), row_id))
                        added.append(row_id)
            seeds -= removed
            for key, faces in now_faces.items():
                for fid, emb in faces.items():
                    cur = db.execute(
                        "INSERT INTO faces (face_id, image_key, embedding) VALUES (?, ?, ?) RETURNING id",
                        (fid, key, _blob(emb)),
                    )
                    added.append(cur.fetchone()[0])
            report.added, report.removed = len(added), len(removed)
            if added:
                self._link(db, added)
            seeds |= set(added)
            # Faces that were linked to a forgotten person: cluster their components again.
            pending = self._pending(db)
            for batch in _chunks(sorted(pending)):
                marks = ",".join("?" * len(batch))
                seeds |= {i for (i,) in db.execute(f"SELECT id FROM faces WHERE id IN ({marks})", list(batch))}
            db.execute("DELETE FROM meta WHERE key = 'pending_seeds'")

            # 3. Cluster again the components that changed; every other face keeps its person.
            before = dict(db.execute("SELECT face_id, person_id FROM faces WHERE person_id IS NOT NULL"))
            if seeds:
                comp, comp_edges = self._component(db, seeds)
                report.reclustered = len(comp)
                report.new_persons = self._recluster(db, comp, comp_edges)
            after = dict(db.execute("SELECT face_id, person_id FROM faces WHERE person_id IS NOT NULL"))

            # 4. What Parquet and the stores must change: faces whose person changed, and faces of files the
            #    faces asset rewrote (with a null person_id, which the exports copied to the stores).
            key_of = dict(db.execute("SELECT face_id, image_key FROM faces"))
            updates: dict[str, str | None] = {}
            for fid in before.keys() | after.keys():
                if before.get(fid) != after.get(fid) and fid in key_of:
                    updates[fid] = after.get(fid)
            for faces in in_parquet.values():
                for fid, pid in faces.items():
                    if pid != after.get(fid) and fid in key_of:
                        updates[fid] = after.get(fid)
            by_image: dict[str, dict[str, str | None]] = defaultdict(dict)
            for fid, pid in updates.items():
                by_image[key_of[fid]][fid] = pid
            report.changed = len(updates)
            for store in stores:
                store.set_person_ids(updates)
            report.files_rewritten, report.retry = self._rewrite(db, by_image, read_stats)

            db.executemany("DELETE FROM files WHERE path = ?", [(rel,) for rel in vanished])
            report.faces = len(key_of)
            report.assigned = len(after)
            report.persons = len(set(after.values()))
        self.write_snapshot()
        report.seconds = time.perf_counter() - started
        return report

    def _read(self, rel: str) -> tuple[pa.Table | None, tuple[int, int]]:
        path = self.parquet.faces_dir / rel
        try:
            st = path.stat()
            table = pq.read_table(path, columns=_FACE_COLUMNS, use_threads=False)
        except FileNotFoundError:
            return None, (0, 0)
        return table, (st.st_mtime_ns, st.st_size)

    def _unlink(self, db: sqlite3.Connection, row_id: int) -> set[int]:
        """Drop a face's edges; its neighbours' components must be clustered again."""
        near = {b for (b,) in db.execute("SELECT b FROM edges WHERE a = ?", (row_id,))}
        near |= {a for (a,) in db.execute("SELECT a FROM edges WHERE b = ?", (row_id,))}
        db.execute("DELETE FROM edges WHERE a = ? OR b = ?", (row_id, row_id))
        return near

    def _link(self, db: sqlite3.Connection, new_ids: list[int]) -> None:
        """Edges from each new face to every face closer than THRESHOLD, except faces of its own photo."""
        rows = db.execute("SELECT id, image_key, embedding FROM faces ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        keys = [r[1] for r in rows]
        x = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(-1, 128)
        position = {int(i): n for n, i in enumerate(ids)}
        new_pos = np.array(sorted(position[i] for i in new_ids))
        is_new = np.zeros(len(ids), bool)
        is_new[new_pos] = True
        for block in _chunks(new_pos, _BLOCK):
            d = pairwise(x[block], x)
            edges = []
            for r, c in zip(*np.nonzero(d < THRESHOLD), strict=True):
                i = int(block[r])
                if c == i or keys[c] == keys[i] or (is_new[c] and c < i):
                    continue  # itself, the same photo, or a new-new pair already taken from its other end
                a, b = sorted((int(ids[i]), int(ids[c])))
                edges.append((a, b, float(d[r, c])))
            db.executemany("INSERT OR REPLACE INTO edges (a, b, distance) VALUES (?, ?, ?)", edges)

    def _component(self, db: sqlite3.Connection, seeds: set[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """Every face connected to a seed, and the edges among them (breadth first, in SQL batches)."""
        seen = set(seeds)
        frontier = sorted(seeds)
        edges: set[tuple[int, int]] = set()
        while frontier:
            nxt: set[int] = set()
            for batch in _chunks(frontier):
                marks = ",".join("?" * len(batch))
                for a, b in db.execute(
                    f"SELECT a, b FROM edges WHERE a IN ({marks}) UNION SELECT a, b FROM edges WHERE b IN ({marks})",
                    [*batch, *batch],
                ):
                    edges.add((a, b))
                    for v in (a, b):
                        if v not in seen:
                            seen.add(v)
                            nxt.add(v)
            frontier = sorted(nxt)
        return sorted(seen), sorted(edges)

    def _recluster(self, db: sqlite3.Connection, comp: list[int], comp_edges: list[tuple[int, int]]) -> list[str]:
        """Chinese whispers on one set of components, then each cluster gets the id it should keep."""
        local = {v: n for n, v in enumerate(comp)}
        labels = chinese_whispers(len(comp), [(local[a], local[b]) for a, b in comp_edges])
        members: dict[int, list[int]] = defaultdict(list)
        for v, label in zip(comp, labels, strict=True):
            members[label].append(v)
        clusters = [vs for vs in members.values() if len(vs) >= 2]
        clusters.sort(key=min)  # deterministic order: new ids follow the oldest face

        db.execute("CREATE TEMP TABLE IF NOT EXISTS comp (id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM comp")
        db.executemany("INSERT INTO comp (id) VALUES (?)", [(v,) for v in comp])
        previous: dict[int, str | None] = {}
        vectors: dict[int, np.ndarray] = {}
        for row_id, cluster, blob in db.execute(
            "SELECT id, cluster, embedding FROM faces WHERE id IN (SELECT id FROM comp)"
        ):
            previous[row_id], vectors[row_id] = cluster, _vec(blob)
        persons = {
            pid: (name, None if blob is None else _vec(blob))
            for pid, name, blob in db.execute("SELECT person_id, name, centroid FROM persons")
        }

        # By overlap with the previous clusters: named persons first, then most shared faces, then oldest id.
        candidates = []
        for n, vs in enumerate(clusters):
            for pid, shared in Counter(previous[v] for v in vs if previous[v]).items():
                unnamed = persons.get(pid, (None,))[0] is None
                candidates.append((unnamed, -shared, _pid_number(pid), pid, n))
        assigned: dict[int, str] = {}
        used: set[str] = set()
        for *_, pid, n in sorted(candidates):
            if n not in assigned and pid not in used:
                assigned[n] = pid
                used.add(pid)

        # Left over: take over a person that has no face left (outside these components), if the centroids
        # are close: the same people after re-indexing with other settings, or photos deleted and re-added.
        alive = {
            c
            for (c,) in db.execute(
                "SELECT DISTINCT cluster FROM faces WHERE cluster IS NOT NULL AND id NOT IN (SELECT id FROM comp)"
            )
        }
        orphans = [pid for pid, (_, c) in persons.items() if c is not None and pid not in used and pid not in alive]
        open_clusters = [n for n in range(len(clusters)) if n not in assigned]
        if open_clusters and orphans:
            centroids = np.stack([persons[pid][1] for pid in orphans])
            means = np.stack([np.mean([vectors[v] for v in clusters[n]], axis=0) for n in open_clusters])
            d = pairwise(means.astype(np.float32), centroids)
            for r, c in sorted(zip(*np.nonzero(d < RECLAIM), strict=True), key=lambda rc: d[rc]):
                n, pid = open_clusters[r], orphans[c]
                if n not in assigned and pid not in used:
                    assigned[n] = pid
                    used.add(pid)
        created = []
        now = _now()
        for n in range(len(clusters)):
            if n not in assigned:
                row = db.execute("SELECT value FROM meta WHERE key = 'next_person'").fetchone()
                number = int(row[0]) if row else 1
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_person', ?)", (str(number + 1),))
                pid = f"p{number}"
                db.execute("INSERT INTO persons (person_id, created_at, updated_at) VALUES (?, ?, ?)", (pid, now, now))
                assigned[n] = pid
                created.append(pid)

        cluster_of: dict[int, str | None] = dict.fromkeys(comp)
        for n, vs in enumerate(clusters):
            for v in vs:
                cluster_of[v] = assigned[n]
        db.executemany("UPDATE faces SET cluster = ? WHERE id = ?", [(c, v) for v, c in cluster_of.items()])

        # Centroid and cover of every cluster touched; then what each face is after merges.
        for pid in {c for c in previous.values() if c} | set(assigned.values()):
            rows = db.execute("SELECT face_id, embedding FROM faces WHERE cluster = ?", (pid,)).fetchall()
            if not rows:
                continue  # keeps its last centroid, so that it can be reclaimed later
            x = np.stack([_vec(b) for _, b in rows])
            centroid = x.mean(axis=0)
            cover = rows[int(np.argmin(np.linalg.norm(x - centroid, axis=1)))][0]
            db.execute(
                "UPDATE persons SET centroid = ?, cover_face_id = ?, updated_at = ? WHERE person_id = ?",
                (_blob(centroid), cover, now, pid),
            )
        canonical = {pid: self._canonical(db, pid) for pid in set(cluster_of.values()) if pid}
        db.executemany(
            "UPDATE faces SET person_id = ? WHERE id = ?",
            [(canonical[c] if c else None, v) for v, c in cluster_of.items()],
        )
        return created

    def _rewrite(
        self,
        db: sqlite3.Connection,
        by_image: Mapping[str, Mapping[str, str | None]],
        read_stats: Mapping[str, tuple[str, tuple[int, int]]],
    ) -> tuple[int, list[str]]:
        """Set person_id in the Parquet files of these images (only these), and record the files' stats.

        A file the faces asset replaced after we read it is left alone (its new faces are for the next
        run); the stat is compared right before the atomic replace, so that window is microseconds.
        """
        known = {p: (m, s) for p, m, s in db.execute("SELECT path, mtime_ns, size FROM files")}
        stats = dict(read_stats)
        rel_of = {key: rel for rel, (key, _) in read_stats.items()}
        written, retry = 0, []
        for key, mapping in sorted(by_image.items()):
            rel = rel_of.get(key) or _rel_of(self.parquet, key)
            path = self.parquet.faces_dir / rel
            before = _stat(path)
            expected = stats[rel][1] if rel in stats else known.get(rel)
            try:
                table = pq.read_table(path, use_threads=False)
            except FileNotFoundError:
                continue
            ids = table.column("face_id").to_pylist()
            current = table.column("person_id").to_pylist()
            wanted = [mapping.get(fid, pid) for fid, pid in zip(ids, current, strict=True)]
            if wanted == current:
                continue
            column = table.schema.get_field_index("person_id")
            table = table.set_column(column, table.schema.field(column), pa.array(wanted, pa.string()))
            if _stat(path) != before or (rel in stats and before != expected):
                retry.append(key)  # rewritten by the faces asset meanwhile
                stats.pop(rel, None)
                continue
            _write_atomic(table, path)
            written += 1
            if before == expected:  # else: we have not read this version's faces yet, so let the next run do it
                stats[rel] = (key, _stat(path))
        db.executemany(
            "INSERT OR REPLACE INTO files (path, image_key, mtime_ns, size) VALUES (?, ?, ?, ?)",
            [(rel, key, *stat) for rel, (key, stat) in stats.items()],
        )
        return written, retry

    def write_snapshot(self) -> None:
        """parquet/people.parquet: one row per person, for analytics next to the faces dataset."""
        people = self.list()
        table = pa.table(
            {
                "person_id": pa.array([p.person_id for p in people], pa.string()),
                "name": pa.array([p.name for p in people], pa.string()),
                "faces": pa.array([p.faces for p in people], pa.int32()),
                "images": pa.array([len(p.image_keys) for p in people], pa.int32()),
                "image_keys": pa.array([p.image_keys for p in people], pa.list_(pa.string())),
                "cover_face_id": pa.array([p.cover_face_id for p in people], pa.string()),
            }
        )
        _write_atomic(table, self.snapshot_path)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def _exists(db: sqlite3.Connection, face_id: str) -> bool:
    return db.execute("SELECT 1 FROM faces WHERE face_id = ?", (face_id,)).fetchone() is not None


def _key_of(rel: str) -> str:
    from facepipe.keys import key_for_relpath

    return key_for_relpath(rel.removesuffix(".parquet"))


def _rel_of(parquet: ParquetStore, key: str) -> str:
    return parquet._file(parquet.faces_dir, key).relative_to(parquet.faces_dir).as_posix()


def people_json(people: Iterable[Person]) -> list[dict]:
    """`facepipe people --json` (DESIGN contract: person_id, name, faces, image_keys)."""
    return [{"person_id": p.person_id, "name": p.name, "faces": p.faces, "image_keys": p.image_keys} for p in people]
