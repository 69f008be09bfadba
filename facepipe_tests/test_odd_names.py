"""Any name the file system allows: 255-byte folders, names too long for a temporary file beside
them, bytes that are not UTF-8, link loops. The rest of the folder reaches every store, the odd
photos work, and removing them afterwards leaves a library that indexes cleanly."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from facepipe.api.app import create_app
from facepipe.cli import main
from facepipe.compaction import Compactor
from facepipe.keys import key_for_relpath, path_for_key, relpath_for_key
from facepipe.stores.parquet import NAME_MAX
from facepipe_tests.conftest import FR, KNN
from facepipe_tests.ui_helpers import free_port

NORMAL = {
    "obama.jpg": KNN / "train/obama/obama.jpg",
    "biden.jpg": KNN / "train/biden/biden.jpg",
    "people/two.jpg": FR / "examples/two_people.jpg",
    "people/obama2.jpg": FR / "examples/obama2.jpg",
    "alex.png": FR / "examples/alex-lacamoire.png",
}
LONG_FOLDER = "d" * NAME_MAX  # the longest folder name ext4 allows
LONG_NAME = "n" * 202 + ".jpg"  # 206 bytes: fits the file system, not with `.parquet` and a temp suffix
LATIN1 = os.fsdecode(b"latin1_\xe9t\xe9.jpg")  # as os.scandir names it: surrogates for the bytes


@contextmanager
def serving(app) -> Iterator[str]:
    """The app behind a real HTTP server (the test client decodes a path twice: `%25E9` would reach it as é)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.1)
        assert server.started, "the server did not start in 60 s"
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(60)


def index_json(capsys) -> dict:
    code = main(["index", "--json", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    return json.loads(out.out)


@pytest.mark.parametrize(
    "raw", [b"latin1_\xe9t\xe9.jpg", b"a/\xff\xfe%41,[...].jpg", "ünïcødé/名前.jpg".encode(), b"\xe2\x82\xc3\xa9.jpg"]
)
def test_keys_of_non_utf8_names_are_utf8_and_give_back_the_bytes(raw, tmp_path):
    key = key_for_relpath(os.fsdecode(raw))
    key.encode()  # storable in SQLite, JSON, Dagster
    assert os.fsencode(str(relpath_for_key(key))) == raw
    assert os.fsencode(path_for_key(key, tmp_path)) == os.fsencode(tmp_path.resolve()) + b"/" + raw


def test_long_and_non_utf8_names_and_loops_never_wedge_the_library(env, capsys):
    for name, source in NORMAL.items():
        env.add(source, name)
    odd = {
        f"{LONG_FOLDER}/obama.jpg": KNN / "train/obama/obama.jpg",
        LONG_NAME: KNN / "train/biden/biden.jpg",
        LATIN1: FR / "examples/obama_small.jpg",
    }
    for name, source in odd.items():
        env.add(source, name)
    broken = os.fsdecode(b"broken_\xff.jpg")
    (env.images / broken).write_bytes(b"not a photo")
    (env.images / "loop1.jpg").symlink_to(env.images / "loop2.jpg")
    (env.images / "loop2.jpg").symlink_to(env.images / "loop1.jpg")
    odd_keys = {key_for_relpath(name) for name in odd}

    report = index_json(capsys)
    assert report["failed_runs"] == []
    assert report["errors"] == [{"image_key": "broken_%FF.jpg", "reason": "not an image Pillow can identify"}]
    assert (report["images"], report["processed"]) == (9, 9)
    library = env.library()
    in_parquet = library.parquet.face_ids_by_image()
    assert set(in_parquet) == set(map(key_for_relpath, NORMAL)) | odd_keys  # every photo has its faces
    for name, store in library.stores().items():
        assert store.face_ids_by_image() == in_parquet, name
    for key in odd_keys:
        path = library.parquet.faces_path(key)
        assert len(os.fsencode(path.name)) <= NAME_MAX - 46 and path.exists()
        assert library.parquet.image_key_of_face_file(path.relative_to(library.parquet.faces_dir).as_posix()) == key
        assert library.parquet.read_image(key)["status"] == "ok"
    compacted = Compactor(library.parquet).folder
    statuses = env.parquet.images(["image_key"]).column("image_key").to_pylist()
    assert sorted(statuses) == sorted([*in_parquet, "broken_%FF.jpg"])  # one status row each, keys read back
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["errors"] == [{"image_key": "broken_%FF.jpg", "reason": "not an image Pillow can identify"}]
    assert status["images"] == 9 and status["parquet"]["faces"] == status["pgvector"]["faces"] == len(
        [f for ids in in_parquet.values() for f in ids]
    )

    with serving(create_app("qdrant", library=env.library())) as base:
        for key in odd_keys:
            assert httpx.get(f"{base}/api/images/{quote(key)}").status_code == 200, key  # quoted as the page does
        assert httpx.get(f"{base}/api/images/loop1.jpg").status_code == 404

    for name in [*odd, broken]:
        (env.images / name).unlink()
    again = index_json(capsys)
    assert again["failed_runs"] == [] and again["deleted"] == 4 and again["images"] == 5
    library = env.library()
    assert set(library.parquet.face_ids_by_image()) == set(map(key_for_relpath, NORMAL))
    for name, store in library.stores().items():
        assert set(store.face_ids_by_image()) == set(map(key_for_relpath, NORMAL)), name
    assert not any(library.parquet.faces_path(key).exists() for key in odd_keys)
    assert sorted(env.parquet.image_keys()) == sorted(map(key_for_relpath, NORMAL))
    import duckdb

    shards = duckdb.sql(f"SELECT DISTINCT image_key FROM read_parquet('{compacted}/images-*.parquet')").fetchall()
    assert {k for (k,) in shards} == set(map(key_for_relpath, NORMAL))
    assert index_json(capsys)["processed"] == 0  # and the next run has nothing left to trip on


def test_the_parquet_check_finds_the_files_of_odd_names_where_they_are_written(tmp_path):
    """`rel_paths` and `file_stats` (the sensor's and the index's Parquet check, every photo, every tick)
    take string shortcuts: they must name the files `write` puts anywhere, odd names included."""
    from facepipe.faces.records import ImageRecord
    from facepipe.stores.parquet import ParquetStore

    store = ParquetStore(tmp_path / "parquet")
    names = ["a.jpg", "d/é 日 %.jpg", f"{LONG_FOLDER}/x.jpg", LONG_NAME, f"d/{LATIN1}", "a #?&+:~.jpg", "x/.d/y.jpg"]
    keys = [key_for_relpath(name) for name in names] + ["../outside.jpg", "/abs.jpg"]
    for key in keys:
        store.write(ImageRecord(key, "0" * 64, "error", reason="unreadable"))
    stats = store.file_stats()
    for key in keys:
        faces_rel, status_rel = store.rel_paths(key)
        assert status_rel in stats, (key, status_rel, sorted(stats))
        assert faces_rel == store.faces_path(key).relative_to(store.base).as_posix(), key
        assert (faces_rel in stats) == store.faces_path(key).exists(), key
    assert store.rel_paths(".") == ("faces/.parquet", "images/.parquet")  # as the general path names it
