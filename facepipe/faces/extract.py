"""The functional core: a photo's bytes in, its face records out."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from facepipe.faces.detection import DetectSettings, detect
from facepipe.faces.embedding import embed
from facepipe.faces.loading import DEFAULT_MAX_PIXELS, ImageLoadError, encode_crop, load_rgb
from facepipe.faces.metadata import read_metadata
from facepipe.faces.models import Engines
from facepipe.faces.onnx_session import CPU
from facepipe.faces.records import Face, ImageRecord, face_id

EMBEDDING_MODEL = "dlib-resnet-v1-5pt"


@dataclass(frozen=True)
class ExtractSettings:
    detect: DetectSettings = field(default_factory=DetectSettings)
    num_jitters: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    engines: Engines = field(default_factory=Engines)  # what runs the networks: not in model_version

    @property
    def model_version(self) -> str:
        """Changes whenever a setting that changes the faces changes (it is the assets' code_version)."""
        return f"{self.detect.tag()}+{EMBEDDING_MODEL}-j{self.num_jitters}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExtractSettings:
        """Parse the FACEPIPE_* detection and engine variables of `env` (facepipe.settings passes the environment)."""
        upsample = env.get("FACEPIPE_UPSAMPLE", "auto")
        defaults = DetectSettings()
        return cls(
            detect=DetectSettings(
                detector=env.get("FACEPIPE_DETECTOR") or defaults.detector,
                upsample=None if upsample in ("", "auto") else int(upsample),
                min_face=int(env.get("FACEPIPE_MIN_FACE") or defaults.min_face),
                max_side=int(env.get("FACEPIPE_MAX_SIDE") or defaults.max_side),
                min_score=float(env.get("FACEPIPE_MIN_SCORE") or defaults.min_score),
            ),
            max_pixels=int(env.get("FACEPIPE_MAX_PIXELS") or DEFAULT_MAX_PIXELS),
            engines=Engines(
                cnn=env.get("FACEPIPE_CNN_ENGINE") or "onnx",
                embed=env.get("FACEPIPE_EMBED_ENGINE") or "onnx",
                threads=int(env.get("OMP_NUM_THREADS") or 0),
                providers=tuple(p.strip() for p in (env.get("FACEPIPE_ONNX_PROVIDERS") or CPU).split(",") if p.strip())
                or (CPU,),
            ),
        )


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def warm_up(settings: ExtractSettings) -> None:
    """Load the networks these settings use, by running them once on a blank image (a worker started
    ahead of its first photo, so that photo does not pay for the models)."""
    import numpy as np

    blank = np.zeros((64, 64, 3), dtype=np.uint8)
    detect(blank, settings.detect, settings.engines)
    embed(blank, [(8, 56, 56, 8)], settings.num_jitters, settings.engines)


def extract_faces(data: bytes, image_key: str, settings: ExtractSettings | None = None) -> ImageRecord:
    """Every face in the photo, or an `error` record saying why there could be none."""
    settings = settings or ExtractSettings()
    started = time.perf_counter()
    digest = sha256_of(data)
    record = ImageRecord(
        image_key=image_key,
        sha256=digest,
        status="ok",
        detector=settings.detect.detector,
        model_version=settings.model_version,
        metadata=read_metadata(data),
    )
    try:
        rgb = load_rgb(data, settings.max_pixels)
    except ImageLoadError as exc:
        record.status, record.reason = "error", str(exc)
        record.seconds = time.perf_counter() - started
        return record
    record.height, record.width = rgb.shape[:2]
    detections = detect(rgb, settings.detect, settings.engines)
    vectors = embed(rgb, [d.box for d in detections], settings.num_jitters, settings.engines)
    record.faces = [
        Face(
            face_id=face_id(image_key, digest, d.box),
            image_key=image_key,
            sha256=digest,
            top=d.box[0],
            right=d.box[1],
            bottom=d.box[2],
            left=d.box[3],
            score=d.score,
            detector=settings.detect.detector,
            embedding=vector,
            crop=encode_crop(rgb, d.box),
            model_version=settings.model_version,
        )
        for d, vector in zip(detections, vectors, strict=True)
    ]
    record.seconds = time.perf_counter() - started
    return record
