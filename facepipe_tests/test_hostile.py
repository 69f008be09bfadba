"""Hostile and odd files: faces where there are faces, a clear error row otherwise, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facepipe.cli import main
from facepipe.faces import ExtractSettings
from facepipe.faces.batch import extract_file
from facepipe.faces.detection import DetectSettings
from facepipe.faces.loading import load_rgb
from facepipe_tests import hostile
from facepipe_tests.conftest import FR


def run(capsys, *args: str) -> dict:
    code = main([*args, "--json"] if args[0] == "status" else [*args, "--json", "--quiet"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_index_over_a_hostile_folder(env, capsys, tmp_path):
    good = hostile.good_files()
    bad = hostile.bad_files()
    hostile.write(env.images, good)
    hostile.write(env.images, {name: data for name, (data, _) in bad.items()})
    outside = tmp_path / "private" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes((FR / "examples/biden.jpg").read_bytes())
    hostile.link_outside(env.images, outside)

    report = run(capsys, "index")
    assert report["images"] == len(good) + len(bad), "the link leaving the folder is not followed"
    errors = {e["image_key"]: e["reason"] for e in report["errors"]}
    assert set(errors) == set(bad)
    for name, (_, word) in bad.items():
        assert word in errors[name].lower(), (name, errors[name])

    faces = env.parquet.faces(["image_key", "top", "right", "bottom", "left"]).to_pylist()
    per_image = {}
    for row in faces:
        per_image.setdefault(row["image_key"], []).append(row)
    assert {k: len(v) for k, v in per_image.items()} == {name: 1 for name in good}
    # Every EXIF orientation gives the face at the same place in the upright photo.
    boxes = [per_image[f"orientation/{n}.jpg"][0] for n in hostile.STORED]
    for box in boxes:
        assert all(abs(box[s] - boxes[0][s]) <= 8 for s in ("top", "right", "bottom", "left")), boxes
    assert "secret" not in json.dumps(report)

    status = run(capsys, "status")
    assert {e["image_key"]: e["reason"] for e in status["errors"]} == errors
    assert status["parquet"]["faces"] == status["qdrant"]["faces"] == status["pgvector"]["faces"] == len(good)

    again = run(capsys, "index")
    assert (again["processed"], again["new"], again["changed"], again["deleted"]) == (0, 0, 0, 0)


def test_a_file_deleted_after_scheduling_gets_an_error_row_then_goes(env, capsys):
    env.add(FR / "examples/obama_small.jpg", "keep.jpg")
    env.add(FR / "examples/obama_small.jpg", "gone.jpg")
    settings = ExtractSettings(detect=DetectSettings(detector="hog"))
    path = env.images / "gone.jpg"
    path.unlink()  # between the sensor's tick and the run
    record = extract_file("gone.jpg", path, settings)
    assert record.status == "error" and "not found" in record.reason
    report = run(capsys, "index")
    assert report["images"] == 1 and report["errors"] == []


def test_a_file_rewritten_after_indexing_is_indexed_again(env, capsys):
    path = env.add(FR / "examples/obama_small.jpg", "photo.jpg")
    run(capsys, "index")
    first = env.parquet.images(["sha256"]).to_pylist()[0]["sha256"]
    # Rewritten in place, same size and mtime kept back as if written mid-read: content decides.
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    report = run(capsys, "index")
    assert report["changed"] == 1 and report["processed"] == 1
    assert env.parquet.images(["sha256"]).to_pylist()[0]["sha256"] != first


def test_a_huge_valid_photo_is_processed_with_bounded_memory(tmp_path):
    big = Image.open(FR / "examples/obama-1080p.jpg").convert("RGB").resize((7680, 4320))
    path = tmp_path / "huge.jpg"
    big.save(path, quality=85)
    script = (
        "import sys; from pathlib import Path\n"
        "from facepipe.processes import peak_rss_bytes\n"
        "from facepipe.faces import ExtractSettings; from facepipe.faces.batch import extract_file\n"
        "from facepipe.faces.detection import DetectSettings\n"
        "r = extract_file('huge.jpg', Path(sys.argv[1]), ExtractSettings(detect=DetectSettings(detector='hog')))\n"
        "print(r.status, r.face_count, r.width, r.height, peak_rss_bytes() // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    status, faces, width, height, peak_kib = out.stdout.split()
    assert (status, int(faces), int(width), int(height)) == ("ok", 1, 7680, 4320)
    # The decoded photo alone is ~95 MiB; ~400 MiB measured (imports, decode and one working copy).
    assert int(peak_kib) < 1_000_000, f"peak RSS {int(peak_kib) / 1024:.0f} MiB for a 33 MP photo"


def test_peak_memory_is_the_process_own_not_its_parents():
    """Linux's ru_maxrss of a child started by a big parent reports the parent's peak; ours must not."""
    ballast = np.ones(600 * 2**20, dtype=np.uint8)  # this test process now holds 600 MiB
    script = "from facepipe.processes import peak_rss_bytes; print(peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 300 * 2**20 < ballast.nbytes


@pytest.mark.parametrize("orientation", sorted(hostile.STORED))
def test_every_exif_orientation_loads_upright(orientation):
    upright = hostile.portrait().resize((200, 250))
    rgb = load_rgb(hostile.oriented(upright, orientation))
    assert rgb.shape == (250, 200, 3)
    assert abs(rgb.astype(int) - np.asarray(upright).astype(int)).mean() < 6
