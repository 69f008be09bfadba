"""The face core on real photos: upstream face_recognition expectations, loading, rotation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facepipe.faces import ExtractSettings, extract_faces
from facepipe.faces.detection import DetectSettings
from facepipe.faces.loading import ImageLoadError, load_rgb
from facepipe_tests.conftest import FR
from facepipe_tests.hostile import oriented, png_claiming

HOG = ExtractSettings(detect=DetectSettings(detector="hog"))


def faces_of(path, settings=HOG):
    record = extract_faces(path.read_bytes(), path.name, settings)
    assert record.ok, record.reason
    return record


def test_hog_box_matches_face_recognition_exactly():
    record = faces_of(FR / "tests/test_images/obama.jpg")
    assert [f.box for f in record.faces] == [(142, 617, 409, 349)]
    assert record.faces[0].score is None and record.faces[0].detector == "hog"


def test_cnn_box_within_25px_of_face_recognition():
    settings = ExtractSettings(detect=DetectSettings(detector="cnn", upsample=0))
    (face,) = faces_of(FR / "tests/test_images/obama.jpg", settings).faces
    assert max(abs(a - b) for a, b in zip(face.box, (144, 608, 389, 363), strict=True)) <= 25
    assert face.score is not None and face.score > 0.5


def test_32bit_png_loads_as_rgb():
    rgb = load_rgb((FR / "tests/test_images/32bit.png").read_bytes())
    assert rgb.shape == (1200, 626, 3) and rgb.dtype == np.uint8


def test_same_person_close_different_person_far():
    def embedding(name):
        (face,) = faces_of(FR / "tests/test_images" / name).faces
        return face.embedding

    obama = embedding("obama.jpg")
    assert np.linalg.norm(obama - embedding("obama2.jpg")) < 0.6
    assert np.linalg.norm(obama - embedding("obama3.jpg")) < 0.6
    assert np.linalg.norm(obama - embedding("biden.jpg")) > 0.6


def test_records_are_complete_and_stable():
    path = FR / "examples/two_people.jpg"
    first, second = faces_of(path), faces_of(path)
    assert len(first.faces) == 2
    assert [f.face_id for f in first.faces] == [f.face_id for f in second.faces]
    for face in first.faces:
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
        assert Image.open(io.BytesIO(face.crop)).format == "JPEG"
        assert 0 <= face.left < face.right <= first.width and 0 <= face.top < face.bottom <= first.height
        assert face.model_version == HOG.model_version


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_copy_gives_the_same_face(orientation):
    path = FR / "tests/test_images/obama.jpg"
    upright = faces_of(path)
    rotated = extract_faces(oriented(Image.open(path), orientation), "rotated.jpg", HOG)
    assert (rotated.width, rotated.height) == (upright.width, upright.height)
    (face,) = rotated.faces
    assert max(abs(a - b) for a, b in zip(face.box, upright.faces[0].box, strict=True)) <= 12
    assert np.linalg.norm(face.embedding - upright.faces[0].embedding) < 0.15


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L", "I;16"])
def test_any_mode_loads_as_8bit_rgb(mode):
    base = Image.open(FR / "examples/obama_small.jpg").convert("RGB")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
        fmt = "PNG"
    else:
        image = base.convert(mode)
        fmt = "JPEG" if mode in ("CMYK", "L") else "PNG"
    rgb = load_rgb(_encode(image, fmt))
    assert rgb.shape == (base.height, base.width, 3) and rgb.dtype == np.uint8
    # Content survives: not all white, not all black.
    assert 30 < rgb.mean() < 225


def test_heic_photo_works():
    pillow_heif = pytest.importorskip("pillow_heif")
    source = Image.open(FR / "tests/test_images/obama.jpg")
    heif = pillow_heif.from_pillow(source)
    out = io.BytesIO()
    heif.save(out, format="HEIF", quality=90)
    record = extract_faces(out.getvalue(), "obama.heic", HOG)
    assert record.ok and record.face_count == 1


def test_decompression_bomb_is_refused_from_the_header():
    # A real PNG header claiming 60000x60000 pixels, with almost no data behind it.
    bomb = png_claiming(60000, 60000)
    with pytest.raises(ImageLoadError, match="megapixels"):
        load_rgb(bomb)
    record = extract_faces(bomb, "bomb.png", HOG)
    assert record.status == "error" and "60000x60000" in record.reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b"this is not an image\n", "identify"), (5000, "truncated"), (0.6, "truncated")],
)
def test_unreadable_bytes_give_error_records(data, reason):
    if not isinstance(data, bytes):  # a JPEG cut in its header, or in its pixel data
        whole = (FR / "tests/test_images/obama.jpg").read_bytes()
        data = whole[: data if isinstance(data, int) else int(len(whole) * data)]
    record = extract_faces(data, "bad.jpg", HOG)
    assert record.status == "error" and reason in record.reason.lower() and record.faces == []


def test_warm_up_loads_the_networks_the_photos_will_use():
    from facepipe.faces import models, yunet
    from facepipe.faces.extract import warm_up

    settings = ExtractSettings()
    for loader in (models.fast_encoder, models.landmarks_5pt, yunet._yuface):
        loader.cache_clear()
    warm_up(settings)
    assert models.fast_encoder.cache_info().currsize == 1
    assert models.landmarks_5pt.cache_info().currsize == 1
    assert yunet._yuface.cache_info().currsize == 1
    # The photo after it loads nothing more: the same encoder is found in the cache.
    record = extract_faces((FR / "examples/obama.jpg").read_bytes(), "obama.jpg", settings)
    assert record.face_count == 1 and models.fast_encoder.cache_info().hits >= 1


def test_a_warmed_pool_is_the_one_the_next_batch_extracts_with():
    from facepipe.faces import batch

    settings = ExtractSettings()
    batch.warm_pool(settings, 2)
    warmed = batch._shared._pool
    assert warmed is not None
    photos = [FR / "examples/obama.jpg", FR / "examples/biden.jpg"]
    records = list(batch.extract_many([(p.name, p) for p in photos], settings, 2))
    assert sorted(r.image_key for r in records) == ["biden.jpg", "obama.jpg"]
    assert all(r.ok and r.face_count == 1 for r in records)
    assert batch._shared._pool is warmed, "the batch started no second pool"


def test_photos_started_early_are_taken_by_the_batch_that_asks_for_them(tmp_path):
    """`facepipe index` hands the first photos to the pool while Dagster loads: the run's batch takes
    those very records, unless the file changed meanwhile or the settings differ, and what nobody
    took is dropped."""
    import os
    import shutil

    from facepipe.faces import batch

    settings = ExtractSettings()
    names = ["obama.jpg", "biden.jpg", "two_people.jpg"]
    paths = [tmp_path / name for name in names]
    for name, path in zip(names, paths, strict=True):
        shutil.copyfile(FR / "examples" / name, path)
    jobs = [(p.name, p) for p in paths]
    assert batch.extract_early(jobs, settings, 2) == 3
    early = {key: future for (key, _), (future, _, _) in batch._early._futures.items()}
    # The file changes after it was handed over: extracted again from what it holds now.
    shutil.copyfile(FR / "examples/obama.jpg", paths[2])
    os.utime(paths[2], ns=(1, 1))
    records = {r.image_key: r for r in batch.extract_many(jobs, settings, 2)}
    assert records["obama.jpg"] is early["obama.jpg"].result()
    assert records["biden.jpg"] is early["biden.jpg"].result()
    assert records["two_people.jpg"].face_count == 1, "the new bytes (one face), not the old (two)"
    stale = early["two_people.jpg"]
    assert stale.cancelled() or records["two_people.jpg"] is not stale.result(), "not the early record"
    assert not batch._early._futures

    # Other settings, or a batch that never comes: nothing is taken, everything is dropped.
    batch.extract_early(jobs[:2], settings, 2)
    hog = ExtractSettings(detect=DetectSettings(detector="hog"))
    again = list(batch.extract_many(jobs[:1], hog, 2))
    assert again[0].detector == "hog" and not batch._early._futures.get(jobs[0])
    users = batch._shared._users
    batch.drop_early()
    assert not batch._early._futures and batch._shared._users == users - 1
