"""Erasure: a forgotten photo or person leaves no trace and does not come back on its own."""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import pyarrow.compute as pc

from facepipe.cli import main
from facepipe.defs.partitions import images_partitions
from facepipe_tests.conftest import KNN


def run(capsys, *args: str, code: int = 0) -> str:
    assert main(list(args)) == code
    return capsys.readouterr().out


def search(capsys, photo) -> list[dict]:
    return json.loads(run(capsys, "search", str(photo), "--json", "--top-k", "50"))[0]


def traces(env, text: str) -> list[str]:
    """Files under the data folder whose bytes contain `text` (SQLite, Parquet, logs, anything)."""
    out = subprocess.run(["grep", "-rlaF", text, str(env.data)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "/postgres/" not in line and "/qdrant/" not in line]


def index_train(env, capsys) -> None:
    for photo in sorted((KNN / "train").glob("*/*")):
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    run(capsys, "index", "--quiet")


def test_forget_a_photo_everywhere_and_keep_it_out(env, capsys):
    index_train(env, capsys)
    key = "obama/obama2.jpg"
    assert key in {m["image_key"] for m in search(capsys, KNN / "test/obama1.jpg")}

    assert "Forgot 1 photos" in run(capsys, "forget", key)
    for store in ("qdrant", "pgvector"):
        found = json.loads(run(capsys, "search", str(KNN / "test/obama1.jpg"), "--json", "--store", store))
        assert key not in {m["image_key"] for m in found[0]}
    status = json.loads(run(capsys, "status", "--json"))
    assert status["images"] == 8 and status["parquet"]["faces"] == status["qdrant"]["faces"] == 8
    people = json.loads(run(capsys, "people", "--json"))
    assert all(key not in p["image_keys"] for p in people)
    assert not (env.data / "parquet/faces/obama/obama2.jpg.parquet").exists()
    with dg.DagsterInstance.get() as instance:
        assert key not in instance.get_dynamic_partitions(images_partitions.name)

    # The file is still in the folder: the next index (and sensor) leaves it alone ...
    assert json.loads(run(capsys, "index", "--json", "--quiet"))["new"] == 0
    assert key not in {m["image_key"] for m in search(capsys, KNN / "test/obama1.jpg")}
    # ... until the user asks for it back.
    run(capsys, "forget", "--undo", key)
    assert json.loads(run(capsys, "index", "--json", "--quiet"))["new"] == 1
    assert key in {m["image_key"] for m in search(capsys, KNN / "test/obama1.jpg")}


def test_forget_a_person_erases_their_faces_only(env, capsys):
    index_train(env, capsys)
    people = json.loads(run(capsys, "people", "--json"))
    (biden,) = [p for p in people if all(k.startswith("biden/") for k in p["image_keys"])]
    run(capsys, "people", "name", biden["person_id"], "Joe")

    table = env.parquet.faces(["face_id", "person_id"])
    ids = table.filter(pc.equal(table.column("person_id"), biden["person_id"])).column("face_id").to_pylist()
    assert len(ids) == 2

    assert "2 faces erased" in run(capsys, "forget", "--person", biden["person_id"])
    assert all(m["face_id"] not in ids for m in search(capsys, KNN / "test/obama_and_biden.jpg"))
    people_after = json.loads(run(capsys, "people", "--json"))
    assert biden["person_id"] not in {p["person_id"] for p in people_after}
    assert all(p["name"] != "Joe" for p in people_after)
    for face_id in ids:
        assert traces(env, face_id) == [] or all("manifest" in t for t in traces(env, face_id))
    # Re-indexing the same photos (forced) does not bring the erased faces back.
    (env.images / "biden/biden.jpg").touch()
    run(capsys, "index", "--quiet")
    assert all(m["face_id"] not in ids for m in search(capsys, KNN / "test/obama_and_biden.jpg"))

    assert main(["forget", "--person", "p999"]) == 2
    assert "no person 'p999'" in capsys.readouterr().err


def test_compact_rewrites_every_store_after_forget(env, capsys):
    env.add(KNN / "train/obama/obama.jpg", "a.jpg")
    env.add(KNN / "train/biden/biden.jpg", "b.jpg")
    assert main(["index", "--quiet"]) == 0
    vector = env.parquet.faces(["embedding"]).column("embedding").to_pylist()[0]
    assert main(["forget", "a.jpg", "b.jpg"]) == 0
    capsys.readouterr()
    assert main(["compact", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "qdrant: compacted" in out and "pgvector: compacted" in out
    import numpy as np

    needle = np.asarray(vector, dtype=np.float32).tobytes()
    leftovers = [p for p in (env.data / "qdrant").rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leftovers == [], "a forgotten face's vector is still in the embedded Qdrant's files"
