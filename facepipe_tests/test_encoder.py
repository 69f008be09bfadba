"""FastEncoder (dlib's face ResNet on onnxruntime) must give dlib's descriptors on real faces."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import dlib

from facepipe.faces import models, onnx_session
from facepipe.faces.dlib_format import DlibFormatError
from facepipe.faces.embedding import embed
from facepipe.faces.encoder import FastEncoder, load_face_resnet
from facepipe.faces.extract import ExtractSettings
from facepipe.faces.loading import load_rgb
from facepipe.faces.mmod import FastMMOD, load_dlib_mmod
from facepipe.faces.models import Engines
from facepipe_tests.conftest import SHARED_DATA

TOLERANCE = 1e-4  # max abs difference per descriptor component
SAME_PERSON = 0.6  # face_recognition's distance threshold


def _photos() -> list[Path]:
    suffixes = {".jpg", ".jpeg", ".png"}
    return sorted(p for p in SHARED_DATA.rglob("*") if p.suffix.lower() in suffixes)


@pytest.fixture(scope="module")
def fast() -> FastEncoder:
    return FastEncoder(threads=1)


@pytest.fixture(scope="module")
def sample_faces(shared_data: Path) -> list[tuple[str, np.ndarray, dlib.full_object_detections]]:
    """Every face dlib's HOG detector finds in every sample photo, with its 5 landmarks."""
    hog, predictor = models.hog_detector(), models.landmarks_5pt()
    out = []
    for path in _photos():
        rgb = load_rgb(path.read_bytes())
        rects = hog(rgb, 0 if max(rgb.shape) > 1500 else 1)
        if not rects:
            continue
        shapes = dlib.full_object_detections()
        for rect in rects:
            shapes.append(predictor(rgb, rect))
        out.append((str(path.relative_to(shared_data)), rgb, shapes))
    assert sum(len(s) for *_, s in out) >= 80, "expected the sample photos' ~90 faces"
    return out


def test_matches_dlib_on_every_sample_face(fast: FastEncoder, sample_faces) -> None:
    reference = models.encoder()
    want_all, got_all = [], []
    for name, rgb, shapes in sample_faces:
        want = np.asarray([np.asarray(v) for v in reference.compute_face_descriptor(rgb, shapes, 1)])
        got = fast.face_descriptors(rgb, shapes)
        assert got.shape == want.shape == (len(shapes), 128)
        assert got.dtype == np.float32
        diff = float(np.abs(got - want).max())
        assert diff < TOLERANCE, f"{name}: max abs difference {diff:.2e}"
        want_all.append(want)
        got_all.append(got)
    want, got = np.concatenate(want_all), np.concatenate(got_all)
    # The same identity results: every pair of faces is the same person for both, or for neither.
    for i, j in itertools.combinations(range(len(want)), 2):
        same_dlib = np.linalg.norm(want[i] - want[j]) < SAME_PERSON
        same_onnx = np.linalg.norm(got[i] - got[j]) < SAME_PERSON
        assert same_dlib == same_onnx, (i, j)


def test_chips_are_dlibs(fast: FastEncoder, sample_faces) -> None:
    # The chips dlib.get_face_chips cuts are the ones compute_face_descriptor encodes.
    name, rgb, shapes = max(sample_faces, key=lambda item: len(item[2]))
    chips = np.stack(dlib.get_face_chips(rgb, shapes, size=150, padding=0.25))
    from_chips = np.asarray(
        [np.asarray(v) for v in models.encoder().compute_face_descriptor(list(chips), 1)]  # aligned-image overload
    )
    from_photo = np.asarray([np.asarray(v) for v in models.encoder().compute_face_descriptor(rgb, shapes, 1)])
    assert np.array_equal(from_chips, from_photo), name
    assert np.abs(fast.descriptors(chips) - from_photo).max() < TOLERANCE


def test_batch_equals_one_by_one(fast: FastEncoder, sample_faces) -> None:
    chips = np.concatenate([np.stack(dlib.get_face_chips(rgb, shapes)) for _, rgb, shapes in sample_faces])
    assert len(chips) > 2 * 16  # more than dlib's (and our) 16-chip batches
    batched = fast.descriptors(chips)
    single = np.concatenate([fast.descriptors(chip[None]) for chip in chips])
    assert np.abs(batched - single).max() < 1e-6
    assert fast.descriptors(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_rejects_wrong_chips(fast: FastEncoder) -> None:
    with pytest.raises(ValueError):
        fast.descriptors(np.zeros((1, 100, 100, 3), np.uint8))


def test_embed_uses_onnx_by_default_and_dlib_when_forced(sample_faces) -> None:
    _, rgb, shapes = sample_faces[0]
    boxes = [(s.rect.top(), s.rect.right(), s.rect.bottom(), s.rect.left()) for s in shapes]
    onnx = embed(rgb, boxes)
    forced = embed(rgb, boxes, engines=Engines(embed="dlib"))
    assert np.abs(onnx - forced).max() < TOLERANCE
    assert embed(rgb, []).shape == (0, 128)


def _run(code: str, **env: str) -> dict:
    import os

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


_EXTRACT = """
import json, sys
from pathlib import Path
from facepipe import settings as facepipe_settings
from facepipe.faces import extract_faces
settings = facepipe_settings.current().extract
record = extract_faces(Path({photo!r}).read_bytes(), "p", settings)
print(json.dumps({{
    "engine": settings.engines.embed,
    "onnxruntime": "onnxruntime" in sys.modules,
    "faces": len(record.faces),
    "embeddings": [f.embedding.tolist() for f in record.faces],
    "model_version": settings.model_version,
}}))
"""


def test_forced_dlib_engine_never_loads_onnxruntime(shared_data: Path) -> None:
    # With HOG detection and FACEPIPE_EMBED_ENGINE=dlib, nothing may import onnxruntime; jitters
    # (random crops drawn by dlib) also stay on dlib. Same faces, same model version.
    code = _EXTRACT.format(photo=str(shared_data / "face_recognition/examples/two_people.jpg"))
    dlib_run = _run(code, FACEPIPE_DETECTOR="hog", FACEPIPE_EMBED_ENGINE="dlib")
    onnx_run = _run(code, FACEPIPE_DETECTOR="hog", FACEPIPE_EMBED_ENGINE="")
    assert dlib_run["engine"] == "dlib" and not dlib_run["onnxruntime"]
    assert onnx_run["engine"] == "onnx" and onnx_run["onnxruntime"]
    assert dlib_run["faces"] == onnx_run["faces"] == 2
    assert np.abs(np.asarray(dlib_run["embeddings"]) - np.asarray(onnx_run["embeddings"])).max() < TOLERANCE
    assert dlib_run["model_version"] == onnx_run["model_version"]


def test_jitters_fall_back_to_dlib(sample_faces) -> None:
    _, rgb, shapes = sample_faces[0]
    boxes = [(s.rect.top(), s.rect.right(), s.rect.bottom(), s.rect.left()) for s in shapes]
    one = embed(rgb, boxes, num_jitters=1)
    jittered = embed(rgb, boxes, num_jitters=3)
    # dlib's jittered mean: close to the plain descriptor, but not it.
    assert 0 < np.abs(one - jittered).max() < 0.2


def test_engine_settings_from_env() -> None:
    default = ExtractSettings.from_env({})
    assert default.engines == Engines()
    assert default.engines.providers == ("CPUExecutionProvider",)
    env = {
        "FACEPIPE_EMBED_ENGINE": "dlib",
        "FACEPIPE_CNN_ENGINE": "dlib",
        "FACEPIPE_ONNX_PROVIDERS": "cuda, CPUExecutionProvider",
        "OMP_NUM_THREADS": "1",
    }
    settings = ExtractSettings.from_env(env)
    assert settings.engines == Engines(cnn="dlib", embed="dlib", threads=1, providers=("cuda", "CPUExecutionProvider"))
    # What runs the networks does not change the faces: existing libraries are not re-indexed.
    assert settings.model_version == default.model_version
    with pytest.raises(ValueError, match="embed engine"):
        ExtractSettings.from_env({"FACEPIPE_EMBED_ENGINE": "tensorflow"})


def test_missing_provider_falls_back_to_cpu_with_one_warning() -> None:
    cpu_only = ["CPUExecutionProvider"]
    with pytest.warns(RuntimeWarning, match="TensorrtExecutionProvider"):
        assert onnx_session.resolve_providers(["tensorrt"], cpu_only) == cpu_only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time it is silent
        assert onnx_session.resolve_providers(["TensorrtExecutionProvider"], cpu_only) == cpu_only
    # A provider the build has comes first, the CPU stays as the fallback for unsupported nodes.
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_session.resolve_providers(["cuda"], with_cuda) == with_cuda
    assert onnx_session.resolve_providers([], with_cuda) == cpu_only


def test_sessions_on_an_absent_cuda_provider_run_on_cpu(sample_faces) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to fall back from")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        encoder = FastEncoder(threads=1, providers=("CUDAExecutionProvider",))
        detector = FastMMOD(threads=1, providers=("cuda",))
    assert encoder.providers == detector.providers == ["CPUExecutionProvider"]
    _, rgb, shapes = sample_faces[0]
    want = np.asarray([np.asarray(v) for v in models.encoder().compute_face_descriptor(rgb, shapes, 1)])
    assert np.abs(encoder.face_descriptors(rgb, shapes) - want).max() < TOLERANCE


def test_readers_refuse_each_others_files() -> None:
    import face_recognition_models

    with pytest.raises(DlibFormatError):
        load_face_resnet(face_recognition_models.cnn_face_detector_model_location())
    with pytest.raises(DlibFormatError):
        load_dlib_mmod(face_recognition_models.face_recognition_model_location())
