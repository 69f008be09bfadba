"""Qdrant and pgvector stores against their real embedded engines: same semantics, same answers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facepipe.stores import FaceStore, PgVectorStore, QdrantStore, StoreError, registry
from facepipe.stores.embedded_pg import embedded_postgres
from facepipe.stores.locks import lock_is_free
from facepipe.stores.qdrant_edge import LOCK_FILE
from facepipe_tests import store_fixtures
from facepipe_tests.store_fixtures import (
    centers_for,
    clustered_faces,
    pg_holder,
    pg_reader,
    pg_writer,
    qdrant_waiter,
    wipe,
)

# The fixtures, bound here so pytest finds them (assigned, not imported: the tests' arguments share their names).
data_dir, qdrant_store, pg_store, store = (
    store_fixtures.data_dir,
    store_fixtures.qdrant_store,
    store_fixtures.pg_store,
    store_fixtures.store,
)

SPAWN = multiprocessing.get_context("spawn")
FORK = multiprocessing.get_context("fork")
EVIL_KEY = "x'; DROP TABLE faces; --.jpg"


def ids_of(batch: dict[str, list[Any]]) -> dict[str, set[str]]:
    return {k: {f.face_id for f in v} for k, v in batch.items()}


def test_both_follow_the_protocol(qdrant_store: QdrantStore, pg_store: PgVectorStore) -> None:
    assert isinstance(qdrant_store, FaceStore)
    assert isinstance(pg_store, FaceStore)


def test_schema_is_idempotent(store: FaceStore) -> None:
    store.ensure_schema()
    store.ensure_schema()
    assert store.count() == 0


def test_replace_round_trip_and_re_replace(store: FaceStore) -> None:
    rng = np.random.default_rng(1)
    centers = centers_for(rng, 3)
    batch = clustered_faces(rng, ["a.jpg", "b/c d (1).jpg", "é.png"], 3, centers)
    store.replace_images(batch)
    assert store.count() == 9
    assert store.face_ids_by_image() == ids_of(batch)
    assert store.face_ids_by_image(["a.jpg", "missing.jpg"]) == {"a.jpg": ids_of(batch)["a.jpg"], "missing.jpg": set()}

    store.replace_images(batch)  # the same faces again: nothing added, nothing lost
    assert store.count() == 9
    assert store.face_ids_by_image() == ids_of(batch)

    # a.jpg changed: one face kept, two replaced by new content; é.png now has no faces
    changed = clustered_faces(rng, ["a.jpg"], 3, centers, tag="v2")["a.jpg"]
    new = {"a.jpg": [batch["a.jpg"][0], *changed[1:]], "é.png": []}
    store.replace_images(new)
    got = store.face_ids_by_image()
    assert got == {"a.jpg": ids_of(new)["a.jpg"], "b/c d (1).jpg": ids_of(batch)["b/c d (1).jpg"]}
    assert store.count() == 6
    faces = store.faces_of_images(["a.jpg"])["a.jpg"]
    assert {m.face_id for m in faces} == ids_of(new)["a.jpg"]
    assert {m.box for m in faces} == {f.box for f in new["a.jpg"]}


def test_delete_images(store: FaceStore) -> None:
    rng = np.random.default_rng(2)
    batch = clustered_faces(rng, ["keep.jpg", "drop1.jpg", "drop2.jpg"], 2, centers_for(rng, 2))
    store.replace_images(batch)
    store.delete_images(["drop1.jpg", "drop2.jpg", "never-there.jpg"])
    assert store.face_ids_by_image() == {"keep.jpg": ids_of(batch)["keep.jpg"]}
    store.delete_images([])
    assert store.count() == 2


def test_hostile_image_key(store: FaceStore) -> None:
    rng = np.random.default_rng(3)
    batch = clustered_faces(rng, [EVIL_KEY, 'q"uote\\back;slash.jpg'], 2, centers_for(rng, 2))
    store.replace_images(batch)
    assert store.face_ids_by_image([EVIL_KEY]) == {EVIL_KEY: ids_of(batch)[EVIL_KEY]}
    hit = store.search(batch[EVIL_KEY][0].embedding, top_k=1)[0]
    assert hit.image_key == EVIL_KEY and hit.face_id == batch[EVIL_KEY][0].face_id
    store.delete_images([EVIL_KEY])
    assert store.count() == 2  # the table survived and only that image went


def test_set_person_ids(store: FaceStore) -> None:
    rng = np.random.default_rng(4)
    batch = clustered_faces(rng, ["p1.jpg", "p2.jpg", "p3.jpg"], 2, centers_for(rng, 2))
    f = batch
    store.replace_images(batch)
    store.set_person_ids(
        {
            f["p1.jpg"][0].face_id: "alice",
            f["p2.jpg"][1].face_id: "alice",
            f["p3.jpg"][0].face_id: "bob",
            str(uuid.uuid4()): "ghost",  # unknown ids are skipped, not an error
        }
    )
    assert store.images_of_person("alice") == ["p1.jpg", "p2.jpg"]
    assert store.images_of_person("bob") == ["p3.jpg"]
    assert store.images_of_person("ghost") == []
    persons = {m.face_id: m.person_id for m in store.faces_of_images(["p1.jpg"])["p1.jpg"]}
    assert persons == {f["p1.jpg"][0].face_id: "alice", f["p1.jpg"][1].face_id: None}
    hit = store.search(f["p3.jpg"][0].embedding, top_k=1)[0]
    assert hit.person_id == "bob"
    store.set_person_ids({f["p3.jpg"][0].face_id: None})
    assert store.images_of_person("bob") == []


def test_search_agrees_across_stores_and_with_numpy(qdrant_store: QdrantStore, pg_store: PgVectorStore) -> None:
    wipe(qdrant_store)
    wipe(pg_store)
    rng = np.random.default_rng(5)
    batch = clustered_faces(rng, [f"s/{i:02}.jpg" for i in range(40)], 4, centers_for(rng, 10))
    for s in (qdrant_store, pg_store):
        s.replace_images(batch)
    faces = [f for fs in batch.values() for f in fs]
    matrix = np.stack([f.embedding for f in faces]).astype(np.float64)
    queries = [faces[i].embedding + rng.normal(0, 0.01, 128).astype(np.float32) for i in range(0, 160, 16)]
    queries.append(rng.normal(0, 0.1, 128).astype(np.float32))  # far from everything

    batched = {name: s.search_many(queries, top_k=5) for name, s in (("q", qdrant_store), ("p", pg_store))}
    for qi, q in enumerate(queries):
        dist = np.linalg.norm(matrix - q.astype(np.float64), axis=1)
        order = np.argsort(dist)[:5]
        expect_ids = [faces[i].face_id for i in order]
        for name, s in (("q", qdrant_store), ("p", pg_store)):
            got = s.search(q, top_k=5)
            assert [m.face_id for m in got] == expect_ids, name
            assert np.allclose([m.distance for m in got], dist[order], atol=1e-4), name
            assert [m.distance for m in got] == sorted(m.distance for m in got)
            assert [(m.face_id, round(m.distance, 5)) for m in batched[name][qi]] == [
                (m.face_id, round(m.distance, 5)) for m in got
            ]
            assert got[0].image_key == faces[order[0]].image_key and got[0].box == faces[order[0]].box

    # max_distance keeps exactly the top-k answers within the radius
    q = queries[0]
    dist = np.linalg.norm(matrix - q.astype(np.float64), axis=1)
    top10 = np.sort(dist)[:10]
    radius = float((top10[4] + top10[5]) / 2)
    expect = {faces[i].face_id for i in np.argsort(dist)[:10] if dist[i] <= radius}
    for s in (qdrant_store, pg_store):
        got = s.search(q, top_k=10, max_distance=radius)
        assert {m.face_id for m in got} == expect and len(got) == 5
        assert all(m.distance <= radius for m in got)
        assert s.search(q, top_k=10, max_distance=0.0) == []
    assert qdrant_store.search_many([], top_k=3) == [] == pg_store.search_many([], top_k=3)


def test_qdrant_shared_in_process_and_threads(qdrant_store: QdrantStore, data_dir: Path) -> None:
    wipe(qdrant_store)
    rng = np.random.default_rng(6)
    batch = clustered_faces(rng, [f"t/{i}.jpg" for i in range(8)], 2, centers_for(rng, 3))
    qdrant_store.replace_images(batch)
    other = QdrantStore(path=data_dir / "qdrant")  # a second store on the same folder
    with qdrant_store.session():
        assert other.count() == 16  # shares the open client instead of failing on the lock
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                assert len(other.search(batch["t/0.jpg"][0].embedding, top_k=3)) == 3
                assert qdrant_store.count() == 16
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_qdrant_keep_open_holds_the_folder_until_close(qdrant_store: QdrantStore, data_dir: Path) -> None:
    lock = data_dir / "qdrant" / LOCK_FILE
    assert lock_is_free(lock)  # plain stores let go after each operation
    server_like = QdrantStore(path=data_dir / "qdrant", keep_open=True)
    server_like.count()
    assert not lock_is_free(lock)
    assert qdrant_store.count() == server_like.count()  # the rest of the process shares it
    server_like.close()
    assert lock_is_free(lock)


def test_qdrant_forked_child_never_borrows_the_parents_lock(qdrant_store: QdrantStore, data_dir: Path) -> None:
    """A fork inherits the open client and its flock; the child must wait like any other process."""
    rng = np.random.default_rng(10)
    out = FORK.Queue()
    with qdrant_store.session():
        child = FORK.Process(target=qdrant_waiter, args=(str(data_dir), 0.5, out))
        child.start()
        msgs = [out.get(timeout=30), out.get(timeout=30)]
        child.join(10)
        # the parent's lock survived the child's exit: it can still write through its open client
        qdrant_store.replace_images(clustered_faces(rng, ["fork.jpg"], 1, centers_for(rng, 1)))
    assert msgs[1][0] == "error" and str(os.getpid()) in msgs[1][2], msgs
    assert child.exitcode == 0
    assert qdrant_store.face_ids_by_image(["fork.jpg"])["fork.jpg"]


def test_qdrant_lock_between_processes(qdrant_store: QdrantStore, data_dir: Path) -> None:
    """A second process waits for the embedded Qdrant and gets in once the first lets go, or fails clearly."""
    wipe(qdrant_store)
    rng = np.random.default_rng(9)
    qdrant_store.replace_images(clustered_faces(rng, ["lock.jpg"], 3, centers_for(rng, 2)))
    out = SPAWN.Queue()
    with qdrant_store.session():  # this process holds the folder lock
        quick = SPAWN.Process(target=qdrant_waiter, args=(str(data_dir), 1.0, out))
        patient = SPAWN.Process(target=qdrant_waiter, args=(str(data_dir), 30.0, out))
        quick.start()
        patient.start()
        seen: dict[tuple[str, float], tuple[Any, ...]] = {}
        while ("error", 1.0) not in seen or ("trying", 30.0) not in seen:
            msg = out.get(timeout=30)
            seen[(msg[0], msg[1])] = msg
        time.sleep(0.5)  # the patient one is now waiting on our lock
    patient.join(30)
    quick.join(30)
    while ("ok", 30.0) not in seen:
        msg = out.get(timeout=5)
        seen[(msg[0], msg[1])] = msg

    message = seen[("error", 1.0)][2]
    assert f"embedded Qdrant at {data_dir / 'qdrant'} is in use by another process" in message
    assert str(os.getpid()) in message and "QDRANT_URL" in message
    assert 0.9 <= seen[("error", 1.0)][3] < 5
    _, _, n, waited = seen[("ok", 30.0)]
    assert n == 3 and waited >= 0.4
    assert quick.exitcode == 0 and patient.exitcode == 0


def test_pg_dsn_mode_runs_the_same_code(pg_store: PgVectorStore, data_dir: Path) -> None:
    """FACEPIPE_PG_DSN mode, pointed at the embedded server's socket: a real server without Docker."""
    wipe(pg_store)
    rng = np.random.default_rng(14)
    batch = clustered_faces(rng, ["dsn1.jpg", "dsn2.jpg"], 2, centers_for(rng, 2))
    server = embedded_postgres(data_dir / "postgres")
    by_dsn = PgVectorStore(dsn=server.uri())
    assert not by_dsn.is_local
    by_dsn.ensure_schema()
    by_dsn.replace_images(batch)
    assert pg_store.face_ids_by_image() == ids_of(batch)
    assert by_dsn.search(batch["dsn2.jpg"][1].embedding, top_k=1)[0].face_id == batch["dsn2.jpg"][1].face_id
    by_dsn.close()
    assert server.running() and pg_store.count() == 4  # a DSN store never stops a server


def test_pg_unchanged_rows_are_not_rewritten(pg_store: PgVectorStore) -> None:
    wipe(pg_store)
    rng = np.random.default_rng(11)
    batch = clustered_faces(rng, ["same1.jpg", "same2.jpg"], 3, centers_for(rng, 2))
    pg_store.replace_images(batch)

    def versions() -> dict[str, str]:
        with pg_store.connection() as conn:
            return dict(conn.execute("SELECT face_id::text, xmin::text FROM faces").fetchall())

    before = versions()
    pg_store.replace_images(batch)
    assert versions() == before


def test_plain_stores_stay_where_they_were_built(
    qdrant_store: QdrantStore, pg_store: PgVectorStore, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stores read no environment: a store built for a folder stays on it whatever FACEPIPE_DATA says."""
    wipe(qdrant_store)
    wipe(pg_store)
    rng = np.random.default_rng(12)
    batch = clustered_faces(rng, ["here.jpg"], 2, centers_for(rng, 1))
    monkeypatch.setenv("FACEPIPE_DATA", str(tmp_path))
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("FACEPIPE_PG_DSN", "postgresql://u@127.0.0.1:1/db")
    q, p = QdrantStore(path=data_dir / "qdrant"), PgVectorStore(embedded_dir=data_dir / "postgres")
    for s in (q, p):
        s.replace_images(batch)
    assert (qdrant_store.count(), pg_store.count()) == (2, 2)
    assert not (tmp_path / "qdrant").exists() and not (tmp_path / "postgres").exists()
    q.close()
    p.close()
    assert pg_store.count() == 2  # closing another store on the same server leaves this one working
    with pytest.raises(ValueError):
        QdrantStore()
    with pytest.raises(ValueError):
        PgVectorStore()


def test_two_processes_share_a_fresh_embedded_postgres(tmp_path: Path) -> None:
    """Both start-or-join the server and race the schema DDL; the last to leave stops the server."""
    data = tmp_path / "data"
    data.mkdir()
    start, out = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=pg_writer, args=(str(data), p, 5, s, start, out)) for p, s in (("a", 1), ("b", 2))]
    for p in procs:
        p.start()
    start.set()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert [(r[0], r[1], r[2]) for r in results] == [("a", "ok", 15), ("b", "ok", 15)], results
    assert [p.exitcode for p in procs] == [0, 0]
    server = embedded_postgres(data / "postgres")
    assert not server.running(), "the last of the two processes left but the server still runs"
    assert json.loads((data / "postgres" / ".handle_pids.json").read_text()) == []


def test_killed_users_do_not_wedge_embedded_postgres(tmp_path: Path) -> None:
    """Forked users (cheap to start; also proves a fork registers itself instead of riding on its parent)."""
    data = tmp_path / "data"
    data.mkdir()
    pgdata = data / "postgres"
    out = FORK.Queue()

    # 1. a user killed hard: its pid stays registered, the server stays up
    holder = FORK.Process(target=pg_holder, args=(str(data), out))
    holder.start()
    assert out.get(timeout=60) == ("ready", holder.pid, 3)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    assert holder.pid in json.loads((pgdata / ".handle_pids.json").read_text())
    assert embedded_postgres(pgdata).running()

    # 2. a later process uses it, and on leaving drops the dead pid and stops the server
    out = FORK.Queue()
    reader = FORK.Process(target=pg_reader, args=(str(data), out))
    reader.start()
    assert out.get(timeout=60) == ("ok", 3, 5)
    reader.join(30)
    assert reader.exitcode == 0
    assert not embedded_postgres(pgdata).running()
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []

    # 3. the server itself killed hard together with its user: the next process starts it again
    holder = FORK.Process(target=pg_holder, args=(str(data), out))
    holder.start()
    assert out.get(timeout=60)[0] == "ready"
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(holder.pid, signal.SIGKILL)
    os.kill(postmaster, signal.SIGKILL)
    holder.join(10)
    out = FORK.Queue()
    reader = FORK.Process(target=pg_reader, args=(str(data), out))
    reader.start()
    assert out.get(timeout=60) == ("ok", 5, 5)  # data survived (crash recovery), re-replace kept the count
    reader.join(30)
    assert reader.exitcode == 0
    assert not embedded_postgres(pgdata).running()


def test_live_pool_survives_a_killed_embedded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(13)
    store = PgVectorStore(embedded_dir=tmp_path / "postgres")
    store.replace_images(clustered_faces(rng, ["k.jpg"], 2, centers_for(rng, 1)))
    server = embedded_postgres(tmp_path / "postgres")
    os.kill(int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.count() == 2  # restarted, recovered, reconnected
    store.close()
    assert not server.running()


def test_embedded_postgres_runs_with_facepipe_shared_buffers(tmp_path: Path) -> None:
    """From its very first start (right after initdb) on: the default, or FACEPIPE_PG_SHARED_BUFFERS."""
    import psycopg

    from facepipe.settings import Settings
    from facepipe.stores.embedded_pg import default_shared_buffers

    def shared_buffers_mb(pgdata: Path) -> int:
        with psycopg.connect(embedded_postgres(pgdata).uri()) as conn:
            blocks = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").fetchone()
            return blocks[0] * 8192 // 2**20

    for env, expected in (
        ({}, int(default_shared_buffers().removesuffix("MB"))),
        ({"FACEPIPE_PG_SHARED_BUFFERS": "48MB"}, 48),
    ):
        settings = Settings.from_env({"FACEPIPE_DATA": str(tmp_path / str(expected)), **env})
        store = registry.spec("pgvector", settings).build(settings)
        assert store.count() == 0  # the first start of a new data folder
        pgdata = settings.data / "postgres"
        assert shared_buffers_mb(pgdata) == expected
        store.close()
        embedded_postgres(pgdata).release()
        assert not embedded_postgres(pgdata).running()
    assert 128 <= int(default_shared_buffers().removesuffix("MB")) <= 4096

    with pytest.raises(StoreError, match="not a size"):  # nothing from the environment is pasted into the config
        PgVectorStore(embedded_dir=tmp_path / "bad", shared_buffers="1GB'\nfsync = off").count()


def test_reads_before_any_schema_are_empty(tmp_path: Path) -> None:
    s = QdrantStore(path=tmp_path / "q")
    assert s.count() == 0
    assert s.search(np.zeros(128, np.float32)) == []
    assert s.face_ids_by_image(["x.jpg"]) == {"x.jpg": set()}
    s.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_secrets_stay_out_of_repr_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from facepipe.settings import Settings

    pg = PgVectorStore(dsn="postgresql://facepipe:hunter2@127.0.0.1:1/faces?connect_timeout=2")
    assert "hunter2" not in repr(pg) and "hunter2" not in str(pg)
    with pytest.raises(StoreError) as err:
        pg.count()
    assert "hunter2" not in str(err.value) and "127.0.0.1" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__

    kv = PgVectorStore(dsn="host=127.0.0.1 port=1 password='hunter2' connect_timeout=2")
    assert "hunter2" not in repr(kv)
    with pytest.raises(StoreError) as err:
        kv.count()
    assert "hunter2" not in str(err.value)

    q = QdrantStore(url="http://127.0.0.1:1", api_key="hunter2")
    assert "hunter2" not in repr(q) and "hunter2" not in str(q)
    with pytest.raises(StoreError) as err:
        q.count()
    assert "hunter2" not in str(err.value)

    env = {
        "FACEPIPE_DATA": "/nonexistent",
        "QDRANT_URL": "http://127.0.0.1:1",
        "QDRANT_API_KEY": "hunter2",
        "FACEPIPE_PG_DSN": "postgresql://u:hunter2@127.0.0.1:1/db",
    }
    settings = Settings.from_env(env)
    qs, ps = (registry.spec(name, settings).build(settings) for name in ("qdrant", "pgvector"))
    assert not qs.is_local and not ps.is_local
    assert "hunter2" not in repr(qs) + repr(ps) + str(qs) + str(ps)
    settings = Settings.from_env({"FACEPIPE_DATA": "/nonexistent"})
    qs, ps = (registry.spec(name, settings).build(settings) for name in ("qdrant", "pgvector"))
    assert qs.is_local and ps.is_local


def test_pg_compact_leaves_no_deleted_vector_in_the_table_files(pg_store: PgVectorStore, data_dir: Path) -> None:
    wipe(pg_store)
    rng = np.random.default_rng(15)
    batch = clustered_faces(rng, [f"v/{i}.jpg" for i in range(30)], 2, centers_for(rng, 3))
    pg_store.replace_images(batch)
    needle = batch["v/5.jpg"][0].embedding[:6].astype("<f4").tobytes()

    def files_with_needle() -> list[str]:
        with pg_store.connection() as conn:
            conn.execute("CHECKPOINT")  # the pages reach the files
            rels = conn.execute(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid = 'faces'::regclass "
                "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'faces'::regclass) "
                "OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'faces'::regclass)"
            ).fetchall()
        pgdata = data_dir / "postgres"
        hits = []
        for (rel,) in rels:
            for path in pgdata.glob(rel + "*"):
                if needle in path.read_bytes():
                    hits.append(rel)
        return hits

    assert files_with_needle(), "the probe must see the vector before"
    pg_store.delete_images(["v/5.jpg"])
    report = pg_store.compact()
    assert report["points"] == 58
    assert files_with_needle() == []
    hit = pg_store.search(batch["v/6.jpg"][1].embedding, top_k=1)[0]
    assert hit.face_id == batch["v/6.jpg"][1].face_id
