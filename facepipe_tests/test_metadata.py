"""Photo metadata (EXIF date, camera, GPS, file size, mtime) in the images Parquet, and the README's
per-year and together analytics run against a real indexed library."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from facepipe.cli import main
from facepipe.faces.metadata import EXIF_IFD, GPS_IFD, parse_exif_datetime, parse_exif_offset, read_metadata
from facepipe_tests.conftest import FR, KNN

README = Path(__file__).resolve().parents[1] / "README.md"


def exif_of(path: Path) -> dict:
    with Image.open(path) as image:
        exif = image.getexif()
        return {"root": dict(exif), "sub": dict(exif.get_ifd(EXIF_IFD)), "gps": dict(exif.get_ifd(GPS_IFD))}


def test_camera_and_date_of_a_sample_photo():
    path = FR / "tests/test_images/obama.jpg"
    tags = exif_of(path)
    meta = read_metadata(path.read_bytes())
    assert meta.camera_make == tags["root"][0x010F] and meta.camera_model == tags["root"][0x0110]
    assert meta.taken_at == datetime.strptime(tags["sub"][0x9003], "%Y:%m:%d %H:%M:%S")
    assert meta.file_size == path.stat().st_size
    assert meta.gps_lat is None and meta.gps_lon is None


def test_malformed_date_of_obama2_is_parsed_without_error():
    path = FR / "tests/test_images/obama2.jpg"
    raw = exif_of(path)["sub"][0x9003]
    assert raw == "2009:09:09 20:27:09.60:04:00"  # the malformed value this test is about
    meta = read_metadata(path.read_bytes())
    assert meta.taken_at == datetime(2009, 9, 9, 20, 27, 9) and meta.taken_at_offset is None


def test_a_gps_block_without_coordinates_gives_none():
    """alex_lacamoire1.jpg has a GPS IFD, but it holds only GPSVersionID: no position to report."""
    path = KNN / "test/alex_lacamoire1.jpg"
    gps = exif_of(path)["gps"]
    assert gps and 2 not in gps and 4 not in gps
    meta = read_metadata(path.read_bytes())
    assert (meta.gps_lat, meta.gps_lon) == (None, None)
    assert meta.camera_model == "NIKON D810" and meta.taken_at is not None


def with_exif(source: Path, sub: dict, gps: dict) -> bytes:
    """A sample photo re-saved with these EXIF tags (no sample photo carries coordinates or an offset)."""
    with Image.open(source) as image:
        exif = image.getexif()
        for tag, value in sub.items():
            exif.get_ifd(EXIF_IFD)[tag] = value
        for tag, value in gps.items():
            exif.get_ifd(GPS_IFD)[tag] = value
        out = io.BytesIO()
        image.save(out, format="JPEG", exif=exif)
        return out.getvalue()


def test_gps_coordinates_and_offset_when_present():
    data = with_exif(
        FR / "tests/test_images/obama.jpg",
        {0x9003: "2019:07:14 18:05:30", 0x9011: "-04:00"},
        {1: "S", 2: (33.0, 51.0, 54.0), 3: "W", 4: (151.0, 12.0, 36.0)},
    )
    meta = read_metadata(data)
    assert meta.gps_lat == pytest.approx(-(33 + 51 / 60 + 54 / 3600))
    assert meta.gps_lon == pytest.approx(-(151 + 12 / 60 + 36 / 3600))
    assert meta.taken_at == datetime(2019, 7, 14, 18, 5, 30) and meta.taken_at_offset == "-04:00"


@pytest.mark.parametrize(
    "value", ["0000:00:00 00:00:00", "    :  :     :  :  ", "2019:13:40 25:00:00", "", "yesterday", None, b"\x00"]
)
def test_malformed_dates_are_none(value):
    assert parse_exif_datetime(value) is None


def test_offsets():
    assert [parse_exif_offset(v) for v in ("+02:00", "-0530", " +14:00", "02:00", "+99:00", None)] == [
        "+02:00",
        "-05:30",
        "+14:00",
        None,
        None,
        None,
    ]


def test_a_file_that_is_not_a_photo_gives_only_its_size():
    meta = read_metadata(b"not a jpeg")
    assert meta.file_size == 10 and meta.taken_at is None and meta.camera_make is None


def readme_sql(title: str) -> str:
    """The DuckDB one-liner under the comment `# title` in the README."""
    text = README.read_text()
    block = text[text.index(f"# {title}\n") :]
    return re.search(r'duckdb\.sql\(\\"(.*?)\\"\)', block)[1]


@pytest.fixture
def indexed(env, capsys):
    for name in ("obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg"):
        env.add(KNN / "train" / name, name)
    env.add(KNN / "test/obama_and_biden.jpg", "together/obama_and_biden.jpg")
    assert main(["index", "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert main(["people", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_readme(env, title: str) -> list[tuple]:
    """The README's one-liner, as a user runs it from the project folder (but returning rows)."""
    sql = readme_sql(title)
    code = f"import duckdb, json; print(json.dumps(duckdb.sql({sql!r}).fetchall(), default=str))"
    out = subprocess.run([sys.executable, "-c", code], cwd=env.root, capture_output=True, text=True, check=True)
    return [tuple(row) for row in json.loads(out.stdout)]


def test_images_parquet_has_the_metadata(indexed, env):
    rows = {r["image_key"]: r for r in env.parquet.images().to_pylist()}
    for key, row in rows.items():
        source = env.images / key
        meta = read_metadata(source.read_bytes())
        assert row["taken_at"] == meta.taken_at and row["camera_model"] == meta.camera_model
        assert row["file_size"] == source.stat().st_size
        assert abs(row["mtime"].timestamp() - source.stat().st_mtime) < 1e-3
    assert rows["obama/obama2.jpg"]["taken_at"] == datetime(2009, 9, 9, 20, 27, 9)
    assert rows["together/obama_and_biden.jpg"]["taken_at"] is None  # no EXIF date: null, no error


def test_readme_photos_of_each_person_per_year(indexed, env):
    expected: dict[tuple, int] = {}
    for person in indexed:
        years: dict = {}
        for key in person["image_keys"]:
            taken = read_metadata((env.images / key).read_bytes()).taken_at
            years[taken.year if taken else None] = years.get(taken.year if taken else None, 0) + 1
        expected |= {(person["person_id"], year): n for year, n in years.items()}
    rows = run_readme(env, "photos of each person per year")
    assert {(pid, year): n for pid, year, n in rows} == expected
    assert any(year == 2009 for _, year, _ in rows)


def test_readme_who_appears_together(indexed, env):
    by_image: dict[str, set[str]] = {}
    for person in indexed:
        for key in person["image_keys"]:
            by_image.setdefault(key, set()).add(person["person_id"])
    expected: dict[tuple, int] = {}
    for persons in by_image.values():
        for a in persons:
            for b in persons:
                if a < b:
                    expected[(a, b)] = expected.get((a, b), 0) + 1
    assert expected, "the group photo has two persons"
    rows = run_readme(env, "who appears together")
    assert {(a, b): n for a, b, n in rows} == expected


def test_images_written_before_the_metadata_columns_read_as_null(env, capsys):
    """A library indexed by an older facepipe: its per-photo rows lack the columns, the readers and
    the compacted copy give nulls for them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from facepipe.compaction import Compactor
    from facepipe.stores.parquet import IMAGE_SCHEMA, METADATA_COLUMNS

    env.add(FR / "tests/test_images/obama.jpg")
    assert main(["index", "--quiet", "--json"]) == 0
    capsys.readouterr()
    file = next(env.parquet.images_dir.rglob("*.parquet"))
    old = pq.read_table(file).drop_columns(list(METADATA_COLUMNS))
    pq.write_table(old, file)
    new = FR / "tests/test_images/biden.jpg"
    env.add(new)
    assert main(["index", "--quiet", "--json"]) == 0
    rows = {r["image_key"]: r for r in env.parquet.images().to_pylist()}
    assert rows["obama.jpg"]["taken_at"] is None and rows["obama.jpg"]["status"] == "ok"
    assert rows["biden.jpg"]["taken_at"] == read_metadata(new.read_bytes()).taken_at
    Compactor(env.parquet).run()
    compacted = pa.concat_tables(
        pq.read_table(f, schema=IMAGE_SCHEMA) for f in (env.parquet.base / "compact").glob("images-*.parquet")
    ).to_pylist()
    taken = {r["image_key"]: r["taken_at"] for r in compacted}
    assert taken == {"obama.jpg": None, "biden.jpg": rows["biden.jpg"]["taken_at"]}
