"""Where the manifest and the people state keep their tables: a SQLite file, or a schema in Postgres.

Both backends expose the same small protocol (`StateDB`), and the manifest and the people state write
their SQL once, in the dialect both accept (`?` placeholders, `INSERT ... ON CONFLICT`, `IS DISTINCT
FROM`). The SQLite schema text is the source of truth: `pg_schema` turns it into Postgres DDL, so a
table added to a module's schema later is created in both backends without a second copy.

Postgres is what lets workers on several machines share one library: every reader sees the same rows,
upserts never duplicate a key, and writers that must run one at a time (the people state) take a
transaction-scoped advisory lock instead of a file lock only one machine can see.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from facepipe.statefiles import damage_named


class StateError(Exception):
    """The state database cannot be used (down, refused, wrong credentials): the message says which,
    with the password redacted. Nothing was written."""


PG_SCHEMA_PREFIX = "facepipe_"
"""Each module's tables get a Postgres schema of their own (`facepipe_manifest`, `facepipe_people`): both
have a `files` table, and the pgvector store's `faces` table stays in `public`."""


class Connection(Protocol):
    """What the manifest and the people state call on an open connection (sqlite3's shape)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


class StateDB(Protocol):
    """A place for one module's tables (its `schema`, created idempotently on first use)."""

    def exists(self) -> bool:
        """Whether anything was ever written here (reads of a state never written answer "nothing")."""
        ...

    def reading(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection where every statement commits on its own."""
        ...

    def writing(self, *, exclusive: bool = False) -> contextlib.AbstractContextManager[Connection]:
        """One transaction: all or nothing. `exclusive`: no other exclusive writer, on any machine, meanwhile."""
        ...


# -- SQLite ----------------------------------------------------------------------------------------------


class SqliteDB:
    """One SQLite file in the data folder (the embedded default); exclusive writers queue on a lock file."""

    def __init__(
        self,
        path: Path,
        schema: str,
        *,
        durable: bool = True,
        way_out: str = "",
        added_columns: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.added_columns = added_columns or {}
        """table -> {column: type}: columns added to the schema after files were made with it."""
        self.durable = durable
        """False: no fsync per commit (WAL stays consistent; a power cut loses only the last commits)."""
        self.way_out = way_out
        """What to do when the file is damaged (a StateFileError names the file and says this)."""

    def __repr__(self) -> str:
        return f"SqliteDB({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with damage_named(self.path, self.way_out or "move it aside; facepipe builds a new one"):
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=60000")
                if not self.durable:
                    db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(self.schema)
                self._add_columns(db)
                yield db
            finally:
                db.close()

    def _add_columns(self, db: sqlite3.Connection) -> None:
        """SQLite has no `ADD COLUMN IF NOT EXISTS`: look first."""
        for table, columns in self.added_columns.items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._open() as db:
            yield db

    @contextlib.contextmanager
    def writing(self, *, exclusive: bool = False) -> Iterator[sqlite3.Connection]:
        with self._file_lock(exclusive), self._open() as db:
            db.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def _file_lock(self, exclusive: bool) -> Iterator[None]:
        if not exclusive:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


# -- Postgres --------------------------------------------------------------------------------------------

_PG_TYPES: tuple[tuple[str, str], ...] = (
    (r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (r"\bINTEGER\b", "BIGINT"),  # nanosecond mtimes and sizes do not fit Postgres's 32-bit integer
    (r"\bBLOB\b", "BYTEA"),
    (r"\bREAL\b", "DOUBLE PRECISION"),
    (r"\)\s*WITHOUT\s+ROWID", ")"),
    (r"\bCREATE\s+VIEW\s+IF\s+NOT\s+EXISTS\b", "CREATE OR REPLACE VIEW"),
)


def pg_schema(sqlite_schema: str) -> str:
    """The Postgres DDL for a SQLite schema written in the common subset (types and a few clauses differ)."""
    out = sqlite_schema
    for pattern, replacement in _PG_TYPES:
        out = re.sub(pattern, replacement, out, flags=re.IGNORECASE)
    return out


def pg_sql(sql: str, params: bool = True) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled when there are parameters); anything
    SQLite-only is refused here, so a statement that works on one backend only fails in the Postgres
    tests, not in production."""
    if re.search(r"\bINSERT\s+OR\b", sql, flags=re.IGNORECASE):
        raise ValueError(f"SQLite-only statement (use INSERT ... ON CONFLICT): {sql}")
    return sql.replace("%", "%%").replace("?", "%s") if params else sql


def _lock_id(name: str) -> int:
    """A stable 63-bit advisory lock id for a name (the same on every machine)."""
    return zlib.crc32(name.encode()) | (0x5FACE << 32)


class PgConnection:
    """A psycopg connection that takes the common SQL (see `pg_sql`)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        params = tuple(params)
        return self.conn.execute(pg_sql(sql, bool(params)), params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        rows = [tuple(r) for r in rows]
        cur = self.conn.cursor()
        if rows:
            cur.executemany(pg_sql(sql), rows)
        return cur


_ready: set[tuple[str, str, str]] = set()
_ready_lock = threading.Lock()


class PostgresDB:
    """One module's tables in a schema of a shared Postgres (`FACEPIPE_PG_DSN`)."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        name: str,
        import_from: Path | None = None,
        added_columns: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"state name {name!r}: lower-case letters, digits and _ only")
        self.dsn = dsn
        self.ddl = pg_schema(schema) + _IMPORTS_DDL
        added = added_columns or {}
        self.added_columns = {t: {c: pg_schema(k) for c, k in cols.items()} for t, cols in added.items()}
        """table -> {column: type} added after the first schema: altered in only where missing (an ALTER
        locks the table even when the column exists, which would deadlock against live writers)."""
        self.import_from = import_from
        """The SQLite file this state lived in before a DSN was set: copied in once, into empty tables."""
        self.name = name
        """Which tables these are (`manifest`, `people`): names the schema and the exclusive-writer lock."""
        self.namespace = PG_SCHEMA_PREFIX + name

    def __repr__(self) -> str:
        from facepipe.secrets import describe_dsn

        return f"PostgresDB({describe_dsn(self.dsn)}, schema={self.namespace!r})"

    def _connect(self) -> Any:
        import psycopg

        from facepipe.secrets import describe_dsn, misread_password, redact

        where = f"the Postgres at {describe_dsn(self.dsn)} for the {self.name} state"
        if misread_password(self.dsn):  # as the pgvector store: refused before libpq misreads (and echoes) it
            raise StateError(
                f"cannot use {where}: its password holds a character a URL needs %-encoded "
                "(write @ as %40, / as %2F, # as %23, ? as %3F, a space as %20)"
            )
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=30)
        except psycopg.OperationalError as err:
            raise StateError(f"cannot use {where}: {redact(str(err), self.dsn).strip()}") from None
        try:
            self._ensure_schema(conn)
            conn.execute(f"SET search_path TO {self.namespace}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: Any) -> None:
        """Create the schema and tables once per process, under an advisory lock: concurrent `IF NOT
        EXISTS` DDL from two machines can still collide in Postgres's catalogs."""
        key = (self.dsn, self.namespace, self.ddl)
        if key in _ready:
            return
        with _ready_lock, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(f"schema:{self.namespace}"),))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.namespace}")
            conn.execute(f"SET LOCAL search_path TO {self.namespace}")
            conn.execute(self.ddl)
            self._add_columns(conn)
            if self.import_from is not None:
                _import_sqlite(conn, self.import_from)
            _ready.add(key)

    def _add_columns(self, conn: Any) -> None:
        for table, columns in self.added_columns.items():
            have = {
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                    (self.namespace, table),
                )
            }
            for column, kind in columns.items():
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def exists(self) -> bool:
        return True  # the tables are created on connect; an empty state answers "nothing" by itself

    @contextlib.contextmanager
    def reading(self) -> Iterator[PgConnection]:
        conn = self._connect()
        try:
            yield PgConnection(conn)
        finally:
            conn.close()

    @contextlib.contextmanager
    def writing(self, *, exclusive: bool = False) -> Iterator[PgConnection]:
        conn = self._connect()
        try:
            with conn.transaction():
                if exclusive:
                    lock = _lock_id(f"writer:{self.namespace}")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
                yield PgConnection(conn)
        finally:
            conn.close()


_IMPORTS_DDL = """
-- SQLite files copied in (once each), when a library that was embedded got a FACEPIPE_PG_DSN.
CREATE TABLE IF NOT EXISTS facepipe_imports (source TEXT PRIMARY KEY, tables TEXT NOT NULL, at TEXT NOT NULL);
"""


def _import_sqlite(conn: Any, path: Path) -> None:
    """Copy an embedded library's SQLite state into the still empty Postgres tables, once (inside the
    schema lock's transaction): setting FACEPIPE_PG_DSN later keeps names, merges and what was indexed.
    Tables that already hold rows (another library, or this one's earlier import) are never touched."""
    from datetime import UTC, datetime

    source = str(path.resolve())
    if not path.exists() or conn.execute("SELECT 1 FROM facepipe_imports WHERE source = %s", (source,)).fetchone():
        return
    lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = [t for t in tables if not t.startswith("sqlite_")]
        if any(conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables):
            return  # this database already holds a state: never mix two
        for table in tables:
            cursor = lite.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join(["%s"] * len(columns))
            with conn.cursor() as out:
                while rows := cursor.fetchmany(5000):
                    out.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES'"
        ).fetchall():  # explicit ids were copied: the identity continues after the largest
            conn.execute(
                f'SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max("{column}"), 0) + 1, false) '
                f'FROM "{table}"',
                (table, column),
            )
        conn.execute(
            "INSERT INTO facepipe_imports (source, tables, at) VALUES (%s, %s, %s)",
            (source, ",".join(tables), datetime.now(UTC).isoformat(timespec="seconds")),
        )
    finally:
        lite.close()
