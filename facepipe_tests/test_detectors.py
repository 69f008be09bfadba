"""The detectors on real photos: YuNet against dlib's CNN, the minimum face size on phone-size
canvases, tiles and their merging, face-free images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facepipe.faces import ExtractSettings, extract_faces, tiling, yunet
from facepipe.faces.detection import DetectSettings, detect
from facepipe.faces.evaluation import Score, iou, load_imglab
from facepipe.faces.loading import load_rgb
from facepipe_tests import devset
from facepipe_tests.conftest import FR, KNN, SHARED_DATA

YUNET = DetectSettings(detector="yunet")
CNN = DetectSettings(detector="cnn", upsample=0)
PORTRAITS = [
    FR / "tests" / "test_images" / "obama.jpg",
    FR / "tests" / "test_images" / "biden.jpg",
    KNN / "train" / "rose_leslie" / "img1.jpg",
    KNN / "train" / "kit_harington" / "john1.jpeg",
    FR / "examples" / "two_people.jpg",
]


def test_yunet_is_the_default_detector():
    assert ExtractSettings().detect.detector == "yunet"
    assert ExtractSettings().model_version.startswith("yunet-s0.7-min32-")


@pytest.mark.parametrize("path", PORTRAITS, ids=lambda p: p.name)
def test_yunet_boxes_near_the_cnn_boxes_on_portraits(path):
    rgb = load_rgb(path.read_bytes())
    cnn = [d.box for d in detect(rgb, CNN)]
    found = detect(rgb, YUNET)
    assert len(found) == len(cnn) >= 1
    for d in found:
        assert 0.7 <= d.score <= 1.0
        best = max(cnn, key=lambda c: iou(c, d.box))
        assert iou(best, d.box) >= 0.6, (d.box, best)
        size = best[1] - best[3]
        assert all(abs(a - b) <= 0.15 * size for a, b in zip(d.box, best, strict=True)), (d.box, best)


def test_yunet_finds_every_labelled_face_of_dlib_training_set():
    folder = SHARED_DATA / "dlib_faces"
    score = Score()
    for name, boxes in load_imglab(folder / "training.xml").items():
        score.add(boxes, [d.box for d in detect(load_rgb((folder / name).read_bytes()), YUNET)])
    assert (score.matched, score.truths) == (18, 18)
    assert score.precision >= 0.9


def test_yunet_embeddings_keep_identity():
    """Same person under 0.6, different people over it, as with the CNN boxes."""
    settings = ExtractSettings(detect=YUNET)

    def face(path):
        faces = extract_faces(path.read_bytes(), path.name, settings).faces
        return max(faces, key=lambda f: f.area).embedding

    obama, obama2, biden = (face(FR / "tests" / "test_images" / n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    assert np.linalg.norm(obama - obama2) < 0.6
    assert np.linalg.norm(obama - biden) > 0.6


def test_a_40px_face_in_a_24mp_canvas_is_found():
    sources = {name: (rgb, boxes) for name, rgb, boxes in devset.face_sources()}
    rgb, boxes = sources["face_recognition/tests/test_images/obama.jpg"]
    canvas = np.full((4000, 6000, 3), 90, dtype=np.uint8)
    inside, widths, _, _ = devset.paste(canvas, rgb, boxes, 0, 40, 2100, 3300)
    assert widths == [40]
    record = extract_faces(devset.jpeg_bytes(canvas), "canvas.jpg")
    assert record.ok and (record.width, record.height) == (6000, 4000)
    assert len(record.faces) == 1 and iou(record.faces[0].box, inside[0]) >= 0.4, (record.faces, inside)


def test_plan_keeps_min_face_and_bounds_tiles():
    band = yunet.BAND
    levels = tiling.plan(6000, 8000, band, 32)  # a 48 MP photo
    finest = levels[0]
    assert finest.scale == pytest.approx(band.min_px / 32) and finest.min_face == pytest.approx(32)
    for level in levels:
        for tile in level.tiles:
            assert (tile.bottom - tile.top) * level.scale <= band.tile + 1
            assert (tile.right - tile.left) * level.scale <= band.tile + 1
    assert levels[-1].max_face == float("inf") and len(levels[-1].tiles) == 1
    covered = np.zeros((6000, 8000), dtype=bool)
    for tile in finest.tiles:
        covered[tile.top : tile.bottom, tile.left : tile.right] = True
    assert covered.all()
    assert tiling.plan(600, 800, band, 16)[0].scale == pytest.approx(band.min_px / 16)  # below 32 works too


@pytest.mark.parametrize("shape", [(1853, 2560), (3000, 4000), (4000, 6000), (1537, 1537), (2000, 1000)])
def test_tiles_overlap_by_the_largest_face_and_no_more(shape):
    """Every face up to the band's largest lies wholly inside a tile, and the tiles search little twice."""
    band = yunet.BAND
    height, width = shape
    tiles = tiling.plan(height, width, band, 32)[0].tiles
    tops = sorted({(t.top, t.bottom) for t in tiles})
    lefts = sorted({(t.left, t.right) for t in tiles})
    for spans, length in ((tops, height), (lefts, width)):
        assert spans[0][0] == 0 and spans[-1][1] == length
        for (_, stop), (start, _) in itertools.pairwise(spans):
            assert band.max_px <= stop - start <= band.max_px + 2  # the overlap a face needs, no more
    area = sum((t.bottom - t.top) * (t.right - t.left) for t in tiles)
    slack = band.max_px + 2
    assert area <= (height + (len(tops) - 1) * slack) * (width + (len(lefts) - 1) * slack)


def test_tiling_merges_duplicates_across_tiles():
    """Faces on the seams of a 3x3 tiling are seen by two or four tiles and come out once each."""
    rgb = load_rgb((SHARED_DATA / devset.SOLVAY).read_bytes())
    small_tiles = tiling.DetectorBand(min_px=32, max_px=200, tile=700)
    tiles = tiling.plan(*rgb.shape[:2], small_tiles, 32)[0].tiles
    assert len(tiles) >= 9
    seen_twice = sum(
        sum(t.top <= (b[0] + b[2]) / 2 < t.bottom and t.left <= (b[1] + b[3]) / 2 < t.right for t in tiles) > 1
        for b in devset.SOLVAY_BOXES
    )
    assert seen_twice >= 5
    found = tiling.search(rgb, small_tiles, 32, lambda image, _: yunet.detect(image))
    boxes = [(round(t), round(r), round(b), round(lf)) for lf, t, r, b, _ in found]
    score = Score()
    score.add(devset.SOLVAY_BOXES, boxes)
    assert score.matched == 29 and len(boxes) == 29


def test_merge_keeps_the_best_of_overlapping_boxes():
    merged = tiling.merge([(0, 0, 100, 100, 0.8), (2, 1, 101, 99, 0.9), (10, 10, 60, 60, 0.75), (300, 0, 360, 60, 0.7)])
    assert merged == [(2, 1, 101, 99, 0.9), (300, 0, 360, 60, 0.7)]


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "brick", "hubble_deep_field"])
def test_a_face_free_image_gives_no_face(name):
    record = extract_faces(devset.jpeg_bytes(devset._skimage(name)), f"{name}.jpg")
    assert record.ok and record.faces == []


def test_yunet_scores_and_boxes_are_in_range_at_the_edges():
    """A face cut by the left edge: YuNet's uint16 boxes would wrap below 0; boxes stay inside the photo."""
    rgb = load_rgb((FR / "tests" / "test_images" / "obama_partial_face.jpg").read_bytes())
    found = detect(rgb, YUNET)
    assert len(found) == 1
    top, right, bottom, left = found[0].box
    assert 0 <= left < right < rgb.shape[1] and 0 <= top < bottom < rgb.shape[0]


def test_names_survive_a_change_of_detector(tmp_path):
    """knn train/ indexed with HOG, a person named, then every photo again with YuNet: new face ids
    (other boxes), same person ids and the name."""
    from facepipe.people import People
    from facepipe.stores.parquet import ParquetStore

    parquet = ParquetStore(root=str(tmp_path / "parquet"))
    people = People(tmp_path, parquet)
    photos = sorted(p for p in (KNN / "train").rglob("*") if p.is_file())

    def index(detector: str) -> dict[str, list[str | None]]:
        settings = ExtractSettings(detect=DetectSettings(detector=detector))
        for path in photos:
            parquet.write(extract_faces(path.read_bytes(), f"{path.parent.name}/{path.name}", settings))
        people.update()
        rows = parquet.faces(["image_key", "person_id", "detector"]).to_pylist()
        assert {r["detector"] for r in rows} == {detector}
        return {
            k: sorted(r["person_id"] or "-" for r in rows if r["image_key"] == k)
            for k in {r["image_key"] for r in rows}
        }

    before = index("hog")
    obama = before["obama/obama.jpg"][0]
    people.name(obama, "Barack Obama")
    after = index("yunet")
    assert after == before
    assert people.get(obama).name == "Barack Obama"
