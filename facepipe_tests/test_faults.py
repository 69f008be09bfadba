"""Faults for real: a store that is down, a run killed with SIGKILL, two runs of the same photos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from facepipe.cli import main
from facepipe_tests.conftest import FR, KNN

DOWN_DSN = "postgresql://facepipe:SuperSecretPw42@127.0.0.1:9/facepipe?connect_timeout=2"
DOWN_QDRANT = "http://127.0.0.1:9"


def index(capsys, expect: int = 0) -> dict:
    assert main(["index", "--json", "--quiet"]) == expect
    captured = capsys.readouterr()
    return json.loads(captured.out)


def status(capsys) -> dict:
    assert main(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_store_that_is_down_fails_clearly_and_a_rerun_heals(env, capsys):
    env.add(KNN / "train/obama/obama.jpg", "a.jpg")
    index(capsys)

    env.add(KNN / "train/biden/biden.jpg", "b.jpg")
    # The Qdrant server unreachable during the export (a separate process: configuration is read at
    # start-up). Not Postgres: with FACEPIPE_PG_DSN the manifest is in that database too, see below.
    down = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "index", "--json", "--quiet"],
        env={
            **os.environ,
            "QDRANT_URL": DOWN_QDRANT,
            "QDRANT_API_KEY": "SuperSecretKey42",
            "FACEPIPE_RETRY_DELAY": "0",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert down.returncode == 1, down.stderr[-2000:]
    report = json.loads(down.stdout)
    (failed,) = report["failed_runs"]
    assert "qdrant_faces: cannot reach the Qdrant" in failed, failed
    assert "SuperSecretKey42" not in down.stdout + down.stderr
    assert report["processed"] == 1  # the faces themselves are safe in the Parquet

    from facepipe.consistency import compare

    library = env.library()
    _, diffs = compare(library.parquet, library.stores())
    assert diffs["qdrant"].images == ["b.jpg"] and diffs["pgvector"].images == []

    healed = index(capsys)
    assert healed["failed_runs"] == [] and healed["processed"] == 0  # no detection: only the export redone
    doc = status(capsys)
    assert doc["parquet"]["faces"] == doc["qdrant"]["faces"] == doc["pgvector"]["faces"] == 2


def test_a_state_postgres_that_is_down_stops_the_index_clearly(env, capsys):
    """With FACEPIPE_PG_DSN the manifest and the people state are in Postgres: down, nothing can be
    decided, so `facepipe index` stops at once with one line naming it (password redacted), exit 1 as for
    a store that is down, and writes nothing."""
    env.add(KNN / "train/obama/obama.jpg", "a.jpg")
    down = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "index", "--json", "--quiet"],
        env={**os.environ, "FACEPIPE_PG_DSN": DOWN_DSN},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert down.returncode == 1, down.stderr[-2000:]  # as for a store that is down
    assert "cannot use the Postgres at postgresql://facepipe:***@127.0.0.1:9" in down.stderr
    assert "manifest state" in down.stderr and "Traceback" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert "SuperSecretPw42" not in down.stdout + down.stderr
    assert not (env.data / "parquet").exists()  # nothing was indexed half way


def _index_process(env, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "facepipe.cli", "index", "--quiet", *extra],
        env={**os.environ, "FACEPIPE_WORKERS": "1", "FACEPIPE_BATCH": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_killed_halfway_is_finished_by_the_next_without_duplicates(env, capsys):
    photos = sorted((KNN / "train").glob("*/*")) + sorted((FR / "tests/test_images").glob("obama*.jpg"))
    for photo in photos:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    proc = _index_process(env)
    status_dir = env.data / "parquet/images"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(status_dir.rglob("*.parquet"))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(status_dir.rglob("*.parquet")))
    assert 3 <= done_before < len(photos), "the kill landed mid-batch"

    report = index(capsys)
    assert report["failed_runs"] == [] and report["errors"] == []
    assert report["processed"] <= len(photos) - done_before + 2  # finished photos are not redone
    for path in (env.data / "parquet").rglob("*.parquet"):
        pq.read_table(path)  # nothing truncated
    assert not list((env.data / "parquet").rglob("*.tmp")), "no half-written files left behind"
    doc = status(capsys)
    assert doc["images"] == len(photos)
    ids = env.parquet.faces(["face_id"]).column("face_id").to_pylist()
    assert len(ids) == len(set(ids)) == doc["qdrant"]["faces"] == doc["pgvector"]["faces"]


def test_two_runs_of_the_same_photos_at_once_leave_no_duplicates(env, capsys):
    for photo in sorted((KNN / "train").glob("*/*"))[:6]:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    index(capsys)  # partitions and stores exist; now both processes redo every photo
    first, second = _index_process(env, "--repair"), None
    second = subprocess.Popen(
        [sys.executable, "-c", _FORCE_ALL],
        env={**os.environ, "FACEPIPE_WORKERS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    ids = env.parquet.faces(["face_id"]).column("face_id").to_pylist()
    doc = status(capsys)
    assert len(ids) == len(set(ids)) == doc["qdrant"]["faces"] == doc["pgvector"]["faces"] == 6


# A forced re-materialization of every partition, as a UI backfill with force=true would run it.
_FORCE_ALL = """
import dagster as dg
from facepipe import settings
from facepipe.defs.instance import ensure_dagster_home, QUIET_CONSOLE
ensure_dagster_home(settings.current())
from facepipe.definitions import defs
with dg.DagsterInstance.get() as instance:
    keys = instance.get_dynamic_partitions("images")
    result = defs.resolve_job_def("index_images").execute_in_process(
        instance=instance,
        run_config={**QUIET_CONSOLE, "ops": {"index_photos": {"config": {"force": True}}}},
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
    assert result.success
"""


def test_an_embedded_postgres_that_cannot_start_stops_the_index_with_its_reason(env, capsys, monkeypatch):
    """`facepipe index` starts the embedded Postgres early, beside Dagster's loading, on another thread.
    A server that will not start (injected: a real one cannot be made to fail on demand) stops the index
    with one line naming it, as before, rather than an error from the other thread; nothing is lost,
    and once it starts the next index does everything."""
    from facepipe.stores import embedded_pg
    from facepipe.stores.base import StoreError

    def refuse(self, patience: float = 0.0) -> None:
        raise StoreError("could not start the embedded Postgres (injected fault)")

    monkeypatch.setenv("FACEPIPE_WORKERS", "2")
    for name in ("obama", "biden"):
        env.add(KNN / f"train/{name}/{name}.jpg", f"{name}.jpg")
    with monkeypatch.context() as fault:
        fault.setattr(embedded_pg.EmbeddedPostgres, "_start", refuse)
        assert main(["index", "--json", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "injected fault" in captured.err and "Traceback" not in captured.err
    report = index(capsys)
    assert report["processed"] == 2 and report["faces"] == 2 and report["failed_runs"] == [], report
    doc = status(capsys)
    assert doc["parquet"]["faces"] == doc["qdrant"]["faces"] == doc["pgvector"]["faces"] == 2
