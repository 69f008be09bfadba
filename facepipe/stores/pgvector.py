"""Faces in Postgres + pgvector: a server at `dsn`, or the embedded one in `embedded_dir` (`<data>/postgres`)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from facepipe.faces.records import Face
from facepipe.secrets import misread_password
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
    redact,
    within,
)
from facepipe.stores.embedded_pg import EmbeddedPostgres, embedded_postgres

# Any constant works; it only has to be the same in every facepipe process (serialises schema DDL).
_SCHEMA_LOCK = 0x66616365  # "face"
_COLUMNS = (
    'face_id, image_key, sha256, "top", "right", "bottom", "left", score, detector, model_version, person_id, embedding'
)
_COPY_TYPES = ["uuid", "text", "text", "int4", "int4", "int4", "int4", "float4", "text", "text", "text", "vector"]
_MATCH_COLUMNS = 'face_id, image_key, "top", "right", "bottom", "left", person_id'
_EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
EF_SEARCH = 200
"""HNSW candidates per search (>= top_k). Measured (BENCHMARKS.md "Scale"): recall@10 1.00 at 100k faces,
0.95-0.97 at 1M; 100 gives 0.996 at 100k but 0.90 at 1M. Raise it with the table size."""
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
"""pgvector's defaults, kept after measuring at 100k faces: float32 `vector` was faster than a `halfvec`
expression index with exact re-ranking at every ef_search, and m=24/ef_construction=128 took 3.4x the
build for a p50 no better at recall >= 0.95."""
MAINTENANCE_WORK_MEM = "1GB"
"""For HNSW builds (schema creation over existing rows, VACUUM FULL): 1M faces' graph is ~1 GB; with less,
the build spills to disk and slows down several times (the 64 MB default is too small even at 100k)."""

PRIVATE_COLUMNS = ("face_id", "image_key", "sha256", "person_id", "embedding")
"""Columns Postgres would copy values of into its statistics (`pg_stats.most_common_vals`, `histogram_bounds`:
face ids, photo names, whole embeddings) where no erasure reaches them: their statistics target is 0 and
any statistics gathered before are cleared. The planner needs none of them (face_id is unique by its key,
the other lookups go through their indexes)."""

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {COLLECTION} (
        face_id uuid PRIMARY KEY,
        image_key text NOT NULL,
        sha256 text NOT NULL,
        "top" integer NOT NULL,
        "right" integer NOT NULL,
        "bottom" integer NOT NULL,
        "left" integer NOT NULL,
        score real,
        detector text NOT NULL,
        model_version text NOT NULL,
        person_id text,
        embedding vector({DIM}) NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {COLLECTION}_image_key_idx ON {COLLECTION} (image_key)",
    f"CREATE INDEX IF NOT EXISTS {COLLECTION}_person_id_idx ON {COLLECTION} (person_id)",
    f"CREATE INDEX IF NOT EXISTS {COLLECTION}_embedding_hnsw_idx ON {COLLECTION} "
    f"USING hnsw (embedding vector_l2_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})",
)


def _ensure_extension(conn: psycopg.Connection[Any]) -> None:
    """Create `vector` once, under an advisory lock: concurrent CREATE EXTENSION IF NOT EXISTS can still fail."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _configure(conn: psycopg.Connection[Any]) -> None:
    _ensure_extension(conn)
    register_vector(conn)


def _no_private_statistics(conn: psycopg.Connection[Any]) -> None:
    """Statistics target 0 on PRIVATE_COLUMNS, and what an earlier ANALYZE kept of them cleared (Postgres 18:
    ANALYZE skips a column with target 0 but leaves its old statistics)."""
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attname = ANY(%s) "
        "AND attstattarget IS DISTINCT FROM 0",
        (COLLECTION, list(PRIVATE_COLUMNS)),
    ).fetchall()
    if not rows:
        return
    names = [name for (name,) in rows]
    alter = sql.SQL(", ").join(sql.SQL("ALTER COLUMN {} SET STATISTICS 0").format(sql.Identifier(n)) for n in names)
    conn.execute(sql.SQL("ALTER TABLE {} ").format(sql.Identifier(COLLECTION)) + alter)
    if conn.info.server_version >= 180000:
        conn.execute(
            "SELECT pg_clear_attribute_stats(current_schema(), %s, name, inherited) "
            "FROM unnest(%s::text[]) AS name, (VALUES (false), (true)) AS i(inherited)",
            (COLLECTION, names),
        )


def _refresh_statistics(conn: psycopg.Connection[Any], erased: int) -> None:
    """After an erasure: the table's remaining statistics (box sizes, scores) are gathered again without the
    erased rows, instead of whenever autovacuum next gets to it."""
    if erased > 0:
        conn.execute(f"ANALYZE {COLLECTION}")


def _no_table() -> suppress:
    """Before the first write there is no table: reads answer "nothing" (status, search) instead of failing."""
    return suppress(psycopg.errors.UndefinedTable)


def _match(row: tuple[Any, ...], distance: float = 0.0) -> Match:
    face_id, image_key, top, right, bottom, left, person_id = row[:7]
    return Match(str(face_id), image_key, (top, right, bottom, left), float(distance), person_id)


class _PoolRef:
    """Lets the embedded server close a pool created after the server handed out its URI."""

    pool: ConnectionPool | None = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


class PgVectorStore(StoreBase):
    """Table `faces` with an HNSW (L2) index. `dsn` unset: the embedded server in `embedded_dir`."""

    def __init__(
        self,
        dsn: str | None = None,
        embedded_dir: Path | str | None = None,
        *,
        pool_size: int = 4,
        shared_buffers: str | None = None,
    ) -> None:
        if not dsn and embedded_dir is None:
            raise ValueError(
                "PgVectorStore needs a dsn (a Postgres server) or embedded_dir (the embedded one's folder)"
            )
        self._dsn = dsn or None
        self.embedded_dir = None if self._dsn else Path(embedded_dir).expanduser().resolve()  # type: ignore[arg-type]
        self.pool_size = pool_size
        self.shared_buffers = shared_buffers  # the embedded server's; None: embedded_pg's default
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._pool_ref: _PoolRef | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._mutex = threading.Lock()
        self._orphans: list[Any] = []
        self._schema_done = False

    def __repr__(self) -> str:
        where = f"dsn={describe_dsn(self._dsn)!r}" if self._dsn else f"embedded_dir={str(self.embedded_dir)!r}"
        return f"PgVectorStore({where})"

    @property
    def is_local(self) -> bool:
        return self._dsn is None

    def _where(self) -> str:
        return f"Postgres at {describe_dsn(self._dsn)}" if self._dsn else f"embedded Postgres in {self.embedded_dir}"

    def _get_pool(self) -> ConnectionPool:
        with self._mutex:
            if self._pool is not None and self._pool_pid == os.getpid():
                return self._pool
            if self._pool is not None:
                # Inherited through fork: its sockets belong to the parent; closing them would cut the parent off.
                self._orphans.append(self._pool)
                self._pool, self._embedded = None, None
            ref = _PoolRef()
            if self._dsn:
                if misread_password(self._dsn):
                    raise StoreError(
                        f"cannot use the {self._where()}: its password holds a character a URL needs %-encoded "
                        "(write @ as %40, / as %2F, # as %23, ? as %3F, a space as %20)"
                    )
                conninfo = self._dsn
            else:
                self._embedded = embedded_postgres(self.embedded_dir, self.shared_buffers)
                conninfo = self._embedded.attach(ref.close)
            try:  # a direct connect first, for a real error message instead of a pool timeout
                with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as probe:
                    _ensure_extension(probe)
                ref.pool = ConnectionPool(
                    conninfo,
                    min_size=1,
                    max_size=max(1, self.pool_size),
                    kwargs={"autocommit": True},
                    configure=_configure,
                    check=ConnectionPool.check_connection,
                    name="facepipe-pgvector",
                    timeout=15.0,
                    open=False,
                )
                ref.pool.open(wait=True, timeout=15.0)
            except (psycopg.Error, PoolTimeout) as err:
                if self._embedded is not None:
                    self._embedded.detach(ref.close)
                    self._embedded = None
                raise StoreError(f"cannot use the {self._where()}: {redact(str(err), self._dsn).strip()}") from None
            self._pool, self._pool_ref, self._pool_pid = ref.pool, ref, os.getpid()
            return ref.pool

    def _close_pool(self) -> None:
        pool, ref, embedded = self._pool, self._pool_ref, self._embedded
        self._pool, self._pool_ref, self._embedded = None, None, None
        if pool is not None:
            pool.close()
        if embedded is not None and ref is not None:
            embedded.detach(ref.close)  # the last pool of this process gone: leave the server

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection with pgvector types; wrap multi-statement work in `transaction()`."""
        pool = self._get_pool()
        embedded = self._embedded
        if embedded is not None and not embedded.running():
            embedded.uri()  # the server died (killed, OOM): start it again; the pool then reconnects
        try:
            conn = pool.getconn()
        except PoolTimeout:
            raise StoreError(f"no connection to the {self._where()} within 15 s") from None
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def close(self) -> None:
        """Close the pool; when it was this process's last client of the embedded server, leave it too
        (the last process to leave stops it)."""
        with self._mutex:
            if self._pool_pid == os.getpid():
                self._close_pool()

    # -- schema ---------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self.connection() as conn, conn.transaction():
            # DDL under one advisory lock: concurrent CREATE ... IF NOT EXISTS races on the catalogs.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            # An HNSW build over existing rows needs more than the 64 MB default to stay in memory.
            conn.execute(f"SET LOCAL maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
            for statement in _SCHEMA:
                conn.execute(statement)
            _no_private_statistics(conn)
        self._schema_done = True

    # -- writes ---------------------------------------------------------------------------------------

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None:
        """Upsert all new faces first, then delete each image's other faces, in one transaction."""
        if not faces_by_image:
            return
        faces = sorted(batch_faces(faces_by_image), key=lambda f: f.face_id)
        keys = list(faces_by_image)
        self._ensure_once()
        with self.connection() as conn, conn.transaction():
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS faces_in (LIKE {COLLECTION} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            with conn.cursor().copy(f"COPY faces_in ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_COPY_TYPES)
                for f in faces:
                    copy.write_row(
                        (
                            uuid.UUID(f.face_id),
                            f.image_key,
                            f.sha256,
                            int(f.top),
                            int(f.right),
                            int(f.bottom),
                            int(f.left),
                            None if f.score is None else float(f.score),
                            f.detector,
                            f.model_version,
                            f.person_id,
                            as_vector(f.embedding),
                        )
                    )
            cols = _COLUMNS.split(", ")[1:]
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
            old = ", ".join(f"{COLLECTION}.{c}" for c in cols)
            new = ", ".join(f"EXCLUDED.{c}" for c in cols)
            # Unchanged rows are left alone: a re-run writes no dead tuples and no new HNSW entries.
            conn.execute(
                f"INSERT INTO {COLLECTION} ({_COLUMNS}) SELECT {_COLUMNS} FROM faces_in "
                f"ON CONFLICT (face_id) DO UPDATE SET {updates} WHERE ({old}) IS DISTINCT FROM ({new})"
            )
            conn.execute(
                f"DELETE FROM {COLLECTION} f WHERE f.image_key = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM faces_in n WHERE n.face_id = f.face_id)",
                (keys,),
            )

    def delete_images(self, image_keys: Iterable[str]) -> None:
        keys = list(image_keys)
        if keys:
            with _no_table(), self.connection() as conn:
                erased = conn.execute(f"DELETE FROM {COLLECTION} WHERE image_key = ANY(%s)", (keys,)).rowcount
                _refresh_statistics(conn, erased)

    def delete_faces(self, face_ids: Iterable[str]) -> None:
        ids = list(face_ids)
        if ids:
            with _no_table(), self.connection() as conn:
                erased = conn.execute(f"DELETE FROM {COLLECTION} WHERE face_id = ANY(%s::uuid[])", (ids,)).rowcount
                _refresh_statistics(conn, erased)

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None:
        if not mapping:
            return
        ids = [uuid.UUID(k) for k in mapping]
        people = list(mapping.values())
        with _no_table(), self.connection() as conn:
            conn.execute(
                f"UPDATE {COLLECTION} f SET person_id = m.person_id "
                "FROM unnest(%s::uuid[], %s::text[]) AS m(face_id, person_id) WHERE f.face_id = m.face_id",
                (ids, people),
            )

    # -- reads ----------------------------------------------------------------------------------------

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]:
        queries = as_matrix(embeddings)
        if top_k <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        sql = (
            f"SELECT {_MATCH_COLUMNS}, embedding <-> %(q)s AS distance FROM {COLLECTION} "
            "ORDER BY embedding <-> %(q)s LIMIT %(k)s"
        )
        results: list[list[Match]] = []
        with _no_table(), self.connection() as conn, conn.transaction():
            # HNSW returns at most ef_search candidates: keep it >= top_k so a search is not cut short.
            # 200 measured recall@10 0.95 at 1M faces in 12.5 ms (100: 0.90), BENCHMARKS.md "Scale".
            conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true)", (str(min(max(EF_SEARCH, top_k), _EF_SEARCH_MAX)),)
            )
            if top_k > _EF_SEARCH_MAX:
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            for q in queries:
                rows = conn.execute(sql, {"q": q, "k": top_k}).fetchall()
                results.append(within([_match(r, r[7]) for r in rows], max_distance))
        if len(results) < len(queries):  # no table yet
            return [[] for _ in range(len(queries))]
        return results

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with _no_table(), self.connection() as conn:
            if image_keys is None:
                rows = conn.execute(f"SELECT image_key, face_id FROM {COLLECTION}")
            else:
                keys = list(image_keys)
                out.update({k: set() for k in keys})
                rows = conn.execute(f"SELECT image_key, face_id FROM {COLLECTION} WHERE image_key = ANY(%s)", (keys,))
            for key, fid in rows:
                out.setdefault(key, set()).add(str(fid))
        return out

    def faces_of_images(self, image_keys: Iterable[str]) -> dict[str, list[Match]]:
        keys = list(image_keys)
        out: dict[str, list[Match]] = {k: [] for k in keys}
        with _no_table(), self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_MATCH_COLUMNS} FROM {COLLECTION} WHERE image_key = ANY(%s) "
                'ORDER BY image_key, "top", "left"',
                (keys,),
            )
            for row in rows:
                out[row[1]].append(_match(row))
        return out

    def images_of_person(self, person_id: str) -> list[str]:
        keys: list[str] = []
        with _no_table(), self.connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT image_key FROM {COLLECTION} WHERE person_id = %s ORDER BY image_key",
                (person_id,),
            )
            keys = [r[0] for r in rows]
        return keys

    def count(self) -> int:
        n = 0
        with _no_table(), self.connection() as conn:
            row = conn.execute(f"SELECT count(*) FROM {COLLECTION}").fetchone()
            n = int(row[0]) if row else 0
        return n

    # -- maintenance ----------------------------------------------------------------------------------

    def compact(self, progress: bool = False) -> dict[str, Any]:
        """`VACUUM FULL` the table: table and indexes are rewritten into new files and the old ones unlinked,
        so no deleted row is left in the table's files (plain autovacuum only marks the space reusable).
        Postgres's own write-ahead log (`pg_wal`) keeps the old row images until its segments are recycled
        after later checkpoints. Locks the table meanwhile (searches and writes wait)."""
        started = time.perf_counter()
        with self.connection() as conn:
            try:
                before = conn.execute(f"SELECT pg_total_relation_size('{COLLECTION}')").fetchone()[0]
            except psycopg.errors.UndefinedTable:
                return {"points": 0, "seconds": 0.0}
            conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
            conn.execute(f"VACUUM (FULL, ANALYZE) {COLLECTION}")
            conn.execute("CHECKPOINT")
            after = conn.execute(f"SELECT pg_total_relation_size('{COLLECTION}')").fetchone()[0]
            points = conn.execute(f"SELECT count(*) FROM {COLLECTION}").fetchone()[0]
        return {
            "points": int(points),
            "bytes_before": int(before),
            "bytes_after": int(after),
            "seconds": round(time.perf_counter() - started, 2),
        }
