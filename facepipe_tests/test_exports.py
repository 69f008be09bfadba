"""Qdrant and pgvector hold exactly the Parquet's faces, through real runs on real photos."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from facepipe.cli import main
from facepipe_tests.conftest import FR, KNN
from facepipe_tests.test_dagster import launch, tick


@pytest.fixture
def instance(env):
    with dg.DagsterInstance.get() as inst:
        yield inst


def counts(capsys) -> tuple[int, int, int]:
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return doc["parquet"]["faces"], doc["qdrant"]["faces"], doc["pgvector"]["faces"]


def index(capsys) -> dict:
    assert main(["index", "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def stores(env):
    library = env.library()
    return library.parquet, library.store("qdrant"), library.store("pgvector")


def test_sensor_run_brings_a_new_photo_to_both_stores(env, instance, capsys):
    env.add(FR / "examples/two_people.jpg")
    (request,) = tick(instance, env).run_requests
    assert launch(instance, env, request).success  # what the daemon launches for the sensor's request
    assert counts(capsys) == (2, 2, 2)
    parquet, qdrant, pgvector = stores(env)
    ids = parquet.face_ids_by_image()
    assert qdrant.face_ids_by_image() == ids == pgvector.face_ids_by_image()


def test_reindexing_keeps_exactly_the_current_faces(env, capsys, instance):
    env.add(KNN / "train/obama/obama.jpg", "o.jpg")
    env.add(FR / "examples/two_people.jpg", "two.jpg")
    index(capsys)
    assert counts(capsys) == (3, 3, 3)

    # Everything materialized again: identical counts, identical ids.
    parquet, qdrant, pgvector = stores(env)
    before = parquet.face_ids_by_image()
    job = env.defs().resolve_job_def("index_images")
    assert job.execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": "o.jpg", "dagster/asset_partition_range_end": "two.jpg"},
    ).success
    assert counts(capsys) == (3, 3, 3)
    assert qdrant.face_ids_by_image() == before == pgvector.face_ids_by_image()

    # New content under the same name: the old face ids leave both stores.
    shutil.copyfile(KNN / "train/biden/biden.jpg", env.images / "o.jpg")
    assert index(capsys)["changed"] == 1
    after = parquet.face_ids_by_image()
    assert after["o.jpg"].isdisjoint(before["o.jpg"])
    assert qdrant.face_ids_by_image() == after == pgvector.face_ids_by_image()

    # A deleted photo lowers all three equally.
    (env.images / "two.jpg").unlink()
    assert index(capsys)["deleted"] == 1
    assert counts(capsys) == (1, 1, 1)


def test_consistency_check_names_the_images_a_store_lost(env, instance, capsys):
    env.add(KNN / "train/obama/obama.jpg", "a/obama.jpg")
    env.add(KNN / "train/biden/biden.jpg", "b/biden.jpg")
    index(capsys)
    check = env.defs().resolve_job_def("check_stores")
    result = check.execute_in_process(instance=instance)
    assert all(e.passed for e in result.get_asset_check_evaluations())

    _, qdrant, _ = stores(env)
    qdrant.delete_images(["b/biden.jpg"])  # behind facepipe's back
    result = check.execute_in_process(instance=instance, raise_on_error=False)
    by_asset = {e.asset_key.path[0]: e for e in result.get_asset_check_evaluations()}
    assert by_asset["pgvector_faces"].passed
    failed = by_asset["qdrant_faces"]
    assert not failed.passed
    assert failed.metadata["images"].value == "b/biden.jpg"

    # Re-materializing the named partition heals it.
    index_job = env.defs().resolve_job_def("index_images")
    assert index_job.execute_in_process(instance=instance, partition_key="b/biden.jpg").success
    result = check.execute_in_process(instance=instance)
    assert all(e.passed for e in result.get_asset_check_evaluations())
