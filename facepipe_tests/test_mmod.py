"""FastMMOD must find the same faces as dlib's own CNN detector on real photos.

dlib is the slow side here (about 1 s per small photo), so the photos are small or downscaled.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import dlib
import face_recognition_models

from facepipe.faces import mmod, pyramid
from facepipe_tests.conftest import SHARED_DATA

DATA = SHARED_DATA

# (photo, upsample, longest side after downscaling or None to keep it)
CASES = [
    ("face_recognition/tests/test_images/obama.jpg", 0, 600),
    ("face_recognition/examples/two_people.jpg", 0, 800),
    ("face_recognition/examples/obama_small.jpg", 0, None),
    ("face_recognition/examples/obama_small.jpg", 1, None),
    ("dlib_faces/2007_007763.jpg", 0, None),
    ("dlib_faces/2008_001009.jpg", 0, None),
    ("dlib_faces/2008_001322.jpg", 0, None),
    ("dlib_faces/2008_002079.jpg", 0, None),
    ("cocoindex/einplanck3.jpg", 0, None),
    ("cocoindex/einplanck3.jpg", 1, None),
]


def _load(rel: str, longest: int | None) -> np.ndarray:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"test photo missing: {path}")
    img = Image.open(path).convert("RGB")
    if longest is not None and max(img.size) > longest:
        ratio = longest / max(img.size)
        img = img.resize((round(img.width * ratio), round(img.height * ratio)), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def model_path() -> str:
    return face_recognition_models.cnn_face_detector_model_location()


@pytest.fixture(scope="module")
def dlib_cnn(model_path: str):
    return dlib.cnn_face_detection_model_v1(model_path)


@pytest.fixture(scope="module")
def fast(model_path: str) -> mmod.FastMMOD:
    return mmod.FastMMOD(model_path, threads=1)


@pytest.mark.parametrize(("rel", "upsample", "longest"), CASES)
def test_matches_dlib(rel: str, upsample: int, longest: int | None, dlib_cnn, fast) -> None:
    img = _load(rel, longest)
    want = [
        ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence) for d in dlib_cnn(img, upsample)
    ]
    got = fast.detect(img, upsample)
    assert len(got) == len(want), (want, got)
    for box, conf in want:
        best = max(got, key=lambda g: _iou(g[0], box))
        assert _iou(best[0], box) >= 0.9, (box, got)
        assert abs(best[1] - conf) < 0.05, (conf, best)


def test_finds_the_known_faces(fast) -> None:
    # Independent of dlib: the three faces of this photo, from dlib's own output.
    img = _load("dlib_faces/2008_001322.jpg", None)
    boxes = sorted(box for box, _ in fast.detect(img))
    assert boxes == [(100, 148, 179, 227), (220, 204, 299, 283), (356, 164, 435, 243)]


def test_gray_input_equals_rgb(fast) -> None:
    gray = np.asarray(Image.open(DATA / "cocoindex/einplanck3.jpg").convert("L"))
    assert fast.detect(gray, 1) == fast.detect(np.repeat(gray[:, :, None], 3, axis=2), 1)


def test_batch_equals_single(fast) -> None:
    imgs = [_load(f"dlib_faces/{name}.jpg", None) for name in ("2008_001322", "2008_002079", "2008_001009")]
    assert fast.detect_batch(imgs) == [fast.detect(img) for img in imgs]


def test_rejects_bad_images(fast) -> None:
    with pytest.raises(ValueError):
        fast.detect(np.zeros((50, 50, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        fast.detect(np.zeros((50, 50, 3), dtype=np.float32))


def test_tiny_image_has_no_faces(fast) -> None:
    assert fast.detect(np.zeros((3, 3, 3), dtype=np.uint8)) == []


@pytest.mark.parametrize(("rows", "cols"), [(536, 800), (1137, 910), (240, 320), (2204, 970), (5, 5)])
def test_pyramid_layout_is_sane(rows: int, cols: int) -> None:
    rects, out_rows, out_cols = pyramid.tiled_pyramid_layout(rows, cols)
    assert rects[0] == (11, 11, 11 + cols - 1, 11 + rows - 1)
    for i, (left, top, right, bottom) in enumerate(rects):
        assert 0 <= left <= right < out_cols and 0 <= top <= bottom < out_rows
        for other in rects[i + 1 :]:
            disjoint = right < other[0] or other[2] < left or bottom < other[1] or other[3] < top
            assert disjoint
    heights = [r[3] - r[1] + 1 for r in rects]
    assert heights == sorted(heights, reverse=True)
