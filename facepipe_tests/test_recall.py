"""CNN detection recall on hand-labelled PASCAL VOC faces (dlib's training.xml)."""

from __future__ import annotations

from facepipe.faces import ExtractSettings, extract_faces
from facepipe.faces.detection import DetectSettings
from facepipe.faces.evaluation import Score, iou, load_imglab
from facepipe_tests.conftest import SHARED_DATA


def test_iou_and_matching_are_one_to_one():
    assert iou((0, 10, 10, 0), (0, 10, 10, 0)) == 1.0
    assert iou((0, 10, 10, 0), (20, 30, 30, 20)) == 0.0
    score = Score()
    score.add([(0, 10, 10, 0)], [(0, 10, 10, 0), (1, 11, 11, 1)])
    assert (score.matched, score.recall, score.precision) == (1, 1.0, 0.5)


def test_default_cnn_recall_on_labelled_faces():
    folder = SHARED_DATA / "dlib_faces"
    truth = load_imglab(folder / "training.xml")
    assert sum(len(b) for b in truth.values()) == 18
    settings = ExtractSettings(detect=DetectSettings(detector="cnn"))
    score = Score()
    for name, boxes in truth.items():
        record = extract_faces((folder / name).read_bytes(), name, settings)
        score.add(boxes, [f.box for f in record.faces])
    assert score.recall >= 0.8, f"recall {score.recall:.2f} ({score.matched}/{score.truths})"
