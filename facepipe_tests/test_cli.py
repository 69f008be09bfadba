"""`facepipe index` end to end, odd file names, and the README's analytics one-liners."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
import pytest

from facepipe.cli import main
from facepipe.defs.partitions import images_partitions
from facepipe.keys import relpath_for_key
from facepipe_tests.conftest import FR, KNN

ODD_NAMES = [
    "with space.jpg",
    "Steve (1).jpg",
    "ünïcødé/名前.jpg",
    "comma,name.jpg",
    "[bracket].jpg",
    "wait... what.jpg",
    "100% real.jpg",
    "x'; DROP TABLE faces; --.jpg",
]


def index_json(capsys, *args: str) -> dict:
    assert main(["index", "--json", "--quiet", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_index_then_nothing_to_do(env, capsys):
    env.add(FR / "examples/two_people.jpg")
    env.add(FR / "tests/test_images/obama.jpg")
    first = index_json(capsys)
    assert (first["processed"], first["faces"], first["errors"], first["new"]) == (2, 3, [], 2)
    second = index_json(capsys)
    assert (second["processed"], second["new"], second["changed"]) == (0, 0, 0)
    assert main(["index", "--quiet"]) == 0
    assert "Nothing to do: 2 images unchanged" in capsys.readouterr().out


def test_index_takes_a_folder_argument_and_reports_bad_files(env, capsys, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("not a photo, not even by name")
    (folder / "obama.jpg").write_bytes((KNN / "train/obama/obama.jpg").read_bytes())
    report = index_json(capsys, str(folder))
    assert report["images"] == 2 and report["faces"] == 1
    assert report["errors"] == [{"image_key": "broken.jpg", "reason": "not an image Pillow can identify"}]


def test_bad_folder_is_a_usage_error(env, capsys, tmp_path):
    assert main(["index", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_odd_file_names_round_trip_through_dagster(env, capsys):
    for name in ODD_NAMES:
        env.add(FR / "examples/obama_small.jpg", name)
    report = index_json(capsys)
    assert report["processed"] == len(ODD_NAMES) and report["errors"] == []
    with dg.DagsterInstance.get() as instance:
        keys = instance.get_dynamic_partitions(images_partitions.name)
        assert sorted(str(relpath_for_key(k)) for k in keys) == sorted(ODD_NAMES)
        assert set(instance.get_materialized_partitions(dg.AssetKey("faces"))) == set(keys)
    import duckdb

    rows = duckdb.sql(f"SELECT image_key FROM read_parquet('{env.data}/parquet/faces/**/*.parquet')").fetchall()
    assert sorted(str(relpath_for_key(k)) for (k,) in rows) == sorted(ODD_NAMES)


def test_deleting_a_photo_and_reindexing_removes_its_faces(env, capsys):
    env.add(FR / "examples/two_people.jpg")
    env.add(FR / "tests/test_images/obama.jpg")
    index_json(capsys)
    (env.images / "two_people.jpg").unlink()
    report = index_json(capsys)
    assert report["deleted"] == 1 and report["images"] == 1
    import duckdb

    keys = duckdb.sql(f"SELECT DISTINCT image_key FROM '{env.data}/parquet/faces/**/*.parquet'").fetchall()
    assert keys == [("obama.jpg",)]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_readme_analytics_one_liners(env, capsys, engine):
    env.add(FR / "examples/two_people.jpg")
    env.add(FR / "tests/test_images/obama.jpg")
    index_json(capsys)
    # The same one-liners as in the README, run as a user would, from the project folder.
    code = {
        "duckdb": 'import duckdb; duckdb.sql("SELECT image_key, count(*) AS faces FROM '
        "'data/parquet/faces/**/*.parquet' GROUP BY ALL ORDER BY 1\").show()",
        "polars": "import polars as pl; print(pl.read_parquet('data/parquet/faces/**/*.parquet')"
        ".group_by('image_key').len().sort('image_key'))",
    }[engine]
    out = subprocess.run([sys.executable, "-c", code], cwd=env.root, capture_output=True, text=True, check=True).stdout
    assert "obama.jpg" in out and "two_people.jpg" in out
    assert "│ 2" in out.replace("┆", "│") or "2 │" in out


def test_link_loops_and_dangling_links_are_skipped_not_fatal(env, capsys):
    env.add(FR / "tests/test_images/obama.jpg")
    (env.images / "loop1.jpg").symlink_to(env.images / "loop2.jpg")
    (env.images / "loop2.jpg").symlink_to(env.images / "loop1.jpg")
    (env.images / "dangling.jpg").symlink_to(env.images / "gone.jpg")
    report = index_json(capsys)
    assert (report["images"], report["processed"], report["errors"]) == (1, 1, [])
    assert index_json(capsys)["processed"] == 0  # and the next run is not wedged either
