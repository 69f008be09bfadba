"""Photos and Parquet in object storage (`s3://bucket/prefix`), against a real S3 API server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as ds
import pytest

from facepipe import settings
from facepipe.cli import main
from facepipe.faces.records import Face, ImageRecord, face_id
from facepipe.library import Library
from facepipe.objects import s3_filesystem
from facepipe.settings import Settings, SettingsError
from facepipe.stores.parquet import ParquetStore
from facepipe_tests.conftest import KNN
from facepipe_tests.shared_s3 import bucket, client, object_names, s3_endpoint, s3_env, upload  # noqa: F401


def _faces(key: str, n: int) -> list[Face]:
    rng = np.random.default_rng(len(key) + n)
    return [
        Face(
            face_id=face_id(key, "sha-1", (i, i + 9, i + 9, i)),
            image_key=key,
            sha256="sha-1",
            top=i,
            right=i + 9,
            bottom=i + 9,
            left=i,
            score=None,
            detector="hog",
            embedding=rng.normal(0, 0.1, 128).astype(np.float32),
            crop=b"jpeg",
            model_version="v1",
        )
        for i in range(n)
    ]


def test_settings_take_bucket_urls_and_keep_the_secret_out_of_repr(tmp_path: Path) -> None:
    env = {
        "FACEPIPE_DATA": "s3://lib-bucket/some/prefix/",
        "FACEPIPE_IMAGES": "s3://photos-bucket/albums",
        "FACEPIPE_WORK": str(tmp_path / "work"),
        "AWS_SECRET_ACCESS_KEY": "hunter2",
        "AWS_ACCESS_KEY_ID": "AKIA-test",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    got = Settings.from_env(env)
    assert got.data_url == "s3://lib-bucket/some/prefix" and got.data == tmp_path / "work"
    assert got.images == "s3://photos-bucket/albums" and got.s3.endpoint == "http://127.0.0.1:9"
    assert "hunter2" not in repr(got) and "AKIA" not in repr(got)
    with pytest.raises(SettingsError, match="s3://bucket/prefix"):
        Settings.from_env({"FACEPIPE_IMAGES": "s3:///no-bucket"})
    with pytest.raises(SettingsError, match=r"no \. or \.\."):
        Settings.from_env({"FACEPIPE_DATA": "s3://b/../other"})


def test_parquet_in_a_bucket_is_written_whole_listed_and_deleted(s3_endpoint: str, bucket: str) -> None:  # noqa: F811
    fs = s3_filesystem(Settings.from_env(s3_env(s3_endpoint)).s3)
    store = ParquetStore(f"s3://{bucket}/lib/parquet", fs=fs)
    for key, n in [("a/1.jpg", 2), ("b.jpg", 1), ("none.jpg", 0)]:
        store.write(ImageRecord(key, "sha-1", "ok", faces=_faces(key, n)))
    names = object_names(s3_endpoint, bucket)
    assert not [n for n in names if n.endswith(".tmp")]  # every temp object was published and removed
    assert "lib/parquet/faces/a/1.jpg.parquet" in names and "lib/parquet/images/none.jpg.parquet" in names
    assert store.image_keys() == {"a/1.jpg", "b.jpg", "none.jpg"}
    assert {k: len(v) for k, v in store.face_ids_by_image().items()} == {"a/1.jpg": 2, "b.jpg": 1}
    assert sorted(store.face_file_stats()) == ["a/1.jpg.parquet", "b.jpg.parquet"]
    # The README's DuckDB one-liner for a bucket (through pyarrow's S3 filesystem, no DuckDB extension):
    faces = ds.dataset(f"{bucket}/lib/parquet/faces", filesystem=fs, format="parquet")  # noqa: F841
    counts = duckdb.sql("SELECT image_key, count(*) FROM faces GROUP BY ALL ORDER BY 1").fetchall()
    assert counts == [("a/1.jpg", 2), ("b.jpg", 1)]
    loaded = store.load_faces(["a/1.jpg"])["a/1.jpg"]
    assert [f.face_id for f in loaded] == [f.face_id for f in _faces("a/1.jpg", 2)]
    assert np.allclose(loaded[0].embedding, _faces("a/1.jpg", 2)[0].embedding)
    assert store.read_image("b.jpg")["faces"] == 1 and store.read_image("never.jpg") is None
    store.write(ImageRecord("b.jpg", "sha-2", "ok", faces=[]))  # no faces any more: the faces object goes
    assert store.read_faces("b.jpg").num_rows == 0
    store.delete("a/1.jpg")
    assert store.image_keys() == {"b.jpg", "none.jpg"} and store.faces().num_rows == 0
    assert store.sweep_temp_files() == 0


def _photos() -> dict[str, Path]:
    return {f"{p.parent.name}/{p.name}": p for p in sorted((KNN / "train").rglob("*.jpg"))}


def test_index_photos_from_a_bucket_into_parquet_in_a_bucket(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = _photos()
    upload(s3_endpoint, bucket, "photos", photos)
    for name, value in {
        **s3_env(s3_endpoint),
        "FACEPIPE_IMAGES": f"s3://{bucket}/photos",
        "FACEPIPE_DATA": f"s3://{bucket}/lib",
        "FACEPIPE_WORK": str(tmp_path / "work"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "FACEPIPE_STORES": "pgvector",
        "FACEPIPE_WORKERS": "1",
        "FACEPIPE_DETECTOR": "hog",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("QDRANT_URL", "FACEPIPE_PG_DSN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dagster").mkdir()
    assert main(["index", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == len(photos) and doc["errors"] == []
    assert doc["pgvector"]["faces"] == doc["parquet"]["faces"] >= len(photos)
    parquet_objects = object_names(s3_endpoint, bucket, "lib/parquet/images/")
    assert parquet_objects == sorted(f"lib/parquet/images/{k}.parquet" for k in photos)
    assert not list((tmp_path / "work").glob(".photos-*"))  # the staged copies of the batch are gone
    # A replaced object (new bytes, new LastModified) is indexed again; a deleted one is erased.
    changed, gone = sorted(photos)[:2]
    upload(s3_endpoint, bucket, "photos", {changed: KNN / "test" / "obama1.jpg"})
    client(s3_endpoint).delete_object(Bucket=bucket, Key=f"photos/{gone}")
    assert main(["index", "--quiet", "--confirm-deletions"]) == 0
    library = Library.open(settings.reload())
    assert sorted(library.parquet.image_keys()) == sorted(set(photos) - {gone})
    assert library.parquet.read_image(changed)["sha256"] != library.parquet.read_image(sorted(photos)[2])["sha256"]
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["images"] == len(photos) - 1 and after["pgvector"]["faces"] == after["parquet"]["faces"]
    # The HTTP API shows a photo from the bucket, and refuses a key reaching out of the prefix.
    from fastapi.testclient import TestClient

    from facepipe.api import create_app

    with TestClient(create_app("pgvector", library=library)) as web:
        shown = web.get(f"/api/images/{changed}")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert web.get(f"/api/images/{gone}").status_code == 404
        assert web.get("/api/images/a/%2E%2E/%2E%2E/secret.jpg").status_code == 400
