"""dlib models, loaded once per process (they take ~0.5 s and ~100 MB)."""

from __future__ import annotations

import os
import warnings
from functools import cache

import dlib

with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import face_recognition_models as _models


@cache
def cnn_detector() -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(_models.cnn_face_detector_model_location())


@cache
def fast_cnn():
    """dlib's CNN weights on onnxruntime (same boxes, ~15x faster than dlib-bin); None if unavailable.

    One intra-op thread inside worker pools (their initializer sets OMP_NUM_THREADS=1), every core
    otherwise.
    """
    from facepipe.faces import mmod

    if not mmod.available() or os.environ.get("FACEPIPE_CNN_ENGINE") == "dlib":
        return None
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    return mmod.FastMMOD(_models.cnn_face_detector_model_location(), threads=threads)


@cache
def hog_detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@cache
def landmarks_5pt() -> dlib.shape_predictor:
    return dlib.shape_predictor(_models.pose_predictor_five_point_model_location())


@cache
def encoder() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(_models.face_recognition_model_location())


def cnn_model_path() -> str:
    return _models.cnn_face_detector_model_location()


def dlib_build() -> str:
    """What this dlib was built with, for the start-up log (speed differs ~4x between builds)."""
    engine = "CNN on onnxruntime" if fast_cnn() is not None else "CNN on dlib"
    flags = {
        "BLAS": getattr(dlib, "DLIB_USE_BLAS", False),
        "LAPACK": getattr(dlib, "DLIB_USE_LAPACK", False),
        "CUDA": getattr(dlib, "DLIB_USE_CUDA", False),
        "AVX": getattr(dlib, "USE_AVX_INSTRUCTIONS", False),
    }
    on = [name for name, enabled in flags.items() if enabled] or ["no BLAS/CUDA"]
    return f"dlib {dlib.__version__} ({', '.join(on)}), {engine}"
