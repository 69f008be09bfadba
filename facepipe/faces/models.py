"""The face models, loaded once per process (they take ~0.5 s and ~100 MB each).

dlib and onnxruntime are imported by the functions that need them, not when this module is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from facepipe.faces.onnx_graphs import onnx_available
from facepipe.faces.onnx_session import CPU

if TYPE_CHECKING:
    import dlib

    from facepipe.faces.encoder import FastEncoder
    from facepipe.faces.mmod import FastMMOD


@dataclass(frozen=True)
class Engines:
    """Which code runs each network, and how onnxruntime runs the ones on it.

    ``onnx`` runs dlib's own weights on onnxruntime (same boxes and descriptors, several times
    faster than dlib-bin); ``dlib`` runs them in dlib. None of this changes the faces, so none of it
    is part of the model version.
    """

    cnn: str = "onnx"  # the CNN face detector: "onnx" | "dlib"
    embed: str = "onnx"  # the face encoder: "onnx" | "dlib"
    threads: int = 0  # onnxruntime intra-op threads; 0: onnxruntime's default (one per core)
    providers: tuple[str, ...] = (CPU,)  # onnxruntime execution providers, preferred first

    def __post_init__(self) -> None:
        for name, value in (("cnn", self.cnn), ("embed", self.embed)):
            if value not in ("onnx", "dlib"):
                raise ValueError(f"unknown {name} engine {value!r} (expected onnx or dlib)")


def _face_models():
    with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import face_recognition_models

    return face_recognition_models


@cache
def cnn_detector() -> dlib.cnn_face_detection_model_v1:
    import dlib

    return dlib.cnn_face_detection_model_v1(_face_models().cnn_face_detector_model_location())


@cache
def fast_cnn(threads: int = 0, providers: tuple[str, ...] = (CPU,)) -> FastMMOD | None:
    """dlib's CNN weights on onnxruntime (same boxes, ~15x faster than dlib-bin); None if unavailable."""
    from facepipe.faces import mmod

    if not onnx_available():
        return None
    return mmod.FastMMOD(_face_models().cnn_face_detector_model_location(), threads=threads, providers=providers)


@cache
def hog_detector() -> dlib.fhog_object_detector:
    import dlib

    return dlib.get_frontal_face_detector()


@cache
def landmarks_5pt() -> dlib.shape_predictor:
    import dlib

    return dlib.shape_predictor(_face_models().pose_predictor_five_point_model_location())


@cache
def encoder() -> dlib.face_recognition_model_v1:
    import dlib

    return dlib.face_recognition_model_v1(_face_models().face_recognition_model_location())


@cache
def fast_encoder(threads: int = 0, providers: tuple[str, ...] = (CPU,)) -> FastEncoder | None:
    """dlib's face encoder weights on onnxruntime (same descriptors within 1e-6); None if unavailable."""
    from facepipe.faces import encoder as encoder_mod

    if not onnx_available():
        return None
    return encoder_mod.FastEncoder(
        _face_models().face_recognition_model_location(), threads=threads, providers=providers
    )


def dlib_build(engines: Engines | None = None) -> str:
    """What runs the networks, for the start-up log (speed differs ~4x between dlib builds); loads no model."""
    import dlib

    engines = engines or Engines()
    flags = {
        "BLAS": getattr(dlib, "DLIB_USE_BLAS", False),
        "LAPACK": getattr(dlib, "DLIB_USE_LAPACK", False),
        "CUDA": getattr(dlib, "DLIB_USE_CUDA", False),
        "AVX": getattr(dlib, "USE_AVX_INSTRUCTIONS", False),
    }
    on = [name for name, enabled in flags.items() if enabled] or ["no BLAS/CUDA"]
    onnx = "dlib"
    if onnx_available():
        from facepipe.faces.onnx_session import resolve_providers

        onnx = f"onnxruntime ({resolve_providers(engines.providers)[0].removesuffix('ExecutionProvider')})"
    cnn = onnx if engines.cnn == "onnx" else "dlib"
    encoder_on = onnx if engines.embed == "onnx" else "dlib"
    return f"dlib {dlib.__version__} ({', '.join(on)}), CNN on {cnn}, encoder on {encoder_on}"
