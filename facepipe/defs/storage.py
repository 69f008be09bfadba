"""Dagster's SQLite storages made cheap: the event log per event (what bounds `facepipe index` on many small
photos), and the run and schedule storage at creation (a fresh Dagster home).

Every partition of a run costs Dagster one "materialization planned" event at run creation and one
materialization event per asset (faces, qdrant_faces, pgvector_faces): ~380 events for a run of 64
photos. Dagster's `SqliteEventLogStorage` writes each event with a new engine and connection to the
run's database, then again to the cross-run index database, and closes both; closing the last
connection of a WAL database checkpoints it, with an fsync. Measured on 600 tiny photos (no faces):
80 of 116 s went there, 130 ms per photo.

This storage keeps Dagster's files and schema (a Dagster home can switch back and forth) and changes
only how it writes:

* one engine per database, connections kept open (the index database and the 8 most recent runs),
  so no checkpoint per event;
* `PRAGMA synchronous=NORMAL` on its connections: in WAL mode a commit no longer waits for fsync;
  a crash of the process loses nothing, a power cut may lose the last few events, never corrupts;
* `store_event_batch` writes a batch of asset events of one run in one transaction and one
  `executemany` per database (a statement per event cost 0.4 ms more each: 0.5 s on a 200-photo run).
  Dagster hands events over in batches (a run's planned events, a step's materializations) only
  when `DAGSTER_EVENT_BATCH_SIZE` is set, so loading this storage sets it (unless already set);
* a new run's database is created with the head revision worked out once per process: Dagster's
  `_initdb` loads every alembic migration script twice per run database (0.2-0.3 s a run);
* the list of dynamic partitions is cached and read again only when SQLite triggers (installed on
  Dagster's `dynamic_partitions` table, so they count every writer's changes) say it changed:
  Dagster reads all keys about 15 times per run, 4 s of each 5 s run at 100k partitions.

The run and schedule storage (`FastSqliteRunStorage`, `FastSqliteScheduleStorage`) change only how a
database is created and opened: a new one in one pass (WAL before the tables, the alembic scripts, which
all of Dagster's SQLite databases share, loaded once per process; then Dagster's own data migrations),
one at head opened without Dagster loading the scripts again; anything else takes Dagster's
`from_local`. A fresh Dagster home: 0.85 -> 0.62 s (BENCHMARKS.md).

Used by the `dagster.yaml` that `facepipe index` writes into a new Dagster home
(`facepipe.defs.instance.DAGSTER_YAML`); production deployments keep Dagster's storage in Postgres instead.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster._config import Field, StringSource
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import (
    DynamicPartitionsTable,
    SqlEventLogStorageMetadata,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sqlite import sqlite_event_log as stock_module
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.schema import RunStorageSqlMetadata
from dagster._core.storage.runs.sqlite import sqlite_run_storage as stock_runs_module
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.schema import ScheduleStorageSqlMetadata
from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage as stock_schedules_module
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine, get_alembic_config, safe_commit
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine

from facepipe.settings import DAGSTER_EVENT_BATCH_SIZE, current, export_default

OPEN_RUN_DATABASES = 8
"""Run databases whose connection stays open; older ones are closed (and checkpointed)."""

_PARTITIONS_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS facepipe_partitions_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER)",
    "INSERT OR IGNORE INTO facepipe_partitions_version (id, version) VALUES (1, 0)",
    *(
        f"CREATE TRIGGER IF NOT EXISTS facepipe_partitions_{event.lower()} AFTER {event} ON dynamic_partitions "
        "BEGIN UPDATE facepipe_partitions_version SET version = version + 1 WHERE id = 1; END"
        for event in ("INSERT", "DELETE", "UPDATE")
    ),
)
"""A counter of changes to Dagster's dynamic partitions, kept by SQLite itself (so by every writer)."""

_PARTITIONS_VERSION_QUERY = "SELECT version FROM facepipe_partitions_version WHERE id = 1"

_BATCHED = {
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_OBSERVATION,
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
}


_METHODS_RELIED_ON = (
    "_initdb",
    "conn_string_for_shard",
    "_event_to_row",
    "_store_asset_event_tags",
    "_store_asset_event",
    "_check_partitions_table",
    "run_connection",
    "index_connection",
    "index_transaction",
    "get_dynamic_partitions",
)
_STATE_RELIED_ON = ("_initialized_dbs", "_db_lock")
"""What this subclass uses of Dagster's SqliteEventLogStorage beyond its public API."""

_RUN_AND_SCHEDULE_METHODS_RELIED_ON = ("from_local", "migrate", "optimize")
"""What the run and schedule storages below use of Dagster's SqliteRunStorage / SqliteScheduleStorage
(besides `create_db_conn_string("runs" / "schedules")` and the schema's metadata, imported by name)."""

TESTED_DAGSTER = "1.13."


class DagsterInternalsChanged(RuntimeError):
    """The installed Dagster's SQLite event log no longer has what this storage builds on."""


def check_dagster_internals(storage: object | None = None, base: type = SqliteEventLogStorage) -> None:
    """Fail loudly, naming what is missing, rather than misbehave after a Dagster upgrade."""
    import dagster

    missing = [name for name in _METHODS_RELIED_ON if not callable(getattr(base, name, None))]
    for stock in (SqliteRunStorage, SqliteScheduleStorage):
        missing += [
            f"{stock.__name__}.{name}"
            for name in _RUN_AND_SCHEDULE_METHODS_RELIED_ON
            if not callable(getattr(stock, name, None))
        ]
    if storage is not None:
        missing += [name for name in _STATE_RELIED_ON if not hasattr(storage, name)]
    if missing or not dagster.__version__.startswith(TESTED_DAGSTER):
        what = f"lacks {', '.join(missing)}" if missing else f"is not {TESTED_DAGSTER}x"
        raise DagsterInternalsChanged(
            f"facepipe's FastSqlite*Storage classes were written against Dagster {TESTED_DAGSTER}x's "
            f"SQLite storages, and Dagster {dagster.__version__} {what}. Remove `event_log_storage`, "
            "`run_storage` and `schedule_storage` from $DAGSTER_HOME/dagster.yaml to use Dagster's own "
            f"storage (same files), or keep Dagster at {TESTED_DAGSTER}x."
        )


def _default_home_dir(*parts: str) -> str:
    # where Dagster's default SQLite storage keeps it
    return os.path.join(current().dagster_home_path, *parts)


def _default_base_dir() -> str:
    return _default_home_dir("history", "runs")


_ALEMBIC_SCRIPTS: dict[str, Any] = {}  # script location -> alembic ScriptDirectory


def _alembic_script(stock_file: str = stock_module.__file__):
    """The alembic scripts of the storage whose Dagster module is `stock_file`, loaded once per process:
    Dagster loads them twice for every database it creates, and its run, schedule, event log and index
    databases all name the same scripts."""
    from alembic.script import ScriptDirectory

    config = get_alembic_config(stock_file)
    location = config.get_main_option("script_location")
    if location not in _ALEMBIC_SCRIPTS:
        _ALEMBIC_SCRIPTS[location] = ScriptDirectory.from_config(config)
    return _ALEMBIC_SCRIPTS[location]


def _create_at_head(conn: Connection, metadata: db.MetaData, stock_file: str) -> bool:
    """Create an empty database's tables in WAL mode, stamped at alembic head; False (nothing done)
    if it has a revision or any table already, so the caller takes Dagster's own way.

    WAL is switched on first (Dagster switches after): the tables are then created without an fsync each.
    """
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn)
    if context.get_current_revision() is not None or db.inspect(conn).get_table_names():
        return False
    conn.execute(db.text("PRAGMA journal_mode=WAL;"))
    safe_commit(conn)
    metadata.create_all(conn)
    context.stamp(_alembic_script(stock_file), "head")
    safe_commit(conn)
    return True


def _open_sqlite_storage(base_dir: str, name: str, metadata: db.MetaData, stock_file: str) -> tuple[str, str]:
    """("created", url) for a new run or schedule database made in one pass, ("current", url) for one with
    all its tables at alembic head (nothing for Dagster's `from_local` to do), ("dagster", url) otherwise:
    an older database, or any error, takes Dagster's `from_local` (which checks, stamps and migrates)."""
    from alembic.runtime.migration import MigrationContext

    os.makedirs(base_dir, exist_ok=True)
    conn_string = create_db_conn_string(base_dir, name)
    engine = create_engine(conn_string, poolclass=db.pool.NullPool)
    try:
        with engine.connect() as conn:
            if _create_at_head(conn, metadata, stock_file):
                return "created", conn_string
            revision = MigrationContext.configure(conn).get_current_revision()
            head = _alembic_script(stock_file).as_revision_number("head")
            complete = set(metadata.tables) <= set(db.inspect(conn).get_table_names())
            return ("current" if revision == head and complete else "dagster"), conn_string
    except db.exc.DatabaseError:  # e.g. another process created it meanwhile
        return "dagster", conn_string
    finally:
        engine.dispose()


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class FastSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with kept-open connections, no fsync per commit and batched asset events.

    dagster.yaml::

        event_log_storage:
          module: facepipe.defs.storage
          class: FastSqliteEventLogStorage
          # config: {base_dir: ...}  default: $DAGSTER_HOME/history/runs, as Dagster's own
    """

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        check_dagster_internals()
        export_default("DAGSTER_EVENT_BATCH_SIZE", str(DAGSTER_EVENT_BATCH_SIZE))
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        self._partitions: dict[str, tuple[int, list[str]]] = {}  # name -> (version, keys)
        self._partitions_versioned = False
        super().__init__(base_dir or _default_base_dir(), inst_data)
        check_dagster_internals(self)

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> FastSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    # -- connections ------------------------------------------------------------------------------

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            if self._engines_pid != os.getpid():  # forked: the parent's connections are not ours to use or close
                self._engines, self._engines_pid = OrderedDict(), os.getpid()
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard),
                pool_size=1,
                max_overflow=4,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _synchronous_normal)
            self._engines[shard] = engine
            runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
            for name in runs[: max(0, len(runs) - OPEN_RUN_DATABASES)]:
                self._engines.pop(name).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        """A new database as Dagster makes it (tables, WAL, alembic stamped at head), with the alembic
        scripts loaded once per process; an index database made by older Dagsters (tables, no
        revision), and any error, take Dagster's own way."""
        from alembic.runtime.migration import MigrationContext

        dagsters_way = False
        try:
            with engine.connect() as conn:
                if MigrationContext.configure(conn).get_current_revision() is not None:
                    return
                dagsters_way = not _create_at_head(conn, SqlEventLogStorageMetadata, stock_module.__file__)
        except db.exc.DatabaseError:  # e.g. another process created it meanwhile: Dagster's retrying path
            dagsters_way = True
        if dagsters_way:
            super()._initdb(engine, for_index_shard)

    def dispose(self) -> None:
        with self._engines_lock:
            engines, self._engines = self._engines, OrderedDict()
            if self._engines_pid == os.getpid():
                for engine in engines.values():
                    engine.dispose()
        super().dispose()

    # -- batches ----------------------------------------------------------------------------------

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A run's asset events in one transaction per database; anything else one by one, as Dagster does."""
        batchable = len({event.run_id for event in events}) == 1 and all(
            event.is_dagster_event and event.dagster_event_type in _BATCHED and event.get_dagster_event().asset_key
            for event in events
        )
        if not events or not batchable:
            for event in events:
                self.store_event(event)
            return
        # One executemany per database, not a statement per event (Dagster's row, as `store_event` writes it).
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            ids = SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True)
            event_ids = [row[0] for row in conn.execute(ids, rows)]
            self._store_asset_event_tags(conn, events, event_ids)
            # The asset row keeps the last event of each kind (an overwrite): only the last one counts.
            last = {
                (e.get_dagster_event().asset_key, e.dagster_event_type): (e, i)
                for e, i in zip(events, event_ids, strict=True)
            }
            for event, event_id in last.values():
                self._store_asset_event(conn, event, event_id)

    # -- dynamic partitions -----------------------------------------------------------------------

    def _check_partitions_table(self) -> None:
        """Dagster asks SQLite whether the table exists (a new engine) before every partition query."""
        if not self._partitions_versioned:
            super()._check_partitions_table()
            with self.index_connection() as conn:
                for statement in _PARTITIONS_VERSION_DDL:
                    conn.execute(db.text(statement))
            self._partitions_versioned = True

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        """Every key, read again only when a partition was added or deleted since (by any process).

        Dagster reads the whole list a dozen times per run (run creation, key ranges, data versions,
        each asset's partition_keys): at 100k partitions that was 4 s of every 5 s run. Triggers on
        Dagster's `dynamic_partitions` table count every insert and delete, whoever makes them, so one
        small query says whether the cached list is still the table's.
        """
        self._check_partitions_table()
        with self.index_connection() as conn:  # one read transaction: the version and the keys agree
            version = conn.execute(db.text(_PARTITIONS_VERSION_QUERY)).scalar()
            cached = self._partitions.get(partitions_def_name)
            if cached is not None and cached[0] == version:
                return list(cached[1])
            query = (
                db.select(DynamicPartitionsTable.c.partition)
                .where(DynamicPartitionsTable.c.partitions_def_name == partitions_def_name)
                .order_by(DynamicPartitionsTable.c.id)
            )
            keys = [row[0] for row in conn.execute(query)]
        self._partitions[partitions_def_name] = (version, keys)
        return list(keys)


class _OnePassSqliteStorage:
    """What the run and schedule storages share: a new database made in one pass (WAL first, alembic
    scripts loaded once per process), and a database at head opened without Dagster loading the scripts
    again. A subclass names its database, its tables, Dagster's module for it and its home folder."""

    DB_NAME: str
    METADATA: Any
    STOCK_MODULE_FILE: str
    HOME_SUBDIR: str

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict) -> Any:
        # Dagster's own `from_config_value` names its own class, not cls
        return cls.from_local(config_value.get("base_dir") or _default_home_dir(cls.HOME_SUBDIR), inst_data)

    @classmethod
    def from_local(cls, base_dir: str, inst_data: ConfigurableClassData | None = None) -> Any:
        check_dagster_internals()
        state, conn_string = _open_sqlite_storage(base_dir, cls.DB_NAME, cls.METADATA, cls.STOCK_MODULE_FILE)
        if state == "dagster":
            return super().from_local(base_dir, inst_data)  # type: ignore[misc]
        storage = cls(conn_string, inst_data)  # type: ignore[call-arg]
        if state == "created":  # as Dagster does for a new database: marks its data migrations as done
            storage.migrate()
            storage.optimize()
        return storage


class FastSqliteRunStorage(_OnePassSqliteStorage, SqliteRunStorage):
    """`SqliteRunStorage` made and opened in one pass (see `_OnePassSqliteStorage`).

    dagster.yaml::

        run_storage:
          module: facepipe.defs.storage
          class: FastSqliteRunStorage
          # config: {base_dir: ...}  default: $DAGSTER_HOME/history, as Dagster's own
    """

    DB_NAME = "runs"
    METADATA = RunStorageSqlMetadata
    STOCK_MODULE_FILE = stock_runs_module.__file__
    HOME_SUBDIR = "history"


class FastSqliteScheduleStorage(_OnePassSqliteStorage, SqliteScheduleStorage):
    """`SqliteScheduleStorage` made and opened in one pass (see `_OnePassSqliteStorage`).

    dagster.yaml::

        schedule_storage:
          module: facepipe.defs.storage
          class: FastSqliteScheduleStorage
          # config: {base_dir: ...}  default: $DAGSTER_HOME/schedules, as Dagster's own
    """

    DB_NAME = "schedules"
    METADATA = ScheduleStorageSqlMetadata
    STOCK_MODULE_FILE = stock_schedules_module.__file__
    HOME_SUBDIR = "schedules"
