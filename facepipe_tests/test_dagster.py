"""Real Dagster runs and sensor ticks against a test instance, on real photos."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid

import dagster as dg
import pyarrow.parquet as pq
import pytest

import facepipe.defs.metadata
from facepipe import manifest as manifest_module
from facepipe.defs.partitions import images_partitions
from facepipe.defs.sensors import STORE_CHECK_SECONDS, images_sensor
from facepipe_tests.conftest import FR, KNN


@pytest.fixture
def instance(env):
    with dg.instance_for_test(temp_dir=str(env.dagster_home)) as inst:
        CURSORS.pop(id(inst), None)
        yield inst


CURSORS: dict[int, str | None] = {}
"""The cursor each instance's last tick left, as the daemon keeps it between ticks."""


def tick(instance, env, cursor: str | None = None) -> dg.SensorResult:
    """One sensor evaluation, from the cursor the last tick left (or `cursor`)."""
    cursor = cursor if cursor is not None else CURSORS.get(id(instance))
    with dg.build_sensor_context(instance=instance, resources=env.defs().resources, cursor=cursor) as context:
        result = images_sensor(context)
    CURSORS[id(instance)] = result.cursor
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def launch(instance, env, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run what the sensor asked for, in-process, as the daemon would launch it."""
    job = env.defs().resolve_job_def("index_images")
    if request.partition_key:
        return job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)
    return job.execute_in_process(instance=instance, tags=request.tags)


def materialized(instance) -> set[str]:
    return set(instance.get_materialized_partitions(dg.AssetKey("faces")))


def test_sensor_adds_reruns_and_deletes_partitions(env, instance, monkeypatch):
    env.add(KNN / "train/obama/obama.jpg", "people/obama.jpg")
    env.add(KNN / "train/biden/biden.jpg", "people/biden.jpg")
    env.add(FR / "examples/two_people.jpg")

    first = tick(instance, env)
    keys = ["people/biden.jpg", "people/obama.jpg", "two_people.jpg"]
    assert instance.get_dynamic_partitions(images_partitions.name) == keys
    assert len(first.run_requests) == 1, "new photos share one batched run"
    assert first.run_requests[0].tags["dagster/asset_partition_range_start"] == keys[0]
    assert launch(instance, env, first.run_requests[0]).success
    assert materialized(instance) == set(keys)
    parquet = env.parquet
    assert parquet.face_ids_by_image().keys() == set(keys)
    assert len(parquet.faces()) == 4

    # Nothing changed: no file is hashed, nothing is requested.
    hashed: list[str] = []
    real_hash = manifest_module.file_sha256
    monkeypatch.setattr(manifest_module, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    quiet = tick(instance, env)
    assert (quiet.run_requests, quiet.dynamic_partitions_requests, hashed) == ([], [], [])

    # Touched but identical: hashed, not re-run.
    path = env.images / "two_people.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert tick(instance, env).run_requests == [] and len(hashed) == 1

    # Changed content: exactly that partition is re-run, and its faces replaced.
    old_ids = parquet.face_ids_by_image(["people/obama.jpg"])["people/obama.jpg"]
    shutil.copyfile(KNN / "train/obama/obama2.jpg", env.images / "people/obama.jpg")
    changed = tick(instance, env)
    assert [r.partition_key for r in changed.run_requests] == ["people/obama.jpg"]
    assert launch(instance, env, changed.run_requests[0]).success
    new_ids = parquet.face_ids_by_image(["people/obama.jpg"])["people/obama.jpg"]
    assert new_ids and new_ids.isdisjoint(old_ids)

    # Deleted: Parquet rows go first, then the partition.
    (env.images / "people/biden.jpg").unlink()
    deleted = tick(instance, env)
    assert deleted.run_requests == []
    assert instance.get_dynamic_partitions(images_partitions.name) == ["people/obama.jpg", "two_people.jpg"]
    assert "people/biden.jpg" not in parquet.image_keys()
    assert "people/biden.jpg" not in parquet.face_ids_by_image()
    assert not (env.data / "parquet/faces/people/biden.jpg.parquet").exists()


def test_single_partition_materialize_writes_records_and_metadata(env, instance):
    env.add(FR / "examples/two_people.jpg", "a b (1).jpg")
    tick(instance, env)
    defs = env.defs()
    result = dg.materialize([defs.resolve_assets_def("faces")], instance=instance, partition_key="a b (1).jpg")
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert set(events) == {"faces", "qdrant_faces", "pgvector_faces"}, "the exports come with the faces"
    metadata = events["faces"].materialization.metadata
    assert metadata["faces"].value == 2 and metadata["status"].value == "ok"
    assert metadata["parquet"].value.endswith("a b (1).jpg.parquet")
    assert events["qdrant_faces"].materialization.metadata["faces"].value == 2
    table = pq.read_table(env.data / "parquet/faces/a b (1).jpg.parquet")
    assert table.num_rows == 2
    assert table.schema.field("embedding").type.list_size == 128
    status = pq.read_table(env.data / "parquet/images/a b (1).jpg.parquet").to_pylist()
    assert status[0]["status"] == "ok" and status[0]["faces"] == 2 and status[0]["width"] > 0


@pytest.mark.parametrize("metadata_path", ["one step", "public call per partition"])
def test_multi_partition_run_covers_the_range_with_both_cores(env, instance, monkeypatch, metadata_path):
    monkeypatch.setenv("FACEPIPE_WORKERS", "2")  # exercise the process pool
    if metadata_path != "one step":  # as on a Dagster whose step context lacks the accumulator

        class Elsewhere:
            pass

        monkeypatch.setattr(facepipe.defs.metadata, "OutputMetadataAccumulator", Elsewhere)
    photos = [*sorted((KNN / "train").glob("*/*.jpg")), FR / "examples/two_people.jpg"]
    for photo in photos:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    first = tick(instance, env)
    assert len(first.run_requests) == 1
    result = launch(instance, env, first.run_requests[0])
    assert result.success
    events = result.get_asset_materialization_events()
    for asset in ("faces", "qdrant_faces", "pgvector_faces"):
        assert sum(e.asset_key == dg.AssetKey(asset) for e in events) == len(photos)
    assert materialized(instance) == set(instance.get_dynamic_partitions(images_partitions.name))
    images = env.parquet.images().to_pylist()
    assert len(images) == len(photos) and all(row["status"] == "ok" for row in images)
    # Each partition's materialization carries its own photo's numbers, on every asset.
    faces = {row["image_key"]: row["faces"] for row in images}
    assert len(set(faces.values())) > 1, "photos with different face counts, so a mix-up would show"
    for event in (e for e in events if e.asset_key.to_user_string() in ("faces", "qdrant_faces", "pgvector_faces")):
        metadata, partition = event.materialization.metadata, event.materialization.partition
        assert metadata["faces"].value == faces[partition], (event.asset_key, partition)
        if event.asset_key == dg.AssetKey("faces"):
            assert metadata["status"].value == "ok" and metadata["parquet"].value.endswith(f"{partition}.parquet")


def test_code_version_follows_detection_settings(env, monkeypatch):
    monkeypatch.setenv("FACEPIPE_DETECTOR", "cnn")
    cnn = env.library().settings.extract.model_version
    monkeypatch.setenv("FACEPIPE_DETECTOR", "hog")
    library = env.library()
    assert library.settings.extract.model_version != cnn
    assert env.defs().resolve_assets_def("faces").code_versions_by_key[dg.AssetKey("faces")] == (
        library.settings.extract.model_version
    )


PHOTOS = {"people/obama.jpg": "train/obama/obama.jpg", "people/biden.jpg": "train/biden/biden.jpg"}


def indexed_by_the_sensor(env, instance) -> dict[str, set[str]]:
    """Two photos added, ticked and run; one more tick (the first after the run) finds nothing to heal."""
    for name, source in PHOTOS.items():
        env.add(KNN / source, name)
    first = tick(instance, env)
    assert len(first.run_requests) == 1 and launch(instance, env, first.run_requests[0]).success
    assert tick(instance, env, cursor=stores_due()).run_requests == []
    ids = env.parquet.face_ids_by_image()
    assert ids.keys() == set(PHOTOS) and all(ids.values())
    assert_stores_hold(env, ids)
    return ids


def stores_due() -> str:
    """A cursor whose last store check is older than the interval: the next tick counts the stores."""
    return json.dumps({"stores_checked": time.time() - STORE_CHECK_SECONDS - 1})


def stores_fresh() -> str:
    return json.dumps({"stores_checked": time.time()})


def assert_stores_hold(env, ids: dict[str, set[str]]) -> None:
    library = env.library()
    try:
        for name, store in library.stores().items():
            assert store.face_ids_by_image() == ids, name
    finally:
        library.close()


def healed_keys(result: dg.SensorResult) -> list[str]:
    assert all(r.tags["facepipe/reason"] == "healed" for r in result.run_requests), result.run_requests
    return [r.partition_key for r in result.run_requests]


def test_sensor_reextracts_a_parquet_file_deleted_behind_its_back(env, instance):
    ids = indexed_by_the_sensor(env, instance)
    faces_file = env.data / "parquet/faces/people/obama.jpg.parquet"
    faces_file.unlink()
    # The Parquet check runs on every tick, not only when the store check is due.
    healed = tick(instance, env, cursor=stores_fresh())
    assert healed_keys(healed) == ["people/obama.jpg"]
    result = launch(instance, env, healed.run_requests[0])
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("faces")]
    assert event.materialization.metadata["skipped_unchanged"].value is False  # extracted again
    assert faces_file.exists()
    assert env.parquet.face_ids_by_image() == ids  # the same faces (ids are stable)
    assert_stores_hold(env, ids)
    assert tick(instance, env, cursor=stores_due()).run_requests == []  # healed for good


def test_sensor_reexports_what_a_store_lost_once_the_store_check_is_due(env, instance):
    ids = indexed_by_the_sensor(env, instance)
    parquet_mtime = (env.data / "parquet/faces/people/biden.jpg.parquet").stat().st_mtime_ns
    library = env.library()
    qdrant = library.store("qdrant")
    qdrant.delete_faces(sorted(ids["people/biden.jpg"]))
    assert "people/biden.jpg" not in qdrant.face_ids_by_image()
    library.close()

    # Counted at most every STORE_CHECK_SECONDS: a tick soon after the last count does not look.
    fresh = stores_fresh()
    quiet = tick(instance, env, cursor=fresh)
    assert quiet.run_requests == [] and quiet.cursor == fresh

    due = tick(instance, env, cursor=stores_due())
    assert healed_keys(due) == ["people/biden.jpg"]
    assert json.loads(due.cursor)["stores_checked"] >= time.time() - 60  # the count is recorded
    result = launch(instance, env, due.run_requests[0])
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("faces")]
    assert event.materialization.metadata["skipped_unchanged"].value is True  # no detection: only the export
    assert (env.data / "parquet/faces/people/biden.jpg.parquet").stat().st_mtime_ns == parquet_mtime
    assert_stores_hold(env, ids)
    assert tick(instance, env, cursor=stores_due()).run_requests == []


def test_sensor_heals_nothing_and_deletes_nothing_while_a_run_is_in_flight(env, instance):
    ids = indexed_by_the_sensor(env, instance)
    library = env.library()
    (face,) = library.parquet.load_faces(["people/obama.jpg"])["people/obama.jpg"]
    stray = dataclasses.replace(face, image_key="ghost.jpg", face_id="00000000-0000-4000-8000-000000000002")
    for store in library.stores().values():  # as a run mid-export would look: faces the manifest lacks
        store.replace_images({"ghost.jpg": [stray]})
    library.close()
    faces_file = env.data / "parquet/faces/people/biden.jpg.parquet"
    faces_file.unlink()
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="index_images", run_id=run_id, status=dg.DagsterRunStatus.STARTED))

    due = stores_due()
    held = tick(instance, env, cursor=due)
    assert held.run_requests == [] and held.cursor == due  # the store check is still due
    library = env.library()
    assert library.manifest.pending(library.settings.extract.model_version) == []  # nothing marked either
    library.close()
    assert_stores_hold(env, {**ids, "ghost.jpg": {stray.face_id}})  # the stray is still there

    instance.delete_run(run_id)  # the run is over: the next tick heals both
    healed = tick(instance, env, cursor=due)
    assert healed_keys(healed) == ["people/biden.jpg"]
    assert launch(instance, env, healed.run_requests[0]).success
    assert faces_file.exists()
    assert_stores_hold(env, ids)


def test_cli_index_takes_photos_started_early_and_writes_what_a_sensor_run_writes(
    env, instance, monkeypatch, tmp_path, capsys
):
    """`facepipe index` starts the first photos on the workers while Dagster loads; its run's faces step
    takes those records. With the shipped detector and two workers, the faces it writes are the
    ones a sensor-launched run (nothing started early) writes from the same folder."""
    from facepipe import settings
    from facepipe.cli import main
    from facepipe.defs.instance import ensure_dagster_home
    from facepipe.faces import batch
    from facepipe.stores.parquet import ParquetStore

    monkeypatch.setenv("FACEPIPE_WORKERS", "2")
    monkeypatch.setenv("FACEPIPE_DETECTOR", "yunet")
    for photo in [*sorted((KNN / "train").glob("*/*.jp*g"))[:4], FR / "examples/two_people.jpg"]:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    taken: list[int] = []
    real_take = batch._Early.take
    monkeypatch.setattr(batch._Early, "take", lambda self, *a: taken.append(len(out := real_take(self, *a))) or out)

    assert launch(instance, env, tick(instance, env).run_requests[0]).success
    assert sum(taken) == 0
    by_sensor = env.parquet.faces(["face_id", "image_key", "top", "right", "bottom", "left", "embedding"])

    data, home = tmp_path / "cli-data", tmp_path / "cli-dagster"
    monkeypatch.setenv("FACEPIPE_DATA", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home(settings.reload())
    assert main(["index", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["processed"] == 5 and not report["errors"] and not report["failed_runs"]
    assert sum(taken) == 5, "every photo's record came from its early start"
    by_cli = ParquetStore(data / "parquet").faces(by_sensor.column_names)
    assert by_cli.num_rows == by_sensor.num_rows == report["faces"] >= 6
    assert by_cli.sort_by("face_id").to_pylist() == by_sensor.sort_by("face_id").to_pylist()
