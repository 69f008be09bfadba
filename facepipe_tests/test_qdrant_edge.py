"""The embedded Qdrant engine (qdrant-edge): migration from qdrant-client's local mode, erasure, sharing."""

from __future__ import annotations

import multiprocessing
import struct
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

try:
    from facepipe_tests.store_fixtures import centers_for, clustered_faces
except ImportError:  # facepipe_tests is not a package: pytest put its folder on sys.path
    from store_fixtures import centers_for, clustered_faces  # type: ignore[no-redef]

from facepipe.stores import QdrantStore, StoreError
from facepipe.stores.base import payload_of
from facepipe.stores.qdrant_edge import SHARD_DIR

SPAWN = multiprocessing.get_context("spawn")


def local_mode_folder(folder: Path, batch: dict) -> None:
    """What an older facepipe left in `<data>/qdrant`: qdrant-client's local mode with the `faces` collection."""
    from qdrant_client import QdrantClient, models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(folder))
        client.create_collection("faces", vectors_config=models.VectorParams(size=128, distance=models.Distance.EUCLID))
        faces = [f for fs in batch.values() for f in fs]
        for start in range(0, len(faces), 500):
            chunk = faces[start : start + 500]
            client.upsert(
                "faces",
                models.Batch(
                    ids=[f.face_id for f in chunk],
                    vectors=[f.embedding.tolist() for f in chunk],
                    payloads=[payload_of(f) for f in chunk],
                ),
            )
        client.close()


def test_local_mode_folder_is_migrated_once(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    rng = np.random.default_rng(20)
    batch = clustered_faces(rng, [f"m/{i:04}.jpg" for i in range(700)], 2, centers_for(rng, 30))  # > 1 page
    faces = {f.face_id: f for fs in batch.values() for f in fs}
    local_mode_folder(folder, batch)
    assert (folder / "collection" / "faces" / "storage.sqlite").exists()
    (folder / f"{SHARD_DIR}.migrating").mkdir()  # left by an interrupted earlier attempt

    store = QdrantStore(path=folder)
    assert store.count() == 1400
    assert not (folder / "collection").exists() and not (folder / "meta.json").exists()
    assert not (folder / f"{SHARD_DIR}.migrating").exists() and (folder / SHARD_DIR / "edge_config.json").exists()
    assert store.face_ids_by_image() == {k: {f.face_id for f in fs} for k, fs in batch.items()}
    got = store.faces_of_images(["m/0003.jpg"])["m/0003.jpg"]
    assert {(m.face_id, m.box, m.person_id) for m in got} == {(f.face_id, f.box, None) for f in batch["m/0003.jpg"]}
    probe = batch["m/0123.jpg"][1]
    hit = store.search(probe.embedding, top_k=1)[0]
    assert hit.face_id == probe.face_id and hit.distance < 1e-5
    with store.session() as engine:  # every payload field came across
        record = engine.shard.retrieve([probe.face_id], with_payload=True, with_vector=True)[0]
    assert record.payload == payload_of(faces[probe.face_id])
    assert np.allclose(record.vector, probe.embedding)

    # Once: a later open neither migrates again nor loses what was written since.
    store.replace_images(clustered_faces(rng, ["after.jpg"], 1, centers_for(rng, 1)))
    store.close()
    again = QdrantStore(path=folder)
    assert again.count() == 1401
    again.close()


def test_empty_local_mode_folder_migrates_to_an_empty_store(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    folder = tmp_path / "qdrant"
    QdrantClient(path=str(folder)).close()  # a folder that never got the collection
    store = QdrantStore(path=folder)
    assert store.count() == 0 and not (folder / "meta.json").exists()
    store.close()


def _vector_encodings(vec: np.ndarray) -> dict[str, bytes]:
    """How a vector's first values look on disk: raw float32 (segments) and CBOR float32 (the WAL)."""
    head = vec[:6].astype(np.float32)
    return {
        "float32": head.astype("<f4").tobytes(),
        "cbor": b"".join(b"\xfa" + struct.pack(">f", float(x)) for x in head),
    }


def _files_containing(folder: Path, needles: dict[str, bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, needle in needles.items():
                if needle in data:
                    found.setdefault(name, []).append(str(path.relative_to(folder)))
    return found


def test_forgotten_faces_leave_no_bytes_after_compact(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    store = QdrantStore(path=folder)
    rng = np.random.default_rng(21)
    batch = clustered_faces(rng, [f"e/{i}.jpg" for i in range(50)], 2, centers_for(rng, 5))
    store.replace_images(batch)
    gone = batch["e/7.jpg"][0]
    secret_key = b"e/7.jpg"
    needles = {**_vector_encodings(gone.embedding), "image_key": secret_key}
    assert {"float32", "cbor", "image_key"} <= set(_files_containing(folder, needles)), "the probe must see them"

    store.delete_images(["e/7.jpg"])
    store.delete_faces([batch["e/8.jpg"][1].face_id])
    assert _files_containing(folder, needles), "deleting only flags the points (the engine compacts later)"

    report = store.compact()
    assert report["points"] == 97
    assert _files_containing(folder, needles) == {}
    other = _vector_encodings(batch["e/8.jpg"][1].embedding)
    assert _files_containing(folder, other) == {}
    # the store works on as before
    assert store.count() == 97 and "e/7.jpg" not in store.face_ids_by_image()
    kept = batch["e/9.jpg"][0]
    assert store.search(kept.embedding, top_k=1)[0].face_id == kept.face_id
    store.close()
    assert QdrantStore(path=folder).count() == 97


def test_the_engine_allows_one_open_per_folder(tmp_path: Path) -> None:
    """Why processes take turns: a second open of a shard fails at once, in this process or another."""
    import qdrant_edge as qe

    folder = tmp_path / "qdrant"
    store = QdrantStore(path=folder, keep_open=True)
    store.ensure_schema()
    shard_dir = str(folder / SHARD_DIR)
    with pytest.raises(Exception, match="WAL"):
        qe.EdgeShard.load(shard_dir)
    probe = "import sys, qdrant_edge as qe; qe.EdgeShard.load(sys.argv[1])"
    other = subprocess.run([sys.executable, "-c", probe, shard_dir], capture_output=True, text=True, timeout=120)
    assert other.returncode != 0 and "WouldBlock" in other.stderr
    store.close()
    assert subprocess.run([sys.executable, "-c", probe, shard_dir], timeout=120).returncode == 0


def _writer(folder: str, started: object, out: object) -> None:
    store = QdrantStore(path=Path(folder), lock_timeout=120)
    rng = np.random.default_rng(22)
    with store.session():
        started.set()  # type: ignore[attr-defined]
        for i in range(20):
            store.replace_images(clustered_faces(rng, [f"w/{i}.jpg"], 3, centers_for(rng, 2)))
    out.put(("writer", store.count()))  # type: ignore[attr-defined]
    store.close()


def _reader(folder: str, out: object) -> None:
    store = QdrantStore(path=Path(folder), lock_timeout=120)
    try:
        out.put(("reader", store.count()))  # type: ignore[attr-defined]
    except StoreError as err:
        out.put(("reader", str(err)))  # type: ignore[attr-defined]
    store.close()


def test_a_reader_waits_for_the_writer_and_sees_all_it_wrote(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    QdrantStore(path=folder).ensure_schema()
    started, out = SPAWN.Event(), SPAWN.Queue()
    writer = SPAWN.Process(target=_writer, args=(str(folder), started, out))
    writer.start()
    assert started.wait(120)
    reader = SPAWN.Process(target=_reader, args=(str(folder), out))
    reader.start()
    results = dict(out.get(timeout=300) for _ in range(2))
    writer.join(60)
    reader.join(60)
    assert results == {"writer": 60, "reader": 60}  # never a half-written view, never an error
    assert writer.exitcode == 0 and reader.exitcode == 0


def test_unknown_ids_and_empty_calls(tmp_path: Path) -> None:
    store = QdrantStore(path=tmp_path / "qdrant")
    store.delete_faces([str(uuid.uuid4())])  # before the shard exists: nothing to do
    store.set_person_ids({str(uuid.uuid4()): "x"})
    assert store.images_of_person("x") == [] and store.faces_of_images(["a.jpg"]) == {"a.jpg": []}
    assert store.compact()["points"] == 0
    store.close()
