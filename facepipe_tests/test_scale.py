"""Scale: the batched SQLite event log, batched manifest marks, and the compacted faces dataset, on small inputs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from PIL import Image

from facepipe.defs.storage import FastSqliteEventLogStorage
from facepipe.runner import DAGSTER_YAML, OLD_DAGSTER_YAMLS, ensure_dagster_home, run_index

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
    ensure_dagster_home()
    assert config.read_text() == DAGSTER_YAML
    edited = OLD_DAGSTER_YAMLS[0] + "run_monitoring:\n  enabled: true\n"
    config.write_text(edited)
    ensure_dagster_home()
    assert config.read_text() == edited


def test_index_records_every_partition_in_batches_and_dagster_reads_them_back(env, monkeypatch):
    keys = noise_photos(env.images, 7)
    batches: list[int] = []
    real = FastSqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(
        FastSqliteEventLogStorage,
        "store_event_batch",
        lambda self, events: batches.append(len(events)) or real(self, events),
    )

    report = run_index(show_progress=False, batch_size=4)
    assert (report.processed, report.failed_runs, report.errors) == (7, [], [])
    assert max(batches) >= 4, "a step's materializations (and a run's planned events) arrive as one batch"

    instance = dg.DagsterInstance.get()
    for asset in [FACES, *EXPORTS]:
        assert set(instance.get_materialized_partitions(asset)) == set(keys)
        assert planned(instance, asset) == keys
    latest = instance.get_latest_materialization_event(FACES)
    assert latest is not None and latest.dagster_event.partition in keys

    # The files are Dagster's own: its stock SQLite storage reads the same history.
    stock = SqliteEventLogStorage(str(env.dagster_home / "history" / "runs"))
    for asset in [FACES, *EXPORTS]:
        assert set(stock.get_materialized_partitions(asset)) == set(keys)
    stock.dispose()

    # Nothing changed: nothing runs; one new photo: one run of one partition.
    assert run_index(show_progress=False, batch_size=4).processed == 0
    (new,) = noise_photos(env.images / "later", 1, seed=1)
    again = run_index(show_progress=False, batch_size=4)
    assert again.processed == 1 and again.new == 1
    assert f"later/{new}" in instance.get_materialized_partitions(FACES)


def test_manifest_marks_many_in_one_call(env):
    from facepipe.defs.resources import library_from_env

    keys = noise_photos(env.images, 3)
    manifest = library_from_env().manifest()
    manifest.apply(manifest.diff())
    assert manifest.needs_indexing(keys, "v1") == keys
    manifest.mark_indexed_many([(k, manifest_sha(manifest, k), "v1", "ok") for k in keys[:2]])
    assert manifest.needs_indexing(keys, "v1") == keys[2:]
    assert manifest.pending("v1") == keys[2:]


def manifest_sha(manifest, key: str) -> str:
    import sqlite3

    with sqlite3.connect(manifest.db_path) as db:
        return db.execute("SELECT sha256 FROM files WHERE key = ?", (key,)).fetchone()[0]
