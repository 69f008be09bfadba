"""The manifest and the people state in Postgres (`FACEPIPE_PG_DSN`): the same answers as SQLite, and
concurrent writers in separate processes lose no update and duplicate nothing."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import psycopg
import pytest

from facepipe import settings
from facepipe.library import Library
from facepipe.manifest import SCHEMA, Manifest
from facepipe.people import state
from facepipe.statedb import PostgresDB, SqliteDB, pg_sql
from facepipe_tests.shared_pg import manifest_writer, people_writer, pg_dsn, pg_server  # noqa: F401

WRITER_PATIENCE = 600.0
"""Seconds a writer process may take (two busy cores shared with other test runs): a ceiling, not a pace."""


def _exercise(manifest: Manifest, photos: Path) -> dict:
    """Every manifest operation once, on a real folder; returns what each answered."""
    out: dict = {}
    plan = manifest.diff()
    out["new"] = list(plan.new)
    manifest.apply(plan)
    out["pending"] = manifest.pending("v1")
    manifest.mark_indexed_many(
        [(k, plan.stats[k][2], "v1", "error" if i == 0 else "ok") for i, k in enumerate(plan.new)]
    )
    out["pending_after"] = manifest.pending("v1")
    out["needs"] = manifest.needs_indexing([*plan.new, "nope.jpg"], "v1")
    out["errors"] = manifest.error_keys()
    out["unexported"] = manifest.unexported("pgvector")
    manifest.mark_exported("pgvector", plan.new[:2])
    out["unexported_after"] = manifest.unexported("pgvector")
    manifest.reset_exports(plan.new[:1], "pgvector")
    out["unexported_reset"] = manifest.unexported("pgvector")
    manifest.forget_images(plan.new[-1:])
    manifest.forget_images(plan.new[-1:])  # twice: no duplicate
    manifest.forget_faces(["f1", "f1", "f2"])
    out["forgotten_faces"] = sorted(manifest.forgotten_face_ids())
    out["after_forget"] = manifest.diff().new
    out["remembered"] = manifest.remember_images([*plan.new[-1:], "never.jpg"])
    out["after_remember"] = manifest.diff().new
    (photos / plan.new[0]).write_bytes(b"other bytes")
    changed = manifest.diff()
    out["changed"] = changed.changed
    manifest.apply(changed)
    out["pending_changed"] = manifest.pending("v1")
    (photos / plan.new[1]).unlink()
    deleted = manifest.diff()
    out["deleted"] = deleted.deleted
    manifest.apply(deleted)
    manifest.remove(plan.new[2:3])
    out["keys"] = manifest.keys()
    return out


def _photos(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(5):
        (root / f"{i}.jpg").write_bytes(f"photo {i}".encode())
    return root


def test_manifest_answers_the_same_in_postgres_and_sqlite(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    lite = _exercise(Manifest(tmp_path / "manifest.sqlite", _photos(tmp_path / "a")), tmp_path / "a")
    pg = _exercise(Manifest(PostgresDB(pg_dsn, SCHEMA, name="manifest"), _photos(tmp_path / "b")), tmp_path / "b")
    assert lite["new"] == [f"{i}.jpg" for i in range(5)]
    assert lite["errors"] == ["0.jpg"] and lite["pending_after"] == []
    assert pg == lite
    with psycopg.connect(pg_dsn) as conn:  # in its own schema, not beside the pgvector store's tables
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'facepipe_manifest'"
            )
        }
    assert {"files", "exports", "forgotten_images", "forgotten_faces"} <= tables


def test_schema_creation_is_idempotent_and_mtimes_fit(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    from facepipe import statedb

    for _ in range(2):
        statedb._ready.clear()  # as a fresh process would: run the DDL again over the existing tables
        manifest = Manifest(PostgresDB(pg_dsn, SCHEMA, name="manifest"), _photos(tmp_path / f"p{_}"))
    plan = manifest.diff()
    manifest.apply(plan)
    stats = {k: v[:2] for k, v in plan.stats.items()}
    with psycopg.connect(pg_dsn) as conn:
        rows = dict(
            ((k, (s, m)) for k, s, m in conn.execute("SELECT key, size, mtime_ns FROM facepipe_manifest.files"))
        )
    assert rows == stats and all(m > 2**31 for _, m in rows.values())  # nanoseconds need 64 bits


def test_sqlite_only_statements_are_refused_for_postgres() -> None:
    with pytest.raises(ValueError, match="SQLite-only"):
        pg_sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
    assert pg_sql("SELECT a FROM t WHERE b LIKE 'x%' AND c = ?") == "SELECT a FROM t WHERE b LIKE 'x%%' AND c = %s"


def _run_pair(target, args_a: tuple, args_b: tuple) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, start)) for args in (args_a, args_b)]
    for proc in procs:
        proc.start()
    start.set()  # both are connected (or connecting); they go at once
    for proc in procs:
        proc.join(WRITER_PATIENCE)
    codes = [proc.exitcode for proc in procs]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    assert codes == [0, 0], f"writer exit codes {codes}"


def test_two_processes_write_the_same_manifest_rows(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    keys = [f"album/{i:04d}.jpg" for i in range(300)]
    _run_pair(
        manifest_writer,
        (pg_dsn, str(tmp_path), keys, "qdrant", 15),
        (pg_dsn, str(tmp_path), keys, "pgvector", 15),
    )
    manifest = Manifest(PostgresDB(pg_dsn, SCHEMA, name="manifest"), tmp_path)
    assert manifest.keys() == keys  # one row per photo, none lost
    assert manifest.pending("v1") == []
    assert manifest.unexported("qdrant") == [] and manifest.unexported("pgvector") == []  # neither export lost
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM facepipe_manifest.exports").fetchone()[0] == 2 * len(keys)


def test_two_processes_add_people_without_lost_updates(pg_dsn: str) -> None:  # noqa: F811
    rounds = 40
    _run_pair(people_writer, (pg_dsn, "a", rounds), (pg_dsn, "b", rounds))
    with state.reading(state.postgres_db(pg_dsn)) as st:
        persons = st.persons()
        counter = st.db.execute("SELECT value FROM meta WHERE key = 'next_person'").fetchone()[0]
    ids = sorted(p.person_id for p in persons)
    # The person counter is read and written in each transaction: a lost update would give two writers
    # the same id (one transaction failing) or leave a number unused.
    assert ids == sorted(f"p{n}" for n in range(1, 2 * rounds + 1))
    assert int(counter) == 2 * rounds + 1
    assert all(p.faces == 1 for p in persons)


def test_library_uses_postgres_when_a_dsn_is_set(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("FACEPIPE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FACEPIPE_PG_DSN", pg_dsn)
    library = Library(settings.reload(), _photos(tmp_path / "photos"))
    assert isinstance(library.manifest.db, PostgresDB) and isinstance(library.people.db, PostgresDB)
    library.manifest.apply(library.manifest.diff())
    assert len(library.manifest.keys()) == 5
    assert not (tmp_path / "data" / "manifest.sqlite").exists()
    monkeypatch.delenv("FACEPIPE_PG_DSN")
    local = Library(settings.reload(), tmp_path / "photos")
    assert isinstance(local.manifest.db, SqliteDB) and local.manifest.keys() == []
    assert os.path.exists(tmp_path / "data" / "manifest.sqlite")


def test_an_embedded_library_keeps_its_state_when_a_dsn_is_set(
    env,
    pg_dsn: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Indexed and named with SQLite, then FACEPIPE_PG_DSN: the manifest and the people (names, ids) are
    copied into Postgres once, so nothing is indexed again and no name is lost; a second library's
    SQLite never mixes into a database that already holds a state."""
    from facepipe.cli import main
    from facepipe_tests.conftest import KNN

    monkeypatch.setenv("FACEPIPE_DETECTOR", "hog")
    monkeypatch.setenv("FACEPIPE_STORES", "pgvector")
    for folder in ("obama", "biden"):
        for photo in sorted((KNN / "train" / folder).iterdir()):
            env.add(photo, f"{folder}/{photo.name}")
    assert main(["index", "--quiet"]) == 0
    before = env.library()
    persons = before.people.list()
    assert persons, "two photos each of two people make persons"
    before.people.name(persons[0].person_id, "Barack")
    keys, named = before.manifest.keys(), before.people.list()
    with state.reading(before.people.db) as st:
        next_face = st.db.execute("SELECT max(id) FROM faces").fetchone()[0] + 1
    before.close()

    monkeypatch.setenv("FACEPIPE_PG_DSN", pg_dsn)
    capsys.readouterr()
    assert main(["index", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["processed"] == 0 and report["failed_runs"] == []  # the manifest came along: no extraction
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # pgvector moved to that server: exported there again
    assert doc["pgvector"]["faces"] == doc["parquet"]["faces"] > 0
    after = env.library()
    assert isinstance(after.manifest.db, PostgresDB) and after.manifest.keys() == keys
    assert after.people.list() == named and after.people.get(persons[0].person_id).name == "Barack"
    with pytest.raises(RuntimeError), state.writing(after.people.db) as st:
        # The copied ids continue (no face row id given twice); rolled back, the state stays as copied.
        assert st.add_face("new-face", "new.jpg", np.zeros(128, np.float32)) == next_face
        raise RuntimeError("roll back")
    assert after.people.list() == named
    with psycopg.connect(pg_dsn) as conn:
        imports = conn.execute("SELECT count(*) FROM facepipe_people.facepipe_imports").fetchone()[0]
    assert imports == 1
    after.close()
