"""Two nodes, simulated on one machine: two `facepipe index` processes with their own local folders and
Dagster homes, sharing only a Postgres (manifest, people state, pgvector) and an S3 server (the photos and
the Parquet), index one library at the same time. Nothing is lost, nothing is there twice, the Parquet
and pgvector hold the same faces, and the state agrees with both.

Qdrant is left out with FACEPIPE_STORES=pgvector: a Qdrant server cannot run on these machines, and the
server client is covered against the same API by the store tests. Dagster's storage (runs, events,
partitions) is either each node's own local instance, or shared too, in the same Postgres through
dagster-postgres (`dagster.yaml` with `storage: postgres`), as in the Helm chart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from facepipe.consistency import compare
from facepipe.library import Library
from facepipe.people import state
from facepipe.settings import Settings
from facepipe_tests.conftest import KNN
from facepipe_tests.shared_pg import pg_dsn, pg_server, with_database  # noqa: F401
from facepipe_tests.shared_s3 import bucket, s3_endpoint, s3_env, upload  # noqa: F401

NODE_PATIENCE = 1200.0
"""Seconds a node may take for the whole library on two cores shared with other test runs: a ceiling."""


def _node_env(tmp: Path, name: str, shared: dict[str, str], dagster_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "QDRANT_", "DAGSTER_", "AWS_"))}
    work = tmp / name
    (work / "dagster").mkdir(parents=True)
    if dagster_url:  # a dagster.yaml of the user's: facepipe leaves it as it is
        # psycopg2 named, as in deploy/dagster.yaml: SQLAlchemy 2.1 would pick psycopg 3, which cannot
        # bind the parameter of Dagster's `NOTIFY run_events, %s`.
        url = dagster_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        (work / "dagster" / "dagster.yaml").write_text(
            f"telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: {json.dumps(url)}\n"
        )
    return {**env, **shared, "FACEPIPE_WORK": str(work), "DAGSTER_HOME": str(work / "dagster")}


@pytest.mark.parametrize("dagster_storage", ["local", "postgres"])
def test_two_nodes_index_one_library_at_once(
    tmp_path: Path,
    pg_server: str,  # noqa: F811
    pg_dsn: str,  # noqa: F811
    s3_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
    dagster_storage: str,
) -> None:
    photos = {f"{p.parent.name}/{p.name}": p for p in sorted((KNN / "train").rglob("*.jpg"))}
    photos |= {f"test/{p.name}": p for p in sorted((KNN / "test").glob("*.jpg"))}
    upload(s3_endpoint, bucket, "photos", photos)
    shared = {
        **s3_env(s3_endpoint),
        "FACEPIPE_PG_DSN": pg_dsn,
        "FACEPIPE_IMAGES": f"s3://{bucket}/photos",
        "FACEPIPE_DATA": f"s3://{bucket}/lib",
        "FACEPIPE_STORES": "pgvector",
        "FACEPIPE_WORKERS": "1",
        "FACEPIPE_DETECTOR": "hog",
        "FACEPIPE_BATCH": "3",  # several runs per node, so the two nodes' runs interleave
    }
    dagster_url = None
    if dagster_storage == "postgres":
        name = urlsplit(pg_dsn).path.strip("/") + "_dagster"
        dagster_url = with_database(pg_server, name)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    nodes = {name: _node_env(tmp_path, name, shared, dagster_url) for name in ("node_a", "node_b")}
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "facepipe.cli", "index", "--quiet"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, env in nodes.items()
    }
    outputs = {}
    for name, proc in procs.items():
        try:
            outputs[name] = proc.communicate(timeout=NODE_PATIENCE)[0]
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            pytest.fail(f"{name} did not finish within {NODE_PATIENCE:.0f}s")
    seconds = time.monotonic() - started
    for name, out in outputs.items():
        (tmp_path / f"{name}.log").write_text(out)
    assert {name: proc.returncode for name, proc in procs.items()} == dict.fromkeys(procs, 0), outputs
    print(f"two nodes indexed {len(photos)} photos in {seconds:.1f}s")
    for name, out in outputs.items():
        print(f"{name}: {out.strip().splitlines()[-1] if out.strip() else ''}")

    library = Library(Settings.from_env(nodes["node_a"]))
    try:
        version = library.settings.extract.model_version
        # Nothing lost: every photo is in the shared manifest, indexed and exported, and in the Parquet.
        assert library.manifest.keys() == sorted(photos)
        assert library.manifest.pending(version) == [] and library.manifest.unexported("pgvector") == []
        assert library.parquet.image_keys() == set(photos)
        faces = library.parquet.faces(["face_id", "image_key", "person_id"]).to_pylist()
        ids = [f["face_id"] for f in faces]
        # Nothing twice: each face once in the Parquet, and pgvector holds exactly the Parquet's faces.
        assert len(ids) == len(set(ids)) >= len(photos)
        total, diffs = compare(library.parquet, library.stores())
        assert total == len(ids) and diffs["pgvector"].images == []
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT count(*), count(DISTINCT face_id) FROM public.faces").fetchone() == (
                len(ids),
                len(ids),
            )
        # The people state agrees: the same faces, and the person ids the Parquet carries.
        with state.reading(library.people.db) as st:
            assert set(st.image_of_faces()) == set(ids)
            assert st.person_of_faces() == {f["face_id"]: f["person_id"] for f in faces if f["person_id"]}
        assert library.people.list(), "the sample photos hold people seen twice"
    finally:
        library.close()
    # Either node, run again, finds nothing to do: the state both wrote is one state.
    again = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "index", "--quiet"],
        env=nodes["node_b"],
        capture_output=True,
        text=True,
        timeout=NODE_PATIENCE,
    )
    assert again.returncode == 0 and "Nothing to do" in again.stdout, again.stdout + again.stderr
    if dagster_url:  # both nodes' runs are in the one shared Dagster storage
        with psycopg.connect(dagster_url) as conn:
            runs = conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        assert dict(runs).get("SUCCESS", 0) >= 2 and set(dict(runs)) == {"SUCCESS"}, runs
