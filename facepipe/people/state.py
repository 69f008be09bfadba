"""The people state: one SQLite file in the data folder with persons, faces, the graph's edges and the
Parquet files last seen (tables `persons`, `faces`, `edges`, `files`, `meta`; view `people` for analytics).

`reading` and `writing` open it; a `State` answers and changes it within one connection.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from facepipe.faces.records import Box
from facepipe.people.constraints import FaceAt, Rule
from facepipe.people.records import NotFound, PeopleError, Person, Stat, person_number
from facepipe.statedb import Connection, PostgresDB, SqliteDB, StateDB

STATE_FILE = "people.sqlite"
LOCK_FILE = "people.lock"
WAY_OUT = (
    "move it aside (e.g. add .damaged to its name); the next `facepipe index` clusters the faces again "
    "from the Parquet (names and merges are not carried over: the last persons and names are listed in "
    "parquet/people.parquet)"
)

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS face_rules (  -- the user's word on one face, kept through every re-clustering
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    edit_id INTEGER NOT NULL,    -- the edit that made it (undo deletes it)
    kind TEXT NOT NULL,          -- 'is': the face is person_id (null: nobody); 'not': never person_id
    person_id TEXT,
    face_id TEXT NOT NULL,       -- the face it was made on; after a re-index or another detector the
    image_key TEXT NOT NULL,     -- face of the same photo whose box overlaps this box most takes it
    box_top INTEGER NOT NULL, box_right INTEGER NOT NULL, box_bottom INTEGER NOT NULL, box_left INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS face_rules_image_key ON face_rules (image_key);
CREATE TABLE IF NOT EXISTS apart (   -- two persons the user said are different people (a < b)
    a TEXT NOT NULL, b TEXT NOT NULL, edit_id INTEGER NOT NULL, PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edits (   -- every people edit: who, when, what, and what it changed (for undo)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,        -- name, hide, merge, split, move, review
    detail TEXT NOT NULL,        -- JSON: the request
    before TEXT NOT NULL,        -- JSON: persons and faces as they were
    undone_at TEXT
);
CREATE VIEW IF NOT EXISTS people AS
    SELECT f.person_id, p.name, count(*) AS faces, count(DISTINCT f.image_key) AS images
    FROM faces f JOIN persons p ON p.person_id = f.person_id
    WHERE f.person_id IS NOT NULL GROUP BY f.person_id, p.name;
"""


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def vector_of(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def blob_of(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _chunks(items: Sequence, size: int = 500) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(items: Sized) -> str:
    return ",".join("?" * len(items))


ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "persons": {"hidden": "INTEGER NOT NULL DEFAULT 0"},
    "faces": {"box_top": "INTEGER", "box_right": "INTEGER", "box_bottom": "INTEGER", "box_left": "INTEGER"},
}
"""Columns added after the first release: states made before get them when opened (both backends)."""


def sqlite_db(data_dir: Path) -> SqliteDB:
    """The embedded default: `people.sqlite` in the data folder."""
    return SqliteDB(Path(data_dir) / STATE_FILE, SCHEMA, way_out=WAY_OUT, added_columns=ADDED_COLUMNS)


def postgres_db(dsn: str, import_from: Path | None = None) -> PostgresDB:
    """The people tables in a shared Postgres (`FACEPIPE_PG_DSN`), schema `facepipe_people`."""
    return PostgresDB(dsn, SCHEMA, name="people", import_from=import_from, added_columns=ADDED_COLUMNS)


def _db(where: Path | StateDB) -> StateDB:
    return sqlite_db(where) if isinstance(where, (str, Path)) else where


@contextlib.contextmanager
def reading(where: Path | StateDB) -> Iterator[State]:
    """The state of a data folder (or a `StateDB`: Postgres), created if missing, on a connection of its own."""
    with _db(where).reading() as db:
        yield State(db)


@contextlib.contextmanager
def writing(where: Path | StateDB) -> Iterator[State]:
    """One writer at a time (Dagster runs, the daemon and the CLI are separate processes, maybe on
    separate machines), in one transaction: a failure leaves the previous state, and the next run redoes it."""
    with _db(where).writing(exclusive=True) as db:
        yield State(db)


class State:
    """Queries and changes of the people state, on one open connection."""

    def __init__(self, db: Connection) -> None:
        self.db = db

    # -- persons -------------------------------------------------------------------------------------------

    def persons(self, only: str | None = None) -> list[Person]:
        """Persons with at least one face (or just `only`), largest first."""
        where = "f.person_id IS NOT NULL" + (" AND f.person_id = ?" if only else "")
        rows = self.db.execute(
            f"SELECT f.person_id, f.image_key, count(*) FROM faces f WHERE {where} "
            "GROUP BY f.person_id, f.image_key ORDER BY f.person_id, f.image_key",
            (only,) if only else (),
        ).fetchall()
        faces: Counter[str] = Counter()
        keys: dict[str, list[str]] = defaultdict(list)
        for pid, key, n in rows:
            faces[pid] += n
            keys[pid].append(key)
        about = {
            p: (name, bool(hidden))
            for p, name, hidden in self.db.execute("SELECT person_id, name, hidden FROM persons")
        }
        covers = self.covers(set(faces))
        people = []
        for pid in faces:
            name, hidden = about.get(pid, (None, False))
            people.append(Person(pid, name, faces[pid], keys[pid], covers.get(pid), hidden))
        return sorted(people, key=lambda p: (-p.faces, person_number(p.person_id)))

    def covers(self, pids: set[str]) -> dict[str, str]:
        """A canonical person's thumbnail: the cover of its largest cluster (merges bring several)."""
        out: dict[str, tuple[int, str]] = {}
        for pid, cover, n in self.db.execute(
            "SELECT f.person_id, p.cover_face_id, count(*) FROM faces f JOIN persons p ON p.person_id = f.cluster "
            "WHERE f.person_id IS NOT NULL AND p.cover_face_id IS NOT NULL "
            "GROUP BY f.person_id, f.cluster, p.cover_face_id"
        ):
            if pid in pids and (pid not in out or n > out[pid][0]):
                out[pid] = (n, cover)
        return {pid: cover for pid, (_, cover) in out.items()}

    def name_of(self, person_id: str) -> str | None:
        return self.db.execute("SELECT name FROM persons WHERE person_id = ?", (person_id,)).fetchone()[0]

    def canonical(self, person_id: str) -> str:
        """The person an id now is: itself, or the end of its chain of merges."""
        seen = set()
        pid = person_id
        while True:
            row = self.db.execute("SELECT merged_into FROM persons WHERE person_id = ?", (pid,)).fetchone()
            if row is None:
                raise NotFound(f"no person {person_id!r} is known")
            if row[0] is None or row[0] in seen:
                return pid
            seen.add(pid)
            pid = row[0]

    def names(self) -> dict[str, tuple[str, str | None]]:
        """Every person id ever given -> (the person it now is, that person's name)."""
        rows = self.db.execute("SELECT person_id, name, merged_into FROM persons").fetchall()
        name = {pid: n for pid, n, _ in rows}
        into = {pid: m for pid, _, m in rows}
        out = {}
        for pid in name:
            target, hops = pid, 0
            while into.get(target) and hops < len(into):
                target, hops = into[target], hops + 1
            out[pid] = (target, name.get(target))
        return out

    def set_name(self, person_id: str, name: str | None) -> None:
        self.db.execute(
            "UPDATE persons SET name = ?, updated_at = ? WHERE person_id = ?", (name, timestamp(), person_id)
        )

    def fold(self, keep: str, fold: str) -> list[tuple[str, str]]:
        """Record that canonical person `fold` is `keep` from now on (`keep` takes its name if it has none);
        returns the (face_id, image_key) of the faces that moved."""
        now = timestamp()
        db = self.db
        db.execute("UPDATE persons SET merged_into = ?, updated_at = ? WHERE person_id = ?", (keep, now, fold))
        db.execute("UPDATE persons SET merged_into = ? WHERE merged_into = ?", (keep, fold))  # keep chains short
        db.execute(
            "UPDATE persons SET name = (SELECT name FROM persons WHERE person_id = ?), updated_at = ? "
            "WHERE person_id = ? AND name IS NULL",
            (fold, now, keep),
        )
        moved = db.execute("SELECT face_id, image_key FROM faces WHERE person_id = ?", (fold,)).fetchall()
        db.execute("UPDATE faces SET person_id = ? WHERE person_id = ?", (keep, fold))
        return moved

    def erase(self, person_id: str) -> set[str]:
        """Delete a canonical person, the persons merged into it and their faces (with their edges); the
        faces that were linked to them become pending seeds. Returns the person ids erased."""
        rows = self.db.execute("SELECT person_id, merged_into FROM persons").fetchall()
        gone = {person_id}
        while True:
            more = {p for p, into in rows if into in gone} - gone
            if not more:
                break
            gone |= more
        marks = _marks(gone)
        ids = [
            i
            for (i,) in self.db.execute(
                f"SELECT id FROM faces WHERE cluster IN ({marks}) OR person_id IN ({marks})", [*gone, *gone]
            )
        ]
        seeds: set[int] = set()
        for row_id in ids:
            seeds |= self.unlink(row_id)
        self.db.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
        self.db.execute(f"DELETE FROM persons WHERE person_id IN ({marks})", list(gone))
        self.db.execute(f"DELETE FROM face_rules WHERE person_id IN ({marks})", list(gone))
        self.db.execute(f"DELETE FROM apart WHERE a IN ({marks}) OR b IN ({marks})", [*gone, *gone])
        self.set_pending_seeds(self.pending_seeds() | (seeds - set(ids)))
        return gone

    def new_person(self, now: str) -> str:
        """A person id never given before (`p1`, `p2`, ...), recorded."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'next_person'").fetchone()
        number = int(row[0]) if row else 1
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('next_person', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(number + 1),),
        )
        pid = f"p{number}"
        self.db.execute("INSERT INTO persons (person_id, created_at, updated_at) VALUES (?, ?, ?)", (pid, now, now))
        return pid

    def names_and_centroids(self) -> dict[str, tuple[str | None, np.ndarray | None]]:
        return {
            pid: (name, None if blob is None else vector_of(blob))
            for pid, name, blob in self.db.execute("SELECT person_id, name, centroid FROM persons")
        }

    def set_centroid(self, person_id: str, centroid: np.ndarray, cover_face_id: str, now: str) -> None:
        self.db.execute(
            "UPDATE persons SET centroid = ?, cover_face_id = ?, updated_at = ? WHERE person_id = ?",
            (blob_of(centroid), cover_face_id, now, person_id),
        )

    # -- faces ---------------------------------------------------------------------------------------------

    def image_of_face(self, face_id: str) -> str | None:
        row = self.db.execute("SELECT image_key FROM faces WHERE face_id = ?", (face_id,)).fetchone()
        return row[0] if row else None

    def faces_of_images(self, image_keys: Sequence[str]) -> list[tuple[int, str, str, np.ndarray]]:
        """(id, face_id, image_key, embedding) of every face of these images."""
        out = []
        for keys in _chunks(image_keys):
            out += [
                (row_id, fid, key, vector_of(blob))
                for row_id, fid, key, blob in self.db.execute(
                    f"SELECT id, face_id, image_key, embedding FROM faces WHERE image_key IN ({_marks(keys)})", keys
                ).fetchall()
            ]
        return out

    def add_face(
        self, face_id: str, image_key: str, embedding: np.ndarray, box: Box | None = None, was: FaceAt | None = None
    ) -> int:
        """A new face; `was` is the face it replaces (same photo, same place), whose cluster it starts in."""
        cur = self.db.execute(
            "INSERT INTO faces (face_id, image_key, embedding, box_top, box_right, box_bottom, box_left, cluster, "
            "person_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (face_id, image_key, blob_of(embedding), *(box or (None,) * 4), was and was.cluster, was and was.person_id),
        )
        return cur.fetchone()[0]

    def set_box(self, face_id: str, box: Box) -> None:
        self.db.execute(
            "UPDATE faces SET box_top = ?, box_right = ?, box_bottom = ?, box_left = ? WHERE face_id = ?",
            (*box, face_id),
        )

    def faces_at(self, where: str, params: Sequence = ()) -> list[FaceAt]:
        """The faces matching a WHERE clause (over `faces`), with their box and person."""
        return [
            FaceAt(row, fid, key, None if top is None else (top, right, bottom, left), pid, cluster)
            for row, fid, key, top, right, bottom, left, pid, cluster in self.db.execute(
                "SELECT id, face_id, image_key, box_top, box_right, box_bottom, box_left, person_id, cluster "
                f"FROM faces WHERE {where} ORDER BY id",
                params,
            )
        ]

    def every_face(self) -> list[tuple[FaceAt, np.ndarray]]:
        """Every face with its embedding (review and evaluation read them all)."""
        vectors = {row: vector_of(blob) for row, blob in self.db.execute("SELECT id, embedding FROM faces")}
        return [(f, vectors[f.row]) for f in self.faces_at("TRUE")]

    def faces_in(self, column: str, values: Iterable) -> list[FaceAt]:
        """The faces whose `column` (id, face_id or image_key) is one of `values`, in id order; asked in
        chunks of plain placeholders, which both SQLite and Postgres take."""
        if column not in ("id", "face_id", "image_key"):
            raise ValueError(f"faces_in: unknown column {column!r}")
        found = [f for batch in _chunks(list(values)) for f in self.faces_at(f"{column} IN ({_marks(batch)})", batch)]
        return sorted(found, key=lambda f: f.row)

    def faces_by_id(self, face_ids: Sequence[str]) -> dict[str, FaceAt]:
        return {f.face_id: f for f in self.faces_in("face_id", face_ids)}

    def faces_of(self, person_id: str) -> list[FaceAt]:
        return self.faces_at("person_id = ?", (person_id,))

    def set_faces(self, changes: Mapping[str, str | None]) -> None:
        """face_id -> person id (cluster and person both): what an edit decides, until clustering runs."""
        self.db.executemany(
            "UPDATE faces SET cluster = ?, person_id = ? WHERE face_id = ?", [(p, p, f) for f, p in changes.items()]
        )

    def embeddings_by_person(self) -> dict[str | None, tuple[list[str], np.ndarray]]:
        """person id (None: unassigned) -> (face ids, embeddings) of every face."""
        rows = self.db.execute("SELECT person_id, face_id, embedding FROM faces ORDER BY id").fetchall()
        grouped: dict[str | None, tuple[list[str], list[bytes]]] = defaultdict(lambda: ([], []))
        for pid, fid, blob in rows:
            grouped[pid][0].append(fid)
            grouped[pid][1].append(blob)
        return {
            pid: (fids, np.frombuffer(b"".join(blobs), np.float32).reshape(-1, 128))
            for pid, (fids, blobs) in grouped.items()
        }

    def set_embedding(self, row_id: int, embedding: np.ndarray) -> None:
        self.db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (blob_of(embedding), row_id))

    def delete_face(self, row_id: int) -> None:
        self.db.execute("DELETE FROM faces WHERE id = ?", (row_id,))

    def existing(self, row_ids: Iterable[int]) -> set[int]:
        """Those of these face row ids still present."""
        out: set[int] = set()
        for batch in _chunks(sorted(row_ids)):
            out |= {i for (i,) in self.db.execute(f"SELECT id FROM faces WHERE id IN ({_marks(batch)})", list(batch))}
        return out

    def all_embeddings(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Every face's row id, image key and embedding, by id (what new edges are computed against)."""
        rows = self.db.execute("SELECT id, image_key, embedding FROM faces ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        keys = [r[1] for r in rows]
        x = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(-1, 128)
        return ids, keys, x

    def person_of_faces(self) -> dict[str, str]:
        """face_id -> person_id of every face in a person."""
        return dict(self.db.execute("SELECT face_id, person_id FROM faces WHERE person_id IS NOT NULL"))

    def image_of_faces(self) -> dict[str, str]:
        """face_id -> image_key of every face."""
        return dict(self.db.execute("SELECT face_id, image_key FROM faces"))

    def pending_seeds(self) -> set[int]:
        """Faces that were linked to a forgotten person: their components are to be clustered again."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'pending_seeds'").fetchone()
        return {int(v) for v in row[0].split(",") if v} if row else set()

    def set_pending_seeds(self, seeds: set[int]) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('pending_seeds', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (",".join(map(str, sorted(seeds))),),
        )

    def clear_pending_seeds(self) -> None:
        self.db.execute("DELETE FROM meta WHERE key = 'pending_seeds'")

    # -- the graph -----------------------------------------------------------------------------------------

    def unlink(self, row_id: int) -> set[int]:
        """Drop a face's edges; its neighbours' components must be clustered again."""
        near = {b for (b,) in self.db.execute("SELECT b FROM edges WHERE a = ?", (row_id,))}
        near |= {a for (a,) in self.db.execute("SELECT a FROM edges WHERE b = ?", (row_id,))}
        self.db.execute("DELETE FROM edges WHERE a = ? OR b = ?", (row_id, row_id))
        return near

    def add_edges(self, edges: Iterable[tuple[int, int, float]]) -> None:
        self.db.executemany(
            "INSERT INTO edges (a, b, distance) VALUES (?, ?, ?) "
            "ON CONFLICT (a, b) DO UPDATE SET distance = excluded.distance",
            edges,
        )

    def component(self, seeds: set[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """Every face connected to a seed, and the edges among them (breadth first, in SQL batches)."""
        seen = set(seeds)
        frontier = sorted(seeds)
        edges: set[tuple[int, int]] = set()
        while frontier:
            nxt: set[int] = set()
            for batch in _chunks(frontier):
                marks = _marks(batch)
                for a, b in self.db.execute(
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

    # -- clusters of one component -------------------------------------------------------------------------

    def mark_component(self, comp: Sequence[int]) -> None:
        """Remember the faces being clustered again (temp table `comp`) for the queries below."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS comp (id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM comp")
        self.db.executemany("INSERT INTO comp (id) VALUES (?)", [(v,) for v in comp])

    def component_faces(self) -> tuple[dict[int, str | None], dict[int, np.ndarray]]:
        """The marked faces' previous cluster and embedding, by row id."""
        previous: dict[int, str | None] = {}
        vectors: dict[int, np.ndarray] = {}
        for row_id, cluster, blob in self.db.execute(
            "SELECT id, cluster, embedding FROM faces WHERE id IN (SELECT id FROM comp)"
        ):
            previous[row_id], vectors[row_id] = cluster, vector_of(blob)
        return previous, vectors

    def clusters_outside_component(self) -> set[str]:
        """Cluster ids that still have a face outside the marked faces."""
        return {
            c
            for (c,) in self.db.execute(
                "SELECT DISTINCT cluster FROM faces WHERE cluster IS NOT NULL AND id NOT IN (SELECT id FROM comp)"
            )
        }

    def set_clusters(self, cluster_of: Mapping[int, str | None]) -> None:
        self.db.executemany("UPDATE faces SET cluster = ? WHERE id = ?", [(c, v) for v, c in cluster_of.items()])

    def cluster_faces(self, cluster: str) -> list[tuple[str, np.ndarray]]:
        """(face_id, embedding) of the faces clustered under this id."""
        return [
            (fid, vector_of(blob))
            for fid, blob in self.db.execute("SELECT face_id, embedding FROM faces WHERE cluster = ?", (cluster,))
        ]

    def set_persons_of(self, person_of: Mapping[int, str | None]) -> None:
        """What each face is after merges (face row id -> person id)."""
        self.db.executemany("UPDATE faces SET person_id = ? WHERE id = ?", [(p, v) for v, p in person_of.items()])

    # -- the user's decisions: face rules, persons apart, the edit log --------------------------------------

    def add_rule(self, edit_id: int, kind: str, person_id: str | None, face: FaceAt) -> None:
        if face.box is None:
            raise PeopleError(f"face {face.face_id} has no box recorded yet: run `facepipe index` first")
        self.db.execute(
            "INSERT INTO face_rules (edit_id, kind, person_id, face_id, image_key, box_top, box_right, box_bottom, "
            "box_left) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (edit_id, kind, person_id, face.face_id, face.image_key, *face.box),
        )

    def rules_of_images(self, image_keys: Sequence[str]) -> list[Rule]:
        out: list[Rule] = []
        for keys in _chunks(sorted(set(image_keys))):
            out += [
                Rule(i, kind, pid, fid, key, (t, r, b, lft))
                for i, kind, pid, fid, key, t, r, b, lft in self.db.execute(
                    "SELECT id, kind, person_id, face_id, image_key, box_top, box_right, box_bottom, box_left "
                    f"FROM face_rules WHERE image_key IN ({_marks(keys)})",
                    list(keys),
                )
            ]
        return out

    def forget_rules(self, image_keys: Sequence[str]) -> None:
        """Drop the rules made on faces of these photos (they are being erased)."""
        for keys in _chunks(sorted(set(image_keys))):
            self.db.execute(f"DELETE FROM face_rules WHERE image_key IN ({_marks(keys)})", list(keys))

    def add_apart(self, edit_id: int, a: str, b: str) -> None:
        lo, hi = sorted((a, b))
        self.db.execute(
            "INSERT INTO apart (a, b, edit_id) VALUES (?, ?, ?) ON CONFLICT (a, b) DO NOTHING", (lo, hi, edit_id)
        )

    def apart_pairs(self) -> set[tuple[str, str]]:
        """Pairs of persons said to be different people, as the persons they now are."""
        out = set()
        for a, b in self.db.execute("SELECT a, b FROM apart").fetchall():
            try:
                ca, cb = self.canonical(a), self.canonical(b)
            except PeopleError:
                continue  # one was forgotten
            if ca != cb:
                out.add(tuple(sorted((ca, cb))))
        return out

    def begin_edit(self, who: str, action: str, detail: Mapping, faces: Sequence[str] = ()) -> int:
        """Log an edit before making it, with what undo needs to put back: every person's name, hidden
        flag and merge, and the cluster and person of the faces it touches."""
        persons = {
            pid: [name, hidden, into]
            for pid, name, hidden, into in self.db.execute("SELECT person_id, name, hidden, merged_into FROM persons")
        }
        touched: dict[str, list] = {}
        for batch in _chunks(list(faces)):
            for fid, cluster, pid in self.db.execute(
                f"SELECT face_id, cluster, person_id FROM faces WHERE face_id IN ({_marks(batch)})", list(batch)
            ):
                touched[fid] = [cluster, pid]
        cur = self.db.execute(
            "INSERT INTO edits (at, who, action, detail, before) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (timestamp(), who, action, json.dumps(detail), json.dumps({"persons": persons, "faces": touched})),
        )
        return cur.fetchone()[0]

    def edits(self, limit: int | None = None) -> list[dict]:
        """The edit log, newest first."""
        rows = self.db.execute(
            "SELECT id, at, who, action, detail, undone_at FROM edits ORDER BY id DESC LIMIT ?", (limit or 2**62,)
        ).fetchall()
        return [
            {"id": i, "at": at, "who": who, "action": action, "detail": json.loads(detail), "undone_at": undone}
            for i, at, who, action, detail, undone in rows
        ]

    def undo(self, edit_id: int) -> dict[str, str | None]:
        """Put back what one edit changed; drops its rules and apart pairs. Returns face_id -> person id
        of the faces put back (still present)."""
        (before,) = self.db.execute("SELECT before FROM edits WHERE id = ?", (edit_id,)).fetchone()
        before = json.loads(before)
        self.db.executemany(
            "UPDATE persons SET name = ?, hidden = ?, merged_into = ? WHERE person_id = ?",
            [(name, hidden, into, pid) for pid, (name, hidden, into) in before["persons"].items()],
        )
        self.db.executemany(
            "UPDATE faces SET cluster = ?, person_id = ? WHERE face_id = ?",
            [(cluster, pid, fid) for fid, (cluster, pid) in before["faces"].items()],
        )
        self.db.execute("DELETE FROM face_rules WHERE edit_id = ?", (edit_id,))
        self.db.execute("DELETE FROM apart WHERE edit_id = ?", (edit_id,))
        self.db.execute("UPDATE edits SET undone_at = ? WHERE id = ?", (timestamp(), edit_id))
        present = self.faces_by_id(list(before["faces"]))
        return {fid: f.person_id for fid, f in present.items()}

    def last_edits(self, n: int) -> list[int]:
        """The ids of the last `n` edits not undone, newest first."""
        rows = self.db.execute("SELECT id FROM edits WHERE undone_at IS NULL ORDER BY id DESC LIMIT ?", (n,))
        return [i for (i,) in rows]

    def set_hidden(self, person_id: str, hidden: bool) -> None:
        self.db.execute(
            "UPDATE persons SET hidden = ?, updated_at = ? WHERE person_id = ?", (int(hidden), timestamp(), person_id)
        )

    # -- Parquet files seen --------------------------------------------------------------------------------

    def files(self) -> dict[str, tuple[str, Stat]]:
        """Faces file (relative path) -> (image key, stat) as last read or written here."""
        return {p: (k, (m, s)) for p, k, m, s in self.db.execute("SELECT path, image_key, mtime_ns, size FROM files")}

    def record_files(self, stats: Mapping[str, tuple[str, Stat]]) -> None:
        self.db.executemany(
            "INSERT INTO files (path, image_key, mtime_ns, size) VALUES (?, ?, ?, ?) ON CONFLICT (path) DO UPDATE "
            "SET image_key = excluded.image_key, mtime_ns = excluded.mtime_ns, size = excluded.size",
            [(rel, key, *stat) for rel, (key, stat) in stats.items()],
        )

    def forget_files(self, paths: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM files WHERE path = ?", [(rel,) for rel in paths])
