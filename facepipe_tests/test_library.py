"""The library remembers its images folder: no argument, another folder, a missing or emptied folder,
mass deletions, and the sensor and the HTTP API using the recorded folder."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from facepipe.api import create_app
from facepipe.cli import main
from facepipe.defs.partitions import images_partitions
from facepipe_tests.conftest import FR, KNN


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def index_json(capsys, *args: str) -> dict:
    code, out, err = run(capsys, "index", "--json", "--quiet", *args)
    assert code == 0, err
    return json.loads(out)


def status(capsys) -> dict:
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0
    return json.loads(out)


@pytest.fixture
def library_of_four(env, capsys, monkeypatch, tmp_path):
    """Four photos indexed from a folder given on the command line; FACEPIPE_IMAGES unset afterwards."""
    folder = tmp_path / "photos"
    for photo in ("obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg", "biden/biden2.jpg"):
        target = folder / photo
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(KNN / "train" / photo, target)
    monkeypatch.delenv("FACEPIPE_IMAGES")
    assert index_json(capsys, str(folder))["processed"] == 4
    assert json.loads((env.data / "library.json").read_text())["images_root"] == str(folder)
    return folder


def test_index_with_no_argument_uses_the_recorded_folder(env, capsys, library_of_four):
    code, out, _ = run(capsys, "index", "--quiet")
    assert code == 0 and out.startswith("Nothing to do: 4 images unchanged") and str(library_of_four) in out
    assert status(capsys)["qdrant"]["faces"] == 4


def test_another_folder_is_refused_unless_the_photos_moved(env, capsys, library_of_four, tmp_path):
    other = tmp_path / "empty"
    other.mkdir()
    code, _, err = run(capsys, "index", str(other))
    assert code == 2 and "--images-moved" in err and str(library_of_four) in err
    assert status(capsys)["pgvector"]["faces"] == 4, "nothing was deleted"

    # The photos really moved: re-rooted, and files that match keep their faces (same ids, no detection).
    before = env.library().parquet.face_ids_by_image()
    moved = tmp_path / "moved"
    shutil.move(library_of_four, moved)
    code, _, err = run(capsys, "index", "--quiet")
    assert code == 2 and "does not exist" in err and "nothing was deleted" in err
    report = index_json(capsys, "--images-moved", str(moved))
    assert (report["processed"], report["deleted"], report["new"]) == (0, 0, 0)
    assert env.library().parquet.face_ids_by_image() == before
    assert json.loads((env.data / "library.json").read_text())["images_root"] == str(moved)


def test_an_emptied_folder_or_mass_deletion_deletes_nothing_until_confirmed(env, capsys, library_of_four):
    for photo in library_of_four.rglob("*.jpg"):
        photo.unlink()
    code, out, err = run(capsys, "index")
    assert code == 1 and "holds none of the library's 4 photos" in err and "--confirm-deletions" in err
    assert not out.startswith("Nothing to do")
    assert status(capsys)["parquet"]["faces"] == 4

    shutil.copyfile(KNN / "train/obama/obama.jpg", library_of_four / "obama/obama.jpg")
    code, _, err = run(capsys, "index")
    assert code == 1 and "3 of the library's 4 photos are gone" in err
    assert status(capsys)["qdrant"]["faces"] == 4

    report = index_json(capsys, "--confirm-deletions")
    assert report["deleted"] == 3 and report["images"] == 1
    doc = status(capsys)
    assert doc["parquet"]["faces"] == doc["qdrant"]["faces"] == doc["pgvector"]["faces"] == 1


def test_summary_after_deleting_says_so(env, capsys, library_of_four):
    (library_of_four / "biden/biden2.jpg").unlink()
    code, out, _ = run(capsys, "index", "--quiet")
    assert code == 0 and out.startswith("Erased 1 deleted photos; 3 images unchanged")


def test_the_sensor_never_reads_a_missing_or_emptied_folder_as_deletions(env, capsys, library_of_four, tmp_path):
    defs = env.defs()
    sensor = defs.resolve_sensor_def("images_sensor")

    def tick() -> dg.SensorResult:
        with (
            dg.DagsterInstance.get() as instance,
            dg.build_sensor_context(instance=instance, resources=defs.resources) as context,
        ):
            return sensor(context)

    shutil.move(library_of_four, tmp_path / "unmounted")
    result = tick()
    assert "does not exist" in str(result.skip_reason) and not result.dynamic_partitions_requests
    library_of_four.mkdir()
    result = tick()
    assert "holds none of the library's 4 photos" in str(result.skip_reason)
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_dynamic_partitions(images_partitions.name)) == 4
    assert status(capsys)["parquet"]["faces"] == 4


def test_the_api_serves_photos_from_the_recorded_folder(env, capsys, library_of_four):
    with TestClient(create_app("pgvector", library=env.library())) as client:
        r = client.get("/api/images/obama/obama.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_a_fresh_library_records_the_default_or_given_folder(env, capsys):
    env.add(FR / "tests/test_images/obama.jpg")
    assert index_json(capsys)["processed"] == 1  # FACEPIPE_IMAGES, as set by the fixture
    assert json.loads((env.data / "library.json").read_text()) == {
        "images_root": str(env.images),
        "stores": {"qdrant": "embedded Qdrant", "pgvector": "embedded Postgres+pgvector"},
    }
