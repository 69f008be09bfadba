"""Erasure: a forgotten photo or person leaves no trace and does not come back on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pyarrow.compute as pc
import pytest

from facepipe import indexing
from facepipe.cli import main
from facepipe.defs.partitions import images_partitions
from facepipe.faces import batch
from facepipe_tests.conftest import FR, KNN


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


def test_forget_a_photo_everywhere_and_keep_it_out(env, capsys, monkeypatch):
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
    # Not even read by an index that extracts every photo again (new settings), early start included.
    started: list[str] = []
    real = batch.extract_early
    monkeypatch.setattr(batch, "extract_early", lambda jobs, *a: started.extend(k for k, _ in jobs) or real(jobs, *a))
    monkeypatch.setenv("FACEPIPE_WORKERS", "2")
    monkeypatch.setenv("FACEPIPE_MIN_FACE", "48")
    assert json.loads(run(capsys, "index", "--json", "--quiet"))["processed"] == 8
    assert len(started) == 8 and key not in started
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


# -- erasure against runs in flight --------------------------------------------------------------------


def train_photos(env) -> list[str]:
    keys = []
    for photo in sorted((KNN / "train").glob("*/*")):
        keys.append(f"{photo.parent.name}/{photo.name}")
        env.add(photo, keys[-1])
    return sorted(keys)


def assert_forgotten(env, capsys, keys: list[str]) -> None:
    """No face, file, cluster or partition of the photos anywhere, and the stores agree with the Parquet."""
    for store in ("qdrant", "pgvector"):
        for query in ("test/obama1.jpg", "test/obama_and_biden.jpg", "test/alex_lacamoire1.jpg"):
            found = json.loads(run(capsys, "search", str(KNN / query), "--json", "--store", store, "--top-k", "50"))
            assert not {m["image_key"] for r in found for m in r} & set(keys), (store, query)
    library = env.library()
    for store in library.stores().values():
        assert all(not ids for ids in store.face_ids_by_image(keys).values())
    library.close()
    assert not set(env.parquet.faces(["image_key"]).column("image_key").to_pylist()) & set(keys)
    assert not env.parquet.image_keys() & set(keys)
    status = json.loads(run(capsys, "status", "--json"))
    assert status["parquet"]["faces"] == status["qdrant"]["faces"] == status["pgvector"]["faces"] > 0
    people = json.loads(run(capsys, "people", "--json"))
    assert not {k for p in people for k in p["image_keys"]} & set(keys)
    with dg.DagsterInstance.get() as instance:
        assert not set(instance.get_dynamic_partitions(images_partitions.name)) & set(keys)
    # ... and they stay out.
    assert json.loads(run(capsys, "index", "--json", "--quiet"))["processed"] == 0
    assert not env.parquet.image_keys() & set(keys)


@pytest.mark.parametrize("moment", ["extracting", "before_export"])
def test_forget_during_a_first_index_wins(env, capsys, monkeypatch, moment):
    """`forget` from inside a real run (the progress hook fires right after each photo's Parquet is
    written): while the batch extracts (the range's first photo done, its last not yet read), or after
    the last photo, before any store has a collection."""
    keys = train_photos(env)
    monkeypatch.setenv("FACEPIPE_BATCH", "100")  # one run whose range starts and ends with forgotten keys
    targets = [keys[0], keys[-1]] if moment == "extracting" else [keys[0], keys[-2]]
    seen: list[str] = []
    outcome: list[int] = []

    def hook(record) -> None:
        seen.append(record.image_key)
        due = len(seen) == 1 if moment == "extracting" else len(seen) == len(keys)
        if due:
            outcome.append(main(["forget", *targets]))

    remove = indexing.add_progress_hook(hook)
    try:
        code = main(["index", "--json", "--quiet"])
    finally:
        remove()
    out = capsys.readouterr()
    assert outcome == [0], out.err
    assert code == 0, out.out + out.err
    assert_forgotten(env, capsys, targets)


def test_forget_from_another_process_while_index_runs(env, capsys):
    """Two real processes: `facepipe index` extracting, `facepipe forget` here once it is under way."""
    keys = train_photos(env)
    for photo in sorted((FR / "tests/test_images").glob("obama*.jpg")):
        env.add(photo, f"zz/{photo.name}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facepipe.cli", "index", "--quiet"],
        env={**os.environ, "FACEPIPE_WORKERS": "1", "FACEPIPE_BATCH": "100"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    status_dir = env.data / "parquet/images"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(status_dir.rglob("*.parquet"))) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    targets = [keys[0], keys[-1]]  # one extracted already, one most likely not yet
    assert main(["forget", *targets]) == 0, capsys.readouterr().err
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    capsys.readouterr()
    assert_forgotten(env, capsys, targets)


def test_an_interrupted_forget_is_finished_by_the_next_index(env, capsys):
    """`forget` killed right after its tombstone (its first step): the next sync erases the photo."""
    keys = train_photos(env)
    run(capsys, "index", "--quiet")
    library = env.library()
    library.manifest.tombstone([keys[1]])  # what a `forget` killed after its first commit leaves
    assert keys[1] in env.parquet.image_keys()
    run(capsys, "index", "--quiet")
    assert library.manifest.unfinished_forgets() == []
    capsys.readouterr()
    assert_forgotten(env, capsys, [keys[1]])


def test_a_qdrant_server_without_the_collection_yet_takes_erasure_and_clustering(monkeypatch):
    """`forget` before the first export reached a Qdrant server: erasing and re-clustering find no
    collection and do nothing (once: "ValueError: Collection faces not found"). qdrant-client's
    in-memory mode stands in for the server: the same client and the same answers."""
    import contextlib

    from qdrant_client import QdrantClient

    from facepipe.stores.qdrant_server import ServerQdrantStore

    client = QdrantClient(":memory:")
    store = ServerQdrantStore("http://127.0.0.1:6333")
    monkeypatch.setattr(store, "client", contextlib.contextmanager(lambda: (yield client)))
    face_id = "00000000-0000-4000-8000-000000000001"
    store.delete_images(["a.jpg"])
    store.delete_faces([face_id])
    store.set_person_ids({face_id: "p1"})
    assert store.count() == 0 and store.face_ids_by_image(["a.jpg"]) == {"a.jpg": set()}
    assert not client.collection_exists("faces")


def test_a_run_killed_hard_does_not_hold_back_the_partitions_of_forgotten_photos(env, capsys):
    """A SIGKILLed `facepipe index` leaves its run "started" for ever: `forget` sees its process is gone."""
    keys = train_photos(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "facepipe.cli", "index", "--quiet"],
        env={**os.environ, "FACEPIPE_WORKERS": "1", "FACEPIPE_BATCH": "100"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status_dir = env.data / "parquet/images"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(status_dir.rglob("*.parquet")):
        assert proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    with dg.DagsterInstance.get() as instance:
        started = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert started, "the killed run still looks started"
    assert main(["forget", keys[0]]) == 0
    with dg.DagsterInstance.get() as instance:
        assert keys[0] not in instance.get_dynamic_partitions(images_partitions.name)
