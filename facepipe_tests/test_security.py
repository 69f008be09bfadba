"""Personal data stays where it belongs: no path outside the images root, no secret in any output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from facepipe.defs.partitions import images_partitions
from facepipe.keys import UnsafeKeyError, path_for_key
from facepipe_tests.conftest import KNN

PG_PASSWORD = "Pg-Secret-7f3a9"
QDRANT_KEY = "Qdrant-Secret-c41e2"


@pytest.mark.parametrize("key", ["../outside.jpg", "/etc/passwd", "a/../../outside.jpg", "%2E%2E/x.jpg", ".."])
def test_keys_reaching_outside_the_root_are_refused(key, tmp_path):
    with pytest.raises(UnsafeKeyError):
        path_for_key(key, tmp_path)
    assert path_for_key("a//b.jpg", tmp_path) == tmp_path.resolve() / "a" / "b.jpg"


def test_a_link_out_of_the_root_is_refused_when_resolved(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "secret.jpg", root / "link.jpg")
    with pytest.raises(UnsafeKeyError, match="outside"):
        path_for_key("link.jpg", root)


def test_a_typed_partition_key_never_opens_a_file_outside(env):
    """Keys can be added by hand in the UI; a run on such a key records an error and reads nothing."""
    shutil.copyfile(KNN / "train/obama/obama.jpg", env.root / "outside.jpg")
    env.add(KNN / "train/biden/biden.jpg", "inside.jpg")
    defs = env.defs()
    with dg.DagsterInstance.get() as instance:
        keys = ["../outside.jpg", "inside.jpg"]
        instance.add_dynamic_partitions(images_partitions.name, keys)
        job = defs.resolve_job_def("index_images")
        for key in keys:
            assert job.execute_in_process(instance=instance, partition_key=key).success
    rows = {r["image_key"]: r for r in env.parquet.images().to_pylist()}
    assert rows["inside.jpg"]["status"] == "ok" and rows["inside.jpg"]["faces"] == 1
    assert rows["../outside.jpg"]["status"] == "error"
    assert "inside the images root" in rows["../outside.jpg"]["reason"]
    assert rows["../outside.jpg"]["sha256"] == ""  # never read
    assert set(env.parquet.face_ids_by_image()) == {"inside.jpg"}


def test_secrets_never_reach_output_logs_metadata_or_files(env):
    env.add(KNN / "train/obama/obama.jpg", "a.jpg")
    secret_env = {
        **os.environ,
        "FACEPIPE_PG_DSN": f"postgresql://facepipe:{PG_PASSWORD}@127.0.0.1:9/facepipe?connect_timeout=2",
        "QDRANT_URL": "http://127.0.0.1:9",
        "QDRANT_API_KEY": QDRANT_KEY,
    }
    # With FACEPIPE_PG_DSN the manifest is in that Postgres too, so `index` stops before any run; the
    # last command keeps Postgres embedded, so a run's export to the down Qdrant fails in Dagster.
    qdrant_only = {k: v for k, v in secret_env.items() if k != "FACEPIPE_PG_DSN"}
    outputs, stdouts = [], []
    for environ, args in (
        (secret_env, ["index", "--json", "--quiet"]),
        (secret_env, ["status", "--json"]),
        (secret_env, ["search", str(KNN / "test/obama1.jpg")]),
        (qdrant_only, ["index", "--json", "--quiet"]),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "facepipe.cli", *args], env=environ, capture_output=True, text=True, timeout=300
        )
        outputs.append(done.stdout + done.stderr)
        stdouts.append(done.stdout)
        assert done.returncode != 0 or args[0] == "status", done.stderr[-1000:]
    assert "cannot use the Postgres at postgresql://facepipe:***@127.0.0.1:9" in outputs[0]
    _, status_out, _, index_out = stdouts
    failed = json.loads(index_out)["failed_runs"]
    assert failed and "127.0.0.1:9" in failed[0], "the exports fail, naming the store"
    assert json.loads(status_out)["qdrant"]["faces"] is None
    for text in outputs:
        assert PG_PASSWORD not in text and QDRANT_KEY not in text
    for folder in (env.data, env.dagster_home):
        found = subprocess.run(["grep", "-rlaF", "-e", PG_PASSWORD, "-e", QDRANT_KEY, str(folder)], capture_output=True)
        assert found.stdout == b"", f"secret written to {found.stdout.decode()}"
