"""The per-photo Parquet consolidated into a few large files, so analytics over 100k photos stay fast.

`data/parquet/faces/<photo>.parquet` has one small file per photo: right for a pipeline that rewrites
one photo at a time, slow for a query over all of them (DuckDB opens 100k files). Compaction keeps a
copy in `data/parquet/compact/`:

    faces-000.parquet ... faces-015.parquet     every face (all columns but `crop`), sorted by image_key
    images-000.parquet ... images-015.parquet   every photo's status row (so photos with no face count too)

A photo's rows always live in the same shard (chosen by a hash of its file path), and a run rewrites
only the shards holding photos whose per-photo file appeared, changed (size or mtime) or disappeared
since the last run: the shard's old file minus those photos, plus their new rows. What was compacted
from which file is kept in `compact/.state.sqlite`. Every shard file always exists (empty ones too),
so `read_parquet('data/parquet/compact/faces-*.parquet')` never fails on a missing glob.

A run killed half way leaves each shard old or new, never torn (atomic replace), and the state
unchanged, so the next run redoes those photos; rows are replaced by image_key, so redoing is harmless.
No Dagster here: the `faces_compacted` asset and `facepipe index` call `Compactor.run`.
"""

from __future__ import annotations

import re
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facepipe.stores.parquet import FACE_SCHEMA, IMAGE_SCHEMA, ParquetStore, write_table_atomic
from facepipe.walk import walk_files

SHARDS = 16
"""Files per dataset: enough for DuckDB to read in parallel and for a small change to rewrite little."""

ROW_GROUP_ROWS = 128 * 1024
_GLOB = re.compile(r"[*?\[\]{}]")
FOLDER = "compact"
STATE_FILE = ".state.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    kind TEXT NOT NULL,          -- faces | images
    path TEXT NOT NULL,          -- per-photo file, relative to parquet/<kind>/
    image_key TEXT,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (kind, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Dataset:
    kind: str  # "faces" or "images": the per-photo folder and the compacted files' prefix
    schema: pa.Schema


DATASETS = (
    Dataset("faces", pa.schema([f for f in FACE_SCHEMA if f.name != "crop"])),  # crops stay per photo
    Dataset("images", IMAGE_SCHEMA),
)


@dataclass
class CompactReport:
    files_read: int = 0  # per-photo files read this run
    files_dropped: int = 0  # per-photo files gone since the last run
    shards_written: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows in the rewritten shards, per dataset
    seconds: float = 0.0

    def metadata(self) -> dict[str, object]:
        return {
            "files_read": self.files_read,
            "files_dropped": self.files_dropped,
            "shards_written": self.shards_written,
            **{f"{kind}_rows_rewritten": n for kind, n in self.rows.items()},
            "seconds": round(self.seconds, 3),
        }


def shard_of(path: str, shards: int) -> int:
    return zlib.crc32(path.encode()) % shards


def scan(folder: Path) -> dict[str, tuple[int, int]]:
    """{path relative to folder: (mtime_ns, size)} of the per-photo files (temp files start with a dot)."""
    return {rel: (info.st_mtime_ns, info.st_size) for rel, info in walk_files(folder, {".parquet"})}


class Compactor:
    def __init__(self, parquet: ParquetStore, shards: int = SHARDS):
        self.parquet = parquet
        self.shards = shards

    @property
    def folder(self) -> Path:
        return self.parquet.base / FOLDER

    def shard_file(self, kind: str, shard: int) -> Path:
        return self.folder / f"{kind}-{shard:03d}.parquet"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.folder / STATE_FILE, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            with db:
                yield db
        finally:
            db.close()

    def _state(self, db: sqlite3.Connection, kind: str) -> dict[str, tuple[str | None, int, int]]:
        rows = db.execute("SELECT path, image_key, mtime_ns, size FROM sources WHERE kind = ?", (kind,))
        return {path: (key, mtime, size) for path, key, mtime, size in rows}

    def _layout_ok(self, db: sqlite3.Connection) -> bool:
        row = db.execute("SELECT value FROM meta WHERE key = 'shards'").fetchone()
        files = all(self.shard_file(d.kind, s).exists() for d in DATASETS for s in range(self.shards))
        return row is not None and int(row[0]) == self.shards and files

    @property
    def supported(self) -> bool:
        """Compaction works on a local Parquet folder; in a bucket the per-photo files are left as they are
        (not built yet: its state and shard rewrites would need the object store and a lock across nodes)."""
        return not self.parquet.remote

    def exists(self) -> bool:
        return self.supported and self.folder.exists()

    def is_stale(self) -> bool:
        """True when a per-photo file appeared, changed or went since the last run (a stat of each, no reading)."""
        if not self.supported:
            return False
        if not (self.folder / STATE_FILE).exists():
            return True
        with self._db() as db:
            if not self._layout_ok(db):
                return True
            for dataset in DATASETS:
                state = self._state(db, dataset.kind)
                current = scan(self.parquet.base / dataset.kind)
                if current.keys() != state.keys():
                    return True
                if any(state[p][1:] != stat for p, stat in current.items()):
                    return True
        return False

    def run(self) -> CompactReport:
        started = time.perf_counter()
        report = CompactReport()
        if not self.supported:
            return report
        with self._db() as db:
            rebuild = not self._layout_ok(db)
            if rebuild:
                db.execute("DELETE FROM sources")
                for old in self.folder.glob("*-*.parquet"):
                    old.unlink()
            for dataset in DATASETS:
                self._compact(db, dataset, report, rebuild)
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('shards', ?)", (str(self.shards),))
        report.seconds = time.perf_counter() - started
        return report

    def _compact(self, db: sqlite3.Connection, dataset: Dataset, report: CompactReport, rebuild: bool) -> None:
        source = self.parquet.base / dataset.kind
        state = self._state(db, dataset.kind)
        current = scan(source)
        changed = sorted(p for p, stat in current.items() if state.get(p, (None, None, None))[1:] != stat)
        gone = sorted(set(state) - set(current))
        report.files_dropped += len(gone)
        by_shard: dict[int, tuple[list[str], list[str]]] = {}
        for path in changed:
            by_shard.setdefault(shard_of(path, self.shards), ([], []))[0].append(path)
        for path in gone:
            by_shard.setdefault(shard_of(path, self.shards), ([], []))[1].append(path)
        if rebuild:
            for shard in range(self.shards):
                by_shard.setdefault(shard, ([], []))
        rows = 0
        for shard, (reads, drops) in sorted(by_shard.items()):
            fresh, keys_read = self._read(source, reads, dataset.schema)
            replaced = {state[p][0] for p in reads + drops if p in state and state[p][0] is not None}
            replaced |= set(keys_read.values())
            replaced |= {k for p in drops if (k := self.parquet.image_key_of_file(source, p)) is not None}
            target = self.shard_file(dataset.kind, shard)
            old = pq.read_table(target, schema=dataset.schema) if target.exists() else dataset.schema.empty_table()
            if replaced and old.num_rows:
                old = old.filter(pc.invert(pc.is_in(old.column("image_key"), pa.array(sorted(replaced)))))
            table = pa.concat_tables([old, fresh]).sort_by("image_key")
            write_table_atomic(table, target, row_group_size=ROW_GROUP_ROWS)  # large groups for scans
            rows += table.num_rows
            report.shards_written += 1
            report.files_read += len(keys_read)
            db.executemany(
                "INSERT OR REPLACE INTO sources(kind, path, image_key, mtime_ns, size) VALUES (?, ?, ?, ?, ?)",
                [(dataset.kind, p, key, *current[p]) for p, key in keys_read.items()],
            )
            db.executemany("DELETE FROM sources WHERE kind = ? AND path = ?", [(dataset.kind, p) for p in drops])
            db.commit()  # shard by shard: a killed run keeps what it finished
        report.rows[dataset.kind] = rows

    def _read(self, source: Path, paths: list[str], schema: pa.Schema) -> tuple[pa.Table, dict[str, str]]:
        """The rows of these per-photo files, and the image_key of each file read (its path names it)."""
        keys = {p: k for p in paths if (source / p).exists() and (k := self.parquet.image_key_of_file(source, p))}
        # DuckDB opens many small files several times faster than pyarrow (0.2 vs 0.9 ms each), but takes
        # every path as a glob: a name with *, ?, [ or { could match other photos' files, so those go one by one.
        plain = [p for p in keys if not _GLOB.search(p)]
        tables: list[pa.Table] = []
        if plain:
            columns = ", ".join(f'"{name}"' for name in schema.names)
            try:
                with duckdb.connect() as con:
                    files = [str(source / p) for p in plain]
                    query = f"SELECT {columns} FROM read_parquet($files)"
                    tables.append(con.sql(query, params={"files": files}).to_arrow_table().cast(schema))
                one_by_one = [p for p in keys if _GLOB.search(p)]
            except (duckdb.Error, OSError, pa.ArrowInvalid):  # one replaced or removed since the scan
                one_by_one = list(keys)
        else:
            one_by_one = list(keys)
        for path in one_by_one:
            try:
                tables.append(pq.read_table(source / path, schema=schema).select(schema.names))
            except (OSError, pa.ArrowInvalid):
                del keys[path]  # not recorded: the next run tries it again
        return (pa.concat_tables(tables) if tables else schema.empty_table()), keys
