"""Scale: the batched SQLite event log, batched manifest marks, and the compacted faces dataset, on small inputs."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from PIL import Image

from facepipe import settings
from facepipe.compaction import Compactor
from facepipe.defs.indexer import run_index
from facepipe.defs.instance import DAGSTER_YAML, OLD_DAGSTER_YAMLS, ensure_dagster_home
from facepipe.defs.storage import FastSqliteEventLogStorage, FastSqliteRunStorage, FastSqliteScheduleStorage
from facepipe.faces.records import Face, ImageRecord, face_id
from facepipe.keys import key_for_relpath
from facepipe.stores.parquet import ParquetStore

FACES = dg.AssetKey("faces")
EXPORTS = [dg.AssetKey("qdrant_faces"), dg.AssetKey("pgvector_faces")]


def noise_photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """Tiny JPEGs with no face: detection costs nothing, so only orchestration is left."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(n):
        path = folder / f"d{i % 3}" / f"noise {i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=70)
        keys.append(path.relative_to(folder).as_posix())
    return sorted(keys)


def planned(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[str]:
    records = instance.fetch_planned_materializations(key, limit=1000).records
    return sorted(r.event_log_entry.dagster_event.event_specific_data.partition for r in records)


def test_new_dagster_home_uses_the_batching_event_log(env):
    instance = dg.DagsterInstance.get()
    assert isinstance(instance.event_log_storage, FastSqliteEventLogStorage)
    assert (env.dagster_home / "dagster.yaml").read_text() == DAGSTER_YAML


def test_an_unedited_old_dagster_yaml_is_upgraded_an_edited_one_kept(env):
    config = env.dagster_home / "dagster.yaml"
    config.write_text(OLD_DAGSTER_YAMLS[0])
    ensure_dagster_home(settings.reload())
    assert config.read_text() == DAGSTER_YAML
    edited = OLD_DAGSTER_YAMLS[0] + "run_monitoring:\n  enabled: true\n"
    config.write_text(edited)
    ensure_dagster_home(settings.reload())
    assert config.read_text() == edited


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fetch_planned_materializations: no successor yet
def test_index_records_every_partition_in_batches_and_dagster_reads_them_back(env, monkeypatch):
    monkeypatch.setenv("FACEPIPE_BATCH", "4")
    keys = noise_photos(env.images, 7)
    batches: list[int] = []
    real = FastSqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(
        FastSqliteEventLogStorage,
        "store_event_batch",
        lambda self, events: batches.append(len(events)) or real(self, events),
    )

    report = run_index(env.library(), show_progress=False)
    assert (report.processed, report.failed_runs, report.errors) == (7, [], [])
    assert max(batches) >= 4, "a step's materializations (and a run's planned events) arrive as one batch"

    instance = dg.DagsterInstance.get()
    for asset in [FACES, *EXPORTS]:
        assert set(instance.get_materialized_partitions(asset)) == set(keys)
        assert planned(instance, asset) == keys
    latest = instance.get_latest_materialization_event(FACES)
    assert latest is not None and latest.dagster_event.partition in keys

    # facepipe index leaves the consolidated Parquet up to date.
    compacted = duckdb.sql(f"SELECT count(*) FROM '{env.data}/parquet/compact/images-*.parquet'").fetchall()
    assert compacted == [(7,)]
    assert len(instance.get_materialized_partitions(FACES)) == 7 and instance.get_latest_materialization_event(
        dg.AssetKey("faces_compacted")
    )

    # The files are Dagster's own: its stock SQLite storage reads the same history.
    stock = SqliteEventLogStorage(str(env.dagster_home / "history" / "runs"))
    for asset in [FACES, *EXPORTS]:
        assert set(stock.get_materialized_partitions(asset)) == set(keys)
    stock.dispose()
    # Each batch of asset events lands in the run's database and in the index database as the same rows,
    # in event order.
    runs = env.dagster_home / "history" / "runs"
    for run in instance.get_runs():
        query = (
            "SELECT event, dagster_event_type, partition FROM event_logs WHERE run_id = ? AND dagster_event_type "
            "IN ('ASSET_MATERIALIZATION', 'ASSET_MATERIALIZATION_PLANNED') ORDER BY id"
        )
        own, index = sqlite3.connect(runs / f"{run.run_id}.db"), sqlite3.connect(runs / "index.db")
        with closing(own), closing(index):
            rows = own.execute(query, (run.run_id,)).fetchall()
            assert len(rows) >= 3 * 3 * 2 and rows == index.execute(query, (run.run_id,)).fetchall()

    # Nothing changed: nothing runs; one new photo: one run of one partition.
    assert run_index(env.library(), show_progress=False).processed == 0
    (new,) = noise_photos(env.images / "later", 1, seed=1)
    again = run_index(env.library(), show_progress=False)
    assert again.processed == 1 and again.new == 1
    assert f"later/{new}" in instance.get_materialized_partitions(FACES)


def test_manifest_marks_many_in_one_call(env):
    keys = noise_photos(env.images, 3)
    manifest = env.library().manifest
    manifest.apply(manifest.diff())
    assert manifest.needs_indexing(keys, "v1") == keys
    manifest.mark_indexed_many([(k, manifest_sha(manifest, k), "v1", "ok") for k in keys[:2]])
    assert manifest.needs_indexing(keys, "v1") == keys[2:]
    assert manifest.pending("v1") == keys[2:]


def manifest_sha(manifest, key: str) -> str:
    with sqlite3.connect(manifest.db_path) as db:
        return db.execute("SELECT sha256 FROM files WHERE key = ?", (key,)).fetchall()[0][0]


# -- compaction ------------------------------------------------------------------------------------


def synthetic_record(key: str, n_faces: int, seed: int, person: str | None = None) -> ImageRecord:
    rng = np.random.default_rng(seed)
    sha = f"{seed:064x}"
    faces = [
        Face(
            face_id=face_id(key, sha, (i, i + 10, i + 10, i)),
            image_key=key,
            sha256=sha,
            top=i,
            right=i + 10,
            bottom=i + 10,
            left=i,
            score=0.9,
            detector="hog",
            embedding=rng.normal(size=128).astype(np.float32),
            crop=b"\xff\xd8jpeg",
            model_version="v1",
            person_id=person,
        )
        for i in range(n_faces)
    ]
    return ImageRecord(key, sha, "ok", width=64, height=64, detector="hog", model_version="v1", faces=faces)


FACES_PER_PHOTO = "SELECT image_key, count(*) AS faces FROM read_parquet('{}') GROUP BY ALL ORDER BY 1"
PHOTOS_PER_PERSON = (
    "SELECT person_id, count(DISTINCT image_key) AS photos FROM read_parquet('{}') "
    "WHERE person_id IS NOT NULL GROUP BY ALL ORDER BY 1"
)


def both(parquet: ParquetStore, query: str) -> tuple[list, list]:
    """The query over the compacted files and over the per-photo files."""
    compact = duckdb.sql(query.format(parquet.base / "compact/faces-*.parquet")).fetchall()
    per_photo = duckdb.sql(query.format(parquet.base / "faces/**/*.parquet")).fetchall()
    return compact, per_photo


def test_compaction_matches_the_per_photo_files_and_rewrites_only_what_changed(tmp_path):
    parquet = ParquetStore(root=str(tmp_path / "parquet"))
    keys = [f"album {i % 4}/photo, {i}.jpg" for i in range(40)]  # odd names: the key is escaped, the path not
    for i, key in enumerate(keys):
        parquet.write(synthetic_record(key_for_relpath(key), i % 3, i, person=f"p{i % 5}"))
    compactor = Compactor(parquet, shards=8)
    assert compactor.is_stale()
    first = compactor.run()
    assert first.shards_written == 16 and first.files_read == 40 + sum(1 for i in range(40) if i % 3)
    assert not compactor.is_stale()
    for query in (FACES_PER_PHOTO, PHOTOS_PER_PERSON):
        compact, per_photo = both(parquet, query)
        assert compact == per_photo and compact
    images = duckdb.sql(f"SELECT count(*) FROM '{parquet.base}/compact/images-*.parquet'").fetchall()[0][0]
    assert images == 40, "photos without faces are in the images dataset"
    assert "crop" not in pq.read_schema(compactor.shard_file("faces", 0)).names

    # One photo changes, one is deleted, one is new: only their shards are rewritten.
    parquet.write(synthetic_record(key_for_relpath(keys[1]), 2, 101, person="p9"))
    parquet.delete(key_for_relpath(keys[2]))
    parquet.write(synthetic_record("new/one.jpg", 1, 102))
    assert compactor.is_stale()
    second = compactor.run()
    assert 0 < second.shards_written <= 6 and second.files_read == 4
    for query in (FACES_PER_PHOTO, PHOTOS_PER_PERSON):
        compact, per_photo = both(parquet, query)
        assert compact == per_photo
    assert compactor.run().shards_written == 0, "nothing changed: nothing written"

    # Another shard count rebuilds everything.
    again = Compactor(parquet, shards=3)
    assert again.is_stale() and again.run().shards_written == 6
    assert sorted(p.name for p in (parquet.base / "compact").glob("faces-*.parquet")) == [
        f"faces-{i:03d}.parquet" for i in range(3)
    ]
    assert both(parquet, FACES_PER_PHOTO)[0] == both(parquet, FACES_PER_PHOTO)[1]


def test_compaction_of_nothing_still_answers_queries(tmp_path):
    parquet = ParquetStore(root=str(tmp_path / "parquet"))
    Compactor(parquet, shards=2).run()
    assert duckdb.sql(f"SELECT count(*) FROM '{parquet.base}/compact/faces-*.parquet'").fetchall() == [(0,)]


def test_compaction_redoes_a_photo_compacted_before_a_crash_without_duplicates(tmp_path):
    parquet = ParquetStore(root=str(tmp_path / "parquet"))
    parquet.write(synthetic_record("a.jpg", 2, 1))
    compactor = Compactor(parquet, shards=2)
    compactor.run()
    with sqlite3.connect(parquet.base / "compact" / ".state.sqlite") as db:  # as if killed before the state
        db.execute("DELETE FROM sources")
    compactor.run()
    assert duckdb.sql(f"SELECT count(*) FROM '{parquet.base}/compact/faces-*.parquet'").fetchall() == [(2,)]


def test_compaction_reads_file_names_that_look_like_globs_exactly(tmp_path):
    parquet = ParquetStore(root=str(tmp_path / "parquet"))
    names = ["xa.jpg", "x?.jpg", "x*.jpg", "x[a].jpg", "x{a,b}.jpg", "plain.jpg"]
    for i, name in enumerate(names):
        parquet.write(synthetic_record(key_for_relpath(name), i + 1, i))
    Compactor(parquet, shards=1).run()
    compact = pq.read_table(parquet.base / "compact" / "faces-000.parquet")
    per_photo = parquet.faces(["image_key", "face_id"])
    assert sorted(compact.column("face_id").to_pylist()) == sorted(per_photo.column("face_id").to_pylist())
    assert compact.num_rows == sum(range(1, len(names) + 1))


def test_cached_dynamic_partitions_follow_changes_made_by_any_writer(tmp_path):
    import sqlalchemy as sa
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

    ours = FastSqliteEventLogStorage(str(tmp_path))
    other = SqliteEventLogStorage(str(tmp_path))  # Dagster's own storage: another process, say the daemon
    ours.add_dynamic_partitions("images", ["a", "b"])
    assert ours.get_dynamic_partitions("images") == ["a", "b"]

    full_reads: list[str] = []
    sa.event.listen(
        ours._engine(INDEX_SHARD_NAME),
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: (
            full_reads.append(statement) if "dynamic_partitions." in statement else None
        ),
    )
    assert ours.get_dynamic_partitions("images") == ["a", "b"] and full_reads == [], "unchanged: served from the cache"

    other.add_dynamic_partitions("images", ["c"])
    assert ours.get_dynamic_partitions("images") == ["a", "b", "c"]
    other.delete_dynamic_partition("images", "b")
    assert ours.get_dynamic_partitions("images") == ["a", "c"]
    other.delete_dynamic_partition("images", "c")  # a rename: the newest key goes, another comes
    other.add_dynamic_partitions("images", ["d"])
    assert ours.get_dynamic_partitions("images") == ["a", "d"]
    ours.delete_dynamic_partition("images", "a")
    assert ours.get_dynamic_partitions("images") == ["d"] == other.get_dynamic_partitions("images")
    assert ours.get_dynamic_partitions("other") == []
    ours.dispose()
    other.dispose()


def test_the_event_log_subclass_names_what_a_dagster_upgrade_removed(env, monkeypatch):
    from facepipe.defs import storage

    instance = dg.DagsterInstance.get()
    storage.check_dagster_internals(instance.event_log_storage)  # the installed Dagster
    assert isinstance(instance.run_storage, storage.FastSqliteRunStorage)
    assert isinstance(instance.schedule_storage, storage.FastSqliteScheduleStorage)
    with monkeypatch.context() as patch:
        patch.setattr(SqliteScheduleStorage, "optimize", None)
        with pytest.raises(storage.DagsterInternalsChanged, match=r"lacks SqliteScheduleStorage\.optimize"):
            storage.FastSqliteScheduleStorage.from_local(str(env.data / "elsewhere"))
    monkeypatch.setattr(SqliteEventLogStorage, "_store_asset_event_tags", None)  # gone in an upgrade
    with pytest.raises(storage.DagsterInternalsChanged, match=r"lacks _store_asset_event_tags.*dagster\.yaml"):
        storage.check_dagster_internals()
    monkeypatch.setattr(dg, "__version__", "1.14.0")
    with pytest.raises(storage.DagsterInternalsChanged, match=r"Dagster 1\.14\.0"):
        storage.check_dagster_internals()


def test_new_dagster_databases_are_the_ones_dagster_makes(tmp_path):
    """The one-pass creation of a new run, index, runs (run storage) and schedules database leaves the same
    schema, WAL mode, alembic revision and data migrations marked done as Dagster's own, and Dagster's
    storages open the files without migrating them."""
    ours = FastSqliteEventLogStorage(str(tmp_path / "ours"))
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    for storage in (ours, stock):
        with storage.run_connection("run1"):
            pass
        with storage.index_connection():
            pass
        storage.dispose()
    for side, runs, schedules in (
        ("ours", FastSqliteRunStorage, FastSqliteScheduleStorage),
        ("stock", SqliteRunStorage, SqliteScheduleStorage),
    ):
        runs.from_local(str(tmp_path / side))
        schedules.from_local(str(tmp_path / side))

    def describe(path: Path) -> tuple:
        with sqlite3.connect(path) as db:
            schema = db.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'facepipe%' ORDER BY name"
            ).fetchall()
            tables = {row[1] for row in schema if row[0] == "table"}
            migrations = (
                db.execute("SELECT name FROM secondary_indexes ORDER BY name").fetchall()
                if "secondary_indexes" in tables
                else None
            )
            return (
                schema,
                db.execute("SELECT * FROM alembic_version").fetchall(),
                db.execute("PRAGMA journal_mode").fetchall(),
                migrations,
            )

    for name in ("run1.db", "index.db", "runs.db", "schedules.db"):
        mine, dagsters = describe(tmp_path / "ours" / name), describe(tmp_path / "stock" / name)
        assert mine == dagsters and mine[1] and mine[2] == [("wal",)], name
    assert describe(tmp_path / "ours" / "runs.db")[3], "Dagster marks its run data migrations done"

    reopened = SqliteEventLogStorage(str(tmp_path / "ours"))
    with reopened.run_connection("run1"):
        pass
    assert reopened.get_logs_for_run("run1") == []
    reopened.dispose()
    for stock_storage in (SqliteRunStorage, SqliteScheduleStorage):
        opened = stock_storage.from_local(str(tmp_path / "ours"))
        db_revision, head = opened.alembic_version()
        assert db_revision == head is not None, stock_storage.__name__
    assert SqliteRunStorage.from_local(str(tmp_path / "ours")).get_runs() == []
    assert FastSqliteRunStorage.from_local(str(tmp_path / "ours")).get_runs() == []  # at head: opened as it is


def test_a_failed_compaction_at_the_end_of_index_is_reported_and_retried_next_time(env, monkeypatch):
    """Compaction runs in `facepipe index`'s process (no Dagster run): a failure names it, the per-photo
    Parquet stays, and the next index compacts and records the materialization."""
    keys = noise_photos(env.images, 3)

    def disk_full(self):
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Compactor, "run", disk_full)  # the fault the real part cannot produce on demand
        report = run_index(env.library(), show_progress=False)
    assert report.processed == 3 and report.failed_runs == ["faces_compacted failed: OSError: No space left on device"]
    instance = dg.DagsterInstance.get()
    assert set(instance.get_materialized_partitions(FACES)) == set(keys)
    assert instance.get_latest_materialization_event(dg.AssetKey("faces_compacted")) is None

    again = run_index(env.library(), show_progress=False)
    assert (again.processed, again.failed_runs) == (0, [])
    event = instance.get_latest_materialization_event(dg.AssetKey("faces_compacted"))
    assert event is not None and event.asset_materialization.metadata["files_read"].value == 3
    compacted = duckdb.sql(f"SELECT count(*) FROM '{env.data}/parquet/compact/images-*.parquet'").fetchall()
    assert compacted == [(3,)]
