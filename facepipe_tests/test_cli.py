"""`facepipe index` end to end, odd file names, and the README's analytics one-liners."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

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


def test_the_time_index_reports_is_the_commands(env):
    """With two workers the photos are extracted while Dagster loads, before the runs: the seconds
    `facepipe index` reports cover the whole command, not only its runs."""
    for photo in sorted((KNN / "train").glob("*/*.jp*g"))[:4]:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "index", "--json", "--quiet"],
        env={**os.environ, "FACEPIPE_WORKERS": "2"},
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - began
    report = json.loads(done.stdout)
    assert report["processed"] == 4 and not report["errors"]
    assert 0.5 * wall <= report["seconds"] <= wall, (report["seconds"], wall)


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


# ---------------------------------------------------------------------------------------------
# CLI polish: --version, defaults in help, input checks, --json like the API, dry runs, lists, ports


@pytest.fixture(scope="module")
def knn_library(tmp_path_factory):
    """knn `train/` indexed with HOG (shared read-only with test_people and test_api)."""
    from facepipe_tests.conftest import knn_train

    with pytest.MonkeyPatch.context() as mp:
        yield knn_train(tmp_path_factory, mp)


def run_json(capsys, *args: str):
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"facepipe {version('facepipe')}"


def test_every_flag_has_help_showing_its_default():
    from facepipe.cli import build_parser

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    checked = 0
    for parser in parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog} {action.dest}: no help text"
            if action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in text, f"{parser.prog} {action.dest}: default not shown"
                checked += 1
    assert checked >= 8  # top-k, stores, max-distance, ports, ...


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "x.jpg", "--top-k", "0"], "--top-k: must be 1 or more (got 0)"),
        (["search", "x.jpg", "--top-k", "ten"], "--top-k: not a whole number: 'ten'"),
        (["search", "x.jpg", "--max-distance", "-1"], "--max-distance: a distance is 0 or more"),
        (["serve", "--port", "0"], "--port: a port is 1 to 65535 (got 0)"),
        (["serve", "--port", "65536"], "--port: a port is 1 to 65535 (got 65536)"),
        (["ui", "--port", "-3"], "--port: a port is 1 to 65535 (got -3)"),
    ],
)
def test_bad_flag_values_are_refused_with_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["search", "person"])
def test_a_folder_given_as_the_query_photo_is_a_clear_error(env, capsys, command):
    assert main([command, str(env.images)]) == 2
    err = capsys.readouterr().err
    assert f"{env.images} is a folder: give one photo" in err and err.count("\n") == 1


def test_search_and_person_json_carry_the_http_api_fields(knn_library, capsys):
    from fastapi.testclient import TestClient

    from facepipe import settings
    from facepipe.api import create_app
    from facepipe.library import Library

    photo = KNN / "test/obama1.jpg"
    people = Library.open(settings.reload()).people
    obama = next(p for p in people.list() if p.image_keys[0].startswith("obama/"))
    people.name(obama.person_id, "Barack Obama")
    try:
        cli_search = run_json(capsys, "search", str(photo))
        cli_person = run_json(capsys, "person", str(photo))
        with TestClient(create_app("qdrant", library=Library.open(settings.reload()))) as client:
            api_search = client.post("/api/search", files={"image": (photo.name, photo.read_bytes())}).json()
            api_person = client.post("/api/person", files={"image": (photo.name, photo.read_bytes())}).json()
    finally:
        people.name(obama.person_id, None)
    assert len(cli_search) == len(api_search["faces"]) == 1
    for cli_face, api_face in zip(cli_search, api_search["faces"], strict=True):
        assert [{k: v for k, v in m.items() if k != "query_box"} for m in cli_face] == api_face["matches"]
        assert all(m["query_box"] == api_face["box"] for m in cli_face)
    assert cli_search[0][0]["name"] == "Barack Obama" and cli_search[0][0]["person_id"] == obama.person_id
    assert [{"image_key": p["image_key"], "distance": p["distance"]} for p in cli_person] == api_person["photos"]
    assert {(p["person_id"], p["name"]) for p in cli_person} == {(api_person["person_id"], api_person["name"])}
    assert api_person["name"] == "Barack Obama"


def test_no_face_found_is_one_message(knn_library, capsys, tmp_path):
    from PIL import Image

    blank = tmp_path / "wall.jpg"
    Image.new("RGB", (320, 240), (128, 128, 120)).save(blank)
    outputs = {}
    for command in ("search", "person"):
        assert main([command, str(blank)]) == 0
        outputs[command] = capsys.readouterr().out
        assert main([command, str(blank), "--json"]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out) == [] and captured.err == outputs[command]
    assert outputs["search"] == outputs["person"] == f"No face found in {blank}.\n"


def test_forget_dry_run_lists_and_erases_nothing(knn_library, capsys):
    before = run_json(capsys, "status")
    people = run_json(capsys, "people")
    keys = people[0]["image_keys"][:2]
    assert main(["forget", "--dry-run", *keys]) == 0
    out = capsys.readouterr().out
    assert f"Would forget {len(keys)} photos:" in out and all(k in out for k in keys)
    assert "Nothing was erased" in out
    assert main(["forget", "--dry-run", "--person", people[0]["person_id"]]) == 0
    out = capsys.readouterr().out
    assert f"{people[0]['faces']} faces in {len(people[0]['image_keys'])} photos" in out
    assert all(k in out for k in people[0]["image_keys"])
    assert main(["forget", "--dry-run", "no/such.jpg"]) == 2
    assert "unknown image key(s): no/such.jpg" in capsys.readouterr().err
    assert run_json(capsys, "status") == before and run_json(capsys, "people") == people


def test_status_lists_image_keys_and_errors(env, capsys):
    env.add(FR / "tests/test_images/obama.jpg")
    env.add(FR / "examples/biden.jpg", "more/biden.jpg")
    (env.images / "broken.jpg").write_bytes(b"not a jpeg")
    index_json(capsys)
    keys = sorted(env.parquet.image_keys())
    assert main(["status", "--list", "images"]) == 0
    assert capsys.readouterr().out.splitlines() == keys
    assert run_json(capsys, "status", "--list", "images") == keys
    assert main(["status", "--list", "errors"]) == 0
    assert capsys.readouterr().out.splitlines() == ["broken.jpg: not an image Pillow can identify"]
    assert run_json(capsys, "status", "--list", "errors") == run_json(capsys, "status")["errors"]


def test_a_port_in_use_is_exit_1_with_one_line(env, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == f"facepipe: port {port} on 127.0.0.1 is already in use: stop what holds it or pick another --port\n"
