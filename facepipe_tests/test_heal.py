"""Self-healing: lost store folders, damaged or missing Parquet files and stores that drifted are found
by the next `facepipe index` and put right from what is left (the Parquet, or the photos themselves)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pyarrow.parquet as pq

from facepipe.cli import main
from facepipe.stores import embedded_pg
from facepipe_tests.conftest import KNN


def run(capsys, *args: str, code: int = 0) -> str:
    assert main(list(args)) == code, capsys.readouterr()
    return capsys.readouterr().out


def status(capsys) -> dict:
    return json.loads(run(capsys, "status", "--json"))


def index(capsys, *extra: str) -> dict:
    return json.loads(run(capsys, "index", "--json", "--quiet", *extra))


def index_train(env, capsys) -> dict:
    for photo in sorted((KNN / "train").glob("*/*")):
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    index(capsys)
    return status(capsys)


def face_ids(env) -> list[str]:
    return sorted(env.parquet.faces(["face_id"]).column("face_id").to_pylist())


def assert_whole(doc: dict, faces: int) -> None:
    assert doc["parquet"]["faces"] == doc["qdrant"]["faces"] == doc["pgvector"]["faces"] == faces, doc
    assert not doc["parquet"].get("damaged"), doc


def test_a_deleted_store_folder_is_rebuilt_by_the_next_index(env, capsys):
    before = index_train(env, capsys)
    faces = before["parquet"]["faces"]
    assert_whole(before, faces)
    query = str(KNN / "test/obama1.jpg")
    for folder in ("qdrant", "postgres"):
        # As between two commands: no process of this library is still using the embedded Postgres.
        embedded_pg.release_all()
        assert not embedded_pg.embedded_postgres(env.data / "postgres").running()
        shutil.rmtree(env.data / folder)
        lost = status(capsys)
        assert lost["qdrant" if folder == "qdrant" else "pgvector"]["faces"] == 0
        report = index(capsys)
        assert report["failed_runs"] == [] and report["processed"] == 0  # no detection: only exports
        assert report["repaired"], report
        assert_whole(status(capsys), faces)
        for store in ("qdrant", "pgvector"):
            found = json.loads(run(capsys, "search", query, "--json", "--store", store))
            assert "obama/obama.jpg" in {m["image_key"] for m in found[0]}
    # Healed for good: the next index has nothing to do.
    assert "Nothing to do" in run(capsys, "index", "--quiet")


def test_truncated_and_deleted_parquet_files_are_reported_then_extracted_again(env, capsys):
    before = index_train(env, capsys)
    ids = face_ids(env)
    faces_dir, images_dir = env.data / "parquet/faces", env.data / "parquet/images"
    truncated = faces_dir / "obama/obama.jpg.parquet"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (faces_dir / "biden/biden.jpg.parquet").unlink()
    (images_dir / "rose_leslie/img1.jpg.parquet").unlink()

    # Readers name the damaged file instead of crashing.
    doc = status(capsys)
    assert any("obama/obama.jpg.parquet" in d for d in doc["parquet"]["damaged"]), doc
    assert doc["parquet"]["faces"] < before["parquet"]["faces"]
    run(capsys, "person", str(KNN / "test/obama1.jpg"))
    run(capsys, "people")

    report = index(capsys)
    assert report["failed_runs"] == [] and report["processed"] == 3, report
    assert_whole(status(capsys), before["parquet"]["faces"])
    assert status(capsys)["images"] == before["images"]
    assert face_ids(env) == ids  # the same faces, re-extracted (ids are stable)
    pq.read_table(truncated)
    assert "Nothing to do" in run(capsys, "index", "--quiet")


def test_repair_never_pushes_a_missing_parquet_file_to_the_stores_as_a_deletion(env, capsys):
    before = index_train(env, capsys)
    (env.data / "parquet/faces/obama/obama2.jpg.parquet").unlink()
    report = index(capsys, "--repair")
    assert report["failed_runs"] == [] and report["processed"] == 1, report
    assert_whole(status(capsys), before["parquet"]["faces"])
    found = json.loads(run(capsys, "search", str(KNN / "test/obama1.jpg"), "--json", "--store", "pgvector"))
    assert "obama/obama2.jpg" in {m["image_key"] for m in found[0]}


def test_repair_compares_face_ids_and_not_only_counts(env, capsys):
    """A store that lost one face and gained a stranger has the right count: only `--repair` sees it."""
    before = index_train(env, capsys)
    library = env.library()
    faces = library.parquet.load_faces(["obama/obama.jpg"])["obama/obama.jpg"]
    (face,) = faces
    stranger = dataclasses.replace(face, face_id="00000000-0000-4000-8000-000000000001")
    for store in library.stores().values():
        store.delete_faces([face.face_id])
        store.replace_images({"obama/obama.jpg": [stranger]})
    library.close()
    assert_whole(status(capsys), before["parquet"]["faces"])  # the counts agree ...
    report = index(capsys, "--repair")  # ... the ids do not
    assert report["repaired"] == ["obama/obama.jpg"] and report["processed"] == 0, report
    library = env.library()
    for store in library.stores().values():
        assert store.face_ids_by_image(["obama/obama.jpg"]) == {"obama/obama.jpg": {face.face_id}}
    library.close()


def test_index_leaves_healing_alone_while_another_run_is_in_flight(env, capsys):
    """A run mid-export (the daemon's) holds store faces the manifest does not list yet: `index` must not
    take them for strays and delete them; the next index with no run in flight heals."""
    import uuid

    import dagster as dg

    index_train(env, capsys)
    library = env.library()
    (face,) = library.parquet.load_faces(["obama/obama.jpg"])["obama/obama.jpg"]
    stray = dataclasses.replace(face, image_key="ghost.jpg", face_id="00000000-0000-4000-8000-000000000003")
    for store in library.stores().values():
        store.replace_images({"ghost.jpg": [stray]})
    library.close()
    instance = dg.DagsterInstance.get()  # the one `index` uses (DAGSTER_HOME)
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="index_images", run_id=run_id, status=dg.DagsterRunStatus.STARTED))

    def ghosts() -> list[set[str]]:
        library = env.library()
        try:
            return [s.face_ids_by_image(["ghost.jpg"])["ghost.jpg"] for s in library.stores().values()]
        finally:
            library.close()

    assert index(capsys, "--repair")["repaired"] == []
    assert ghosts() == [{stray.face_id}, {stray.face_id}]
    instance.delete_run(run_id)
    assert index(capsys, "--repair")["repaired"] == ["ghost.jpg"]
    assert ghosts() == [set(), set()]
