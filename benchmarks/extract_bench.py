"""Face extraction on CPU: CocoIndex's reference configuration vs facepipe, lever by lever.

    .venv/bin/python benchmarks/extract_bench.py              # every row + the 200-photo library, ~15 min
    .venv/bin/python benchmarks/extract_bench.py --solvay     # the 2560x1853 Solvay photo alone (~4 min)
    .venv/bin/python benchmarks/extract_bench.py --only library --no-write

Every row runs in its own subprocess on the same photos (copied into a temp folder), timed from
process start to exit, so start-up, model loading and Dagster are included where they exist.
Peak memory is the largest RSS sum over the subprocess tree (polled every 50 ms); "other load"
is the CPU the rest of the machine used meanwhile (in cores), because a shared machine skews
wall times. Detection is scored against dlib_faces/training.xml (IoU >= 0.4, facepipe.faces.
evaluation), identity on face_recognition's photo pairs (largest face per photo, same person
when the distance is < 0.6). The results replace this benchmark's blocks in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEPIPE_SAMPLE_DATA") or REPO.parent / "shared" / "data")
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
MAX_WIDTH = 1280  # CocoIndex's MAX_IMAGE_WIDTH
SAME_PERSON = 0.6
MIN_IOU = 0.4

# --------------------------------------------------------------------------------------------
# Photos, ground truth and identity pairs
# --------------------------------------------------------------------------------------------

KNN = "face_recognition/examples/knn_examples/train"
TESTS = "face_recognition/tests/test_images"
BENCH_PHOTOS: dict[str, str] = {  # key (path in the temp images folder) -> source under DATA
    **{f"dlib_faces/{n}": f"dlib_faces/{n}" for n in ("2007_007763.jpg", "2008_001009.jpg", "2008_001322.jpg")},
    "dlib_faces/2008_002079.jpg": "dlib_faces/2008_002079.jpg",
    "cocoindex/Carter_welcomes_Reagan.jpg": "cocoindex/Carter_welcomes_Reagan.jpg",
    "cocoindex/Steve_Jobs_and_Bill_Gates_(522695099).jpg": "cocoindex/Steve_Jobs_and_Bill_Gates_(522695099).jpg",
    "cocoindex/einplanck3.jpg": "cocoindex/einplanck3.jpg",
    **{
        f"knn/{p}": f"{KNN}/{p}"
        for p in (
            "alex_lacamoire/img1.jpg",
            "biden/biden.jpg",
            "biden/biden2.jpg",
            "kit_harington/john1.jpeg",
            "kit_harington/john2.jpeg",
            "obama/obama.jpg",
            "obama/obama2.jpg",
            "rose_leslie/img1.jpg",
            "rose_leslie/img2.jpg",
        )
    },
    # tests/test_images obama.jpg, obama2.jpg and biden.jpg are byte-identical to the knn ones above.
    "tests/obama3.jpg": f"{TESTS}/obama3.jpg",
}
CORE_PHOTOS = [  # the dlib-engine lever runs on these only: dlib's own CNN takes minutes on the portraits
    *(k for k in BENCH_PHOTOS if k.startswith("dlib_faces/")),
    "cocoindex/Carter_welcomes_Reagan.jpg",
    "cocoindex/einplanck3.jpg",
]
BIG_KEYS = [  # the 12 photos blown up to 12 MP (`--only big`): the labelled ones and a mix of the rest
    *(k for k in BENCH_PHOTOS if k.startswith(("dlib_faces/", "cocoindex/"))),
    "knn/alex_lacamoire/img1.jpg",
    "knn/biden/biden.jpg",
    "knn/obama/obama.jpg",
    "knn/kit_harington/john1.jpeg",
    "knn/rose_leslie/img1.jpg",
]
BIG_SIZE = (4000, 3000)
BIG_PLACEMENT: dict[str, tuple[float, int, int]] = {}  # key -> (scale, x offset, y offset) in the 12 MP photo
SOLVAY_PHOTOS = {"cocoindex/Solvay_conference_1927.jpg": "cocoindex/Solvay_conference_1927.jpg"}
LIBRARY_SOURCES = [
    *BENCH_PHOTOS.values(),
    "cocoindex/Solvay_conference_1927.jpg",
    "face_recognition/examples/two_people.jpg",
    "face_recognition/examples/knn_examples/test/obama_and_biden.jpg",
    "face_recognition/examples/knn_examples/test/kit_with_rose.jpg",
    "face_recognition/examples/knn_examples/test/johnsnow_test1.jpg",
    "face_recognition/examples/knn_examples/test/alex_lacamoire1.jpg",
    "face_recognition/examples/lin-manuel-miranda.png",
]


def person_of(key: str) -> str | None:
    if key.startswith("knn/"):
        return key.split("/")[1]
    if key == "tests/obama3.jpg":
        return "obama"
    return None


def identity_pairs(keys: list[str]) -> list[tuple[str, str, bool]]:
    """All pairs of the knn train photos, plus tests obama3 vs obama, obama2 (same) and biden (not)."""
    knn = [k for k in keys if k.startswith("knn/")]
    pairs = [(a, b, person_of(a) == person_of(b)) for a, b in itertools.combinations(knn, 2)]
    if "tests/obama3.jpg" in keys:
        for other in ("knn/obama/obama.jpg", "knn/obama/obama2.jpg", "knn/biden/biden.jpg"):
            if other in keys:
                pairs.append(("tests/obama3.jpg", other, person_of(other) == "obama"))
    return pairs


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    kind: str  # "reference" | "core" | "index"
    change: str  # what differs from the baseline row
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 0  # core rows: 0 = facepipe's default (one per core)
    variant: str = "extract"  # core rows: extract | batched | decode_twice | png_roundtrip
    photos: str = "bench"  # bench | core | solvay | library
    baseline: str | None = None
    data: str | None = None  # index rows: reuse this data folder name (second run)
    spans: bool = False  # index rows: run through benchmarks/index_spans.py (where the time went)


ONE_THREAD = {"OMP_NUM_THREADS": "1"}

MAIN_ROWS = [
    Row(
        "A reference",
        "reference",
        "CocoIndex's example: face_recognition CNN (dlib), upsample 1, width <= 1280, PNG crops re-encoded",
    ),
    Row("B facepipe default", "index", "`facepipe index`, Dagster included, fresh data folder", data="default"),
    Row("C facepipe fastest", "index", "`facepipe index` with the fastest mode measured below", data="fastest"),
]

LEVER_ROWS = [
    Row(
        "core, 2 workers",
        "core",
        "B's extraction alone (`extract_many`, pool of 2), no Dagster, Parquet or stores",
        baseline="core, 1 worker",
    ),
    Row("core, 1 worker", "core", "one process, one thread (baseline of the levers below)", workers=1, env=ONE_THREAD),
    Row(
        "1 process, 2 onnx threads",
        "core",
        "one process, onnxruntime intra-op threads = 2 instead of a pool",
        workers=1,
        baseline="core, 1 worker",
    ),
    Row(
        "batched detect + embed",
        "core",
        "FastMMOD.detect_batch on same-size photos, one compute_face_descriptor call per 8 photos",
        workers=1,
        env=ONE_THREAD,
        variant="batched",
        baseline="core, 1 worker",
    ),
    Row(
        "always upsample 1",
        "core",
        "FACEPIPE_UPSAMPLE=1, no max-side cap (no size/min-face policy)",
        workers=1,
        env={**ONE_THREAD, "FACEPIPE_UPSAMPLE": "1", "FACEPIPE_MAX_SIDE": "100000"},
        baseline="core, 1 worker",
    ),
    Row(
        "decode twice",
        "core",
        "the photo is decoded again for embedding (as separate detect/embed stages would)",
        workers=1,
        env=ONE_THREAD,
        variant="decode_twice",
        baseline="core, 1 worker",
    ),
    Row(
        "PNG crop round-trip",
        "core",
        "embed from a saved PNG crop (face_recognition.face_encodings on the crop), like A",
        workers=1,
        env=ONE_THREAD,
        variant="png_roundtrip",
        baseline="core, 1 worker",
    ),
    Row(
        "onnx engine, 6 photos",
        "core",
        "core 1 worker on the 4 dlib_faces photos, Carter_welcomes_Reagan and einplanck3 only",
        workers=1,
        env=ONE_THREAD,
        photos="core",
    ),
    Row(
        "dlib CNN engine, 6 photos",
        "core",
        "FACEPIPE_CNN_ENGINE=dlib (dlib-bin's own CNN), same 6 photos",
        workers=1,
        env={**ONE_THREAD, "FACEPIPE_CNN_ENGINE": "dlib"},
        photos="core",
        baseline="onnx engine, 6 photos",
    ),
    Row(
        "skip unchanged (2nd index)",
        "index",
        "`facepipe index` again on B's data folder: nothing changed",
        data="default",
        baseline="B facepipe default",
    ),
]

FAST_CANDIDATES = [
    Row("fast? cnn min64", "core", "CNN, FACEPIPE_MIN_FACE=64 (upsample 0)", env={"FACEPIPE_MIN_FACE": "64"}),
    Row(
        "fast? cnn min64 max1280",
        "core",
        "CNN, min face 64, FACEPIPE_MAX_SIDE=1280",
        env={"FACEPIPE_MIN_FACE": "64", "FACEPIPE_MAX_SIDE": "1280"},
    ),
    Row("fast? hog min32", "core", "HOG, min face 32 (upsample 1)", env={"FACEPIPE_DETECTOR": "hog"}),
    Row(
        "fast? hog min64",
        "core",
        "HOG, min face 64 (upsample 0)",
        env={"FACEPIPE_DETECTOR": "hog", "FACEPIPE_MIN_FACE": "64"},
    ),
    Row(
        "fast? hog min64 max1280",
        "core",
        "HOG, min face 64, max side 1280",
        env={"FACEPIPE_DETECTOR": "hog", "FACEPIPE_MIN_FACE": "64", "FACEPIPE_MAX_SIDE": "1280"},
    ),
]

SOLVAY_ROWS = [
    Row("A reference", "reference", "as above", photos="solvay"),
    Row("core, 2 workers", "core", "facepipe's default extraction, pool of 2", photos="solvay"),
    Row("core, 1 worker", "core", "one process, one thread", workers=1, env=ONE_THREAD, photos="solvay"),
    Row("core, hog min32", "core", "HOG, min face 32, pool of 2", env={"FACEPIPE_DETECTOR": "hog"}, photos="solvay"),
    Row("facepipe index", "index", "`facepipe index`, fresh data folder", photos="solvay", data="solvay"),
]

LIBRARY_ROWS = [
    Row(
        "library: facepipe index",
        "index",
        "`facepipe index` on the library, fresh",
        photos="library",
        data="lib",
        spans=True,
    ),
    Row("library: core, 2 workers", "core", "`extract_many` on the same photos, no Dagster", photos="library"),
    Row("library: 2nd index", "index", "nothing changed", photos="library", data="lib"),
    Row(
        "library: FACEPIPE_BATCH=64",
        "index",
        "`facepipe index`, fresh, 4 runs of 64 photos (the old default) instead of one of 200",
        env={"FACEPIPE_BATCH": "64"},
        photos="library",
        data="lib64",
        spans=True,
        baseline="library: facepipe index",
    ),
    Row(
        "17 photos: facepipe index",
        "index",
        "`facepipe index` on the 17 benchmark photos at their real size, fresh",
        data="spans17",
        spans=True,
    ),
    Row("17 photos: core, 2 workers", "core", "`extract_many` on the same photos, no Dagster"),
]


# --------------------------------------------------------------------------------------------
# Inside a row's subprocess
# --------------------------------------------------------------------------------------------


def _faces_json(boxes, embeddings) -> list[dict]:
    return [
        {"box": [int(v) for v in box], "embedding": [round(float(x), 6) for x in emb]}
        for box, emb in zip(boxes, embeddings, strict=True)
    ]


def run_reference(photos: dict[str, Path]) -> dict:
    """CocoIndex's face_recognition example, step for step (examples/face_recognition/main.py)."""
    import warnings

    import numpy as np
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition

    out: dict = {"faces": {}, "seconds": {}}
    for key, path in photos.items():
        started = time.perf_counter()
        orig_img = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
        if orig_img.width > MAX_WIDTH:
            ratio = orig_img.width * 1.0 / MAX_WIDTH
            img = orig_img.resize((MAX_WIDTH, int(orig_img.height / ratio)), resample=Image.Resampling.BICUBIC)
        else:
            ratio = 1.0
            img = orig_img
        locs = face_recognition.face_locations(np.array(img), number_of_times_to_upsample=1, model="cnn")
        boxes, embeddings = [], []
        for top, right, bottom, left in locs:
            rect = (int(left * ratio), int(top * ratio), int(right * ratio), int(bottom * ratio))
            buf = io.BytesIO()
            orig_img.crop(rect).save(buf, format="PNG")
            face = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
            embedding = face_recognition.face_encodings(
                np.array(face), known_face_locations=[(0, face.width - 1, face.height - 1, 0)]
            )[0]
            boxes.append((rect[1], rect[2], rect[3], rect[0]))
            embeddings.append(embedding)
        out["faces"][key] = _faces_json(boxes, embeddings)
        out["seconds"][key] = time.perf_counter() - started
    return out


def run_core(photos: dict[str, Path], workers: int, variant: str) -> dict:
    from facepipe import settings as facepipe_settings
    from facepipe.faces.batch import extract_many

    settings = facepipe_settings.current().extract
    out: dict = {"faces": {}, "seconds": {}, "model_version": settings.model_version, "inside": {}}
    if variant == "extract":
        records = extract_many(list(photos.items()), settings, workers or None)
    else:
        records = _variant_records(photos, settings, variant, out["inside"])
    for record in records:
        if not record.ok:
            raise RuntimeError(f"{record.image_key}: {record.reason}")
        out["faces"][record.image_key] = _faces_json([f.box for f in record.faces], [f.embedding for f in record.faces])
        out["seconds"][record.image_key] = record.seconds
    return out


def _variant_records(photos: dict[str, Path], settings, variant: str, inside: dict[str, float]):
    """The levers facepipe does not use, built from its own parts (one process). `inside` gets the
    seconds of the part that differs, timed in the process (wall times swing more than that); names
    starting "vs: " time facepipe's way on the same inputs, and are taken off the row's wall time."""
    from facepipe.faces.extract import extract_faces

    if variant == "batched":
        yield from _batched_records(photos, settings, inside)
        return
    if variant not in ("decode_twice", "png_roundtrip"):
        raise ValueError(variant)
    import numpy as np
    from PIL import Image

    from facepipe.faces import embedding as embedding_mod
    from facepipe.faces import loading

    original_embed = embedding_mod.embed

    def timed(name: str, started: float) -> None:
        inside[name] = inside.get(name, 0.0) + time.perf_counter() - started

    def embed_decoding_again(rgb, boxes, num_jitters=1):
        started = time.perf_counter()
        again = loading.load_rgb(current["data"])
        timed("second decode", started)
        return original_embed(again, boxes, num_jitters)

    def embed_from_png(rgb, boxes, num_jitters=1):
        import face_recognition

        started = time.perf_counter()
        original_embed(rgb, boxes, num_jitters)  # what facepipe does, timed for comparison only
        timed("vs: embed from the photo (facepipe)", started)
        rows = []
        for top, right, bottom, left in boxes:
            started = time.perf_counter()
            buf = io.BytesIO()
            Image.fromarray(rgb[top:bottom, left:right]).save(buf, format="PNG")
            face = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            timed("PNG encode + decode", started)
            started = time.perf_counter()
            h, w = face.shape[:2]
            rows.append(face_recognition.face_encodings(face, [(0, w - 1, h - 1, 0)], num_jitters)[0])
            timed("embed from the PNG crop", started)
        return np.asarray(rows, dtype=np.float32).reshape(-1, 128)

    import facepipe.faces.extract as extract_mod

    current: dict = {}
    extract_mod.embed = embed_decoding_again if variant == "decode_twice" else embed_from_png
    for key, path in photos.items():
        current["data"] = path.read_bytes()
        yield extract_faces(current["data"], key, settings)


def _batched_records(photos: dict[str, Path], settings, inside: dict[str, float], chunk: int = 8):
    """Chunks of 8 photos: same-size working images share one FastMMOD call, all faces one encoder call.

    Groups of more than one photo are also detected one by one, and every chunk's faces encoded
    photo by photo, so `inside` compares both ways on the same inputs in the same process."""
    import dlib
    import numpy as np

    from facepipe.faces import models, tiling
    from facepipe.faces.detection import Detection, _to_full_size
    from facepipe.faces.extract import sha256_of
    from facepipe.faces.loading import encode_crop, load_rgb
    from facepipe.faces.records import Face, ImageRecord, face_id

    fast = models.fast_cnn()
    if settings.detect.detector != "cnn" or fast is None:
        raise RuntimeError("the batched lever needs the onnx CNN engine")
    items = list(photos.items())
    for start in range(0, len(items), chunk):
        began = time.perf_counter()
        part = []
        for key, path in items[start : start + chunk]:
            data = path.read_bytes()
            rgb = load_rgb(data, settings.max_pixels)
            band, min_face = settings.detect.band(), settings.detect.effective_min_face()
            level = tiling.plan(*rgb.shape[:2], band, min_face, settings.detect.max_side)[0]
            if len(level.tiles) > 1:
                raise RuntimeError(f"{key}: the batched lever handles photos that fit one tile only")
            scale, upsample = tiling.split_scale(level.scale, band.upsample_steps)
            part.append((key, sha256_of(data), rgb, scale, upsample, tiling.resize(rgb, scale)))
        groups: dict[tuple, list[int]] = {}
        for i, (*_, upsample, work) in enumerate(part):
            groups.setdefault((work.shape, upsample), []).append(i)
        found: dict[int, list[Detection]] = {}
        for (_, upsample), indices in groups.items():
            works = [part[i][5] for i in indices]
            if len(indices) > 1:
                started = time.perf_counter()
                for work in works:
                    fast.detect(work, upsample)
                _add(inside, "vs: detect one by one (same-size groups)", started)
            started = time.perf_counter()
            batch = fast.detect_batch(works, upsample)
            if len(indices) > 1:
                _add(inside, "detect_batch (same-size groups)", started)
            for i, dets in zip(indices, batch, strict=True):
                _, _, rgb, scale, _, _ = part[i]
                boxes = [
                    _to_full_size(t / scale, r / scale, b / scale, left / scale, *rgb.shape[:2])
                    for (left, t, r, b), _ in dets
                ]
                found[i] = [Detection(box, s) for box, (_, s) in zip(boxes, dets, strict=True) if box[2] > box[0]]
        predictor, encoder = models.landmarks_5pt(), models.encoder()
        images, shapes = [], []
        for i, (_, _, rgb, *_) in enumerate(part):
            if not found[i]:
                continue
            objs = dlib.full_object_detections()
            for t, r, b, left in (d.box for d in found[i]):
                objs.append(predictor(rgb, dlib.rectangle(left, t, r, b)))
            images.append(rgb)
            shapes.append(objs)
        started = time.perf_counter()
        for image, objs in zip(images, shapes, strict=True):
            encoder.compute_face_descriptor(image, objs, settings.num_jitters)
        _add(inside, "vs: encode photo by photo", started)
        started = time.perf_counter()
        vectors = iter(encoder.compute_face_descriptor(images, shapes, settings.num_jitters) if images else [])
        _add(inside, "encode the chunk in one call", started)
        per_photo = (time.perf_counter() - began) / len(part)
        for i, (key, digest, rgb, *_) in enumerate(part):
            embs = np.asarray([np.asarray(v) for v in next(vectors)], dtype=np.float32) if found[i] else []
            record = ImageRecord(key, digest, "ok", detector="cnn", model_version=settings.model_version)
            record.height, record.width = rgb.shape[:2]
            record.faces = [
                Face(
                    face_id(key, digest, d.box),
                    key,
                    digest,
                    *d.box,
                    d.score,
                    "cnn",
                    e,
                    encode_crop(rgb, d.box),
                    settings.model_version,
                )
                for d, e in zip(found[i], embs, strict=True)
            ]
            record.seconds = per_photo
            yield record


def _add(inside: dict[str, float], name: str, started: float) -> None:
    inside[name] = inside.get(name, 0.0) + time.perf_counter() - started


def child_main(spec: dict, out_path: Path) -> None:
    started = time.perf_counter()
    photos = {key: Path(p) for key, p in spec["photos"].items()}
    if spec["kind"] == "reference":
        result = run_reference(photos)
    else:
        result = run_core(photos, spec["workers"], spec["variant"])
    result["inner_seconds"] = time.perf_counter() - started
    out_path.write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The parent: run rows in subprocesses and measure them
# --------------------------------------------------------------------------------------------


def _busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


class TreeMemory(threading.Thread):
    """Largest sum of RSS over a process and all its descendants, polled."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self.done.wait(self.interval)


@dataclass
class Measured:
    row: Row
    photos: int
    wall: float
    cpu: float
    other_load: float
    peak_mb: float
    faces: dict[str, list[dict]]
    seconds: dict[str, float]
    log: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def face_count(self) -> int:
        return sum(len(v) for v in self.faces.values())

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.wall

    @property
    def faces_per_s(self) -> float:
        return self.face_count / self.wall


def measure(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float, float, int]:
    """(wall s, CPU s of the tree, other load in cores, peak tree RSS MB, exit code)."""
    import resource

    hz = os.sysconf("SC_CLK_TCK")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = _busy_jiffies()
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        monitor = TreeMemory(proc.pid)
        monitor.start()
        code = proc.wait()
    wall = time.perf_counter() - t0
    monitor.done.set()
    monitor.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    other = max(0.0, (_busy_jiffies() - busy0) / hz - cpu) / wall
    return wall, cpu, other, monitor.peak / 2**20, code


def clean_env(extra: dict[str, str], images: Path | None = None, data: Path | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FACEPIPE_", "DAGSTER_", "QDRANT_", "OMP_", "OPENBLAS_", "MKL_"))
    }
    env["PYTHONWARNINGS"] = "ignore"
    if images is not None:
        env["FACEPIPE_IMAGES"] = str(images)
    if data is not None:
        env["FACEPIPE_DATA"] = str(data)
        env["DAGSTER_HOME"] = str(data / "dagster")
    env.update(extra)
    return env


class Bench:
    def __init__(self, work: Path, verbose: bool = True) -> None:
        self.work = work
        self.verbose = verbose
        self.sets: dict[str, dict[str, Path]] = {}  # photo set -> key -> file in the temp folder
        self.results: dict[str, Measured] = {}

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def photo_set(self, name: str) -> dict[str, Path]:
        if name not in self.sets:
            folder = self.work / f"images-{name}"
            if name == "library":
                self.sets[name] = make_library(folder, LIBRARY_SIZE)
            elif name == "big":
                self.sets[name] = make_big(folder)
            else:
                chosen = {
                    "bench": BENCH_PHOTOS,
                    "core": {k: BENCH_PHOTOS[k] for k in CORE_PHOTOS},
                    "solvay": SOLVAY_PHOTOS,
                    "big-originals": {k: BENCH_PHOTOS[k] for k in BIG_KEYS},
                }[name]
                files = {}
                for key, source in chosen.items():
                    target = folder / key
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(DATA / source, target)
                    files[key] = target
                self.sets[name] = files
        return self.sets[name]

    def run(self, row: Row, label: str | None = None) -> Measured:
        label = label or row.name
        photos = self.photo_set(row.photos)
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        log = self.work / f"{slug}.log"
        self.say(f"[{time.strftime('%H:%M:%S')}] {label}: {len(photos)} photos ...")
        if row.kind == "index":
            data = self.work / f"data-{row.data}"
            env = clean_env(row.env, self.work / f"images-{row.photos}", data)
            cmd = [facepipe_command(), "index", "--json"]
            spans_file = self.work / f"{slug}.spans.json"
            if row.spans:
                spans_script = str(Path(__file__).with_name("index_spans.py"))
                cmd = [sys.executable, spans_script, str(spans_file), "index", "--json"]
            wall, cpu, other, peak, code = measure(cmd, env, log)
            if code != 0:
                raise SystemExit(f"{label} failed ({code}):\n{log.read_text()[-3000:]}")
            faces, seconds = read_parquet(data / "parquet", photos)
            report = _last_json(log.read_text())
            extra = {"report": report, "data": str(data)}
            if row.spans:
                extra["spans"] = json.loads(spans_file.read_text())
            processed = report.get("processed", len(photos)) if report else len(photos)
            # A second run processes nothing: its rate is photos checked per second.
            m = Measured(row, len(photos), wall, cpu, other, peak, faces, seconds, extra=extra)
            m.extra["processed"] = processed
        else:
            spec = {
                "kind": row.kind,
                "photos": {k: str(v) for k, v in photos.items()},
                "workers": row.workers,
                "variant": row.variant,
            }
            spec_file = self.work / f"{slug}.spec.json"
            spec_file.write_text(json.dumps(spec))
            out = self.work / f"{slug}.out.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(spec_file), "--_out", str(out)]
            wall, cpu, other, peak, code = measure(cmd, clean_env(row.env), log)
            if code != 0 or not out.exists():
                raise SystemExit(f"{label} failed ({code}):\n{log.read_text()[-3000:]}")
            result = json.loads(out.read_text())
            m = Measured(row, len(photos), wall, cpu, other, peak, result["faces"], result["seconds"])
            m.extra["inner_seconds"] = result["inner_seconds"]
            m.extra["inside"] = result.get("inside") or {}
            # Work done only to compare ("vs: ...") is not part of the row's own time.
            m.extra["raw_wall"] = m.wall
            compare = sum(v for k, v in m.extra["inside"].items() if k.startswith("vs: "))
            m.wall -= compare
            m.cpu -= compare
        self.results[label] = m
        self.say(
            f"    {m.wall:.1f}s wall, {m.photos_per_s:.3f} photos/s, {m.face_count} faces, "
            f"cpu {m.cpu:.1f}s, peak {m.peak_mb:.0f} MB, other load {m.other_load:.2f}"
        )
        return m


def facepipe_command() -> str:
    script = Path(sys.executable).with_name("facepipe")
    return str(script) if script.exists() else shutil.which("facepipe") or "facepipe"


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return None


def read_parquet(base: Path, photos: dict[str, Path]) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Faces and per-photo extraction seconds that `facepipe index` wrote, by key."""
    import pyarrow.parquet as pq

    faces: dict[str, list[dict]] = {k: [] for k in photos}
    seconds: dict[str, float] = {}
    for file in (base / "images").rglob("*.parquet"):
        for row in pq.read_table(file, columns=["image_key", "seconds"]).to_pylist():
            seconds[row["image_key"]] = row["seconds"]
    for file in (base / "faces").rglob("*.parquet"):
        table = pq.read_table(file, columns=["image_key", "top", "right", "bottom", "left", "embedding"])
        for row in table.to_pylist():
            box = [row["top"], row["right"], row["bottom"], row["left"]]
            faces.setdefault(row["image_key"], []).append({"box": box, "embedding": row["embedding"]})
    return faces, seconds


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass
class Quality:
    recall: float | None
    precision: float | None
    matched: str
    same_ok: int = 0
    same_n: int = 0
    diff_ok: int = 0
    diff_n: int = 0
    same_max: float | None = None  # largest distance between two photos of one person
    diff_min: float | None = None  # smallest distance between two different people

    @property
    def identity(self) -> float | None:
        n = self.same_n + self.diff_n
        return (self.same_ok + self.diff_ok) / n if n else None


def quality(m: Measured) -> Quality:
    import numpy as np

    from facepipe.faces.evaluation import Score, load_imglab

    truth = load_imglab(DATA / "dlib_faces" / "training.xml")
    score = Score()
    for name, boxes in truth.items():
        key = f"dlib_faces/{name}"
        if m.row.photos == "big" and key in BIG_PLACEMENT:
            scale, dx, dy = BIG_PLACEMENT[key]
            boxes = [(t * scale + dy, r * scale + dx, b * scale + dy, lf * scale + dx) for t, r, b, lf in boxes]
        if key in m.faces:
            score.add(boxes, [tuple(f["box"]) for f in m.faces[key]], MIN_IOU)
    q = Quality(
        score.recall if score.truths else None,
        score.precision if score.truths else None,
        f"{score.matched}/{score.truths}",
    )

    def largest(key: str):
        faces = m.faces.get(key) or []
        if not faces:
            return None
        f = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][1] - f["box"][3]))
        return np.asarray(f["embedding"], dtype=np.float32)

    for a, b, same in identity_pairs(list(m.faces)):
        ea, eb = largest(a), largest(b)
        distance = float(np.linalg.norm(ea - eb)) if ea is not None and eb is not None else None
        ok = distance is not None and (distance < SAME_PERSON) == same
        if distance is not None and same:
            q.same_max = max(q.same_max or 0.0, distance)
        elif distance is not None:
            q.diff_min = min(q.diff_min if q.diff_min is not None else 9.0, distance)
        if same:
            q.same_n += 1
            q.same_ok += ok
        else:
            q.diff_n += 1
            q.diff_ok += ok
    return q


# --------------------------------------------------------------------------------------------
# The 200-photo library (Dagster overhead)
# --------------------------------------------------------------------------------------------

LIBRARY_SIZE = 200
LIBRARY_SIDES = (320, 400, 512, 640)


def make_library(folder: Path, size: int) -> dict[str, Path]:
    """Resized, sometimes flipped, recompressed copies of the sample photos (deterministic)."""
    from PIL import Image, ImageOps

    rng = random.Random(size)
    files = {}
    for i in range(size):
        source = DATA / LIBRARY_SOURCES[i % len(LIBRARY_SOURCES)]
        with Image.open(source) as img:
            image = ImageOps.exif_transpose(img).convert("RGB")
        side = rng.choice(LIBRARY_SIDES)
        scale = side / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        key = f"lib/{i // 50:02d}/{i:03d}_{Path(source).stem[:24]}.jpg"
        target = folder / key
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="JPEG", quality=rng.choice((70, 85, 92)))
        files[key] = target
    return files


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    probe = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "import onnxruntime, numpy, json; from facepipe.faces.models import dlib_build;"
            "print(json.dumps([dlib_build(), onnxruntime.__version__, numpy.__version__]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=clean_env({}),
    )
    dlib_build, ort, np_version = json.loads(probe.stdout.strip().splitlines()[-1])
    load = os.getloadavg()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "ram": f"{int(mem.split()[1]) / 2**20:.1f} GiB",
        "dlib": dlib_build,
        "onnxruntime": ort,
        "numpy": np_version,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load": f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min, at the end of the run)",
    }


def fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def table(rows: list[tuple[str, Measured]], ref: Measured | None, results: dict[str, Measured]) -> str:
    head = (
        "| row | what changes | photos | wall s | CPU s | photos/s | faces/s | x ref (photos/s) | x baseline "
        "| recall | precision | same/diff-person | peak RSS MB | other load |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|\n"
    )
    lines = []
    for label, m in rows:
        q = quality(m)
        base = results.get(m.row.baseline or "")
        if label == "skip unchanged (2nd index)" and base is not None:
            x_base = f"{base.wall / m.wall:.1f}x less wall time than {base.row.name}"
        elif base is not None and base.photos == m.photos:
            x_base = f"{m.photos_per_s / base.photos_per_s:.2f}x vs {base.row.name}"
        else:
            x_base = ""
        x_ref = f"{m.photos_per_s / ref.photos_per_s:.1f}x" if ref is not None and ref.photos == m.photos else ""
        ident = (
            f"{fmt(q.identity)} ({q.same_ok}/{q.same_n} same <= {fmt(q.same_max)}, "
            f"{q.diff_ok}/{q.diff_n} diff >= {fmt(q.diff_min)})"
            if q.identity is not None
            else "n/a"
        )
        faces = "0 (skipped)" if m.extra.get("processed") == 0 else f"{m.faces_per_s:.2f}"
        lines.append(
            f"| {label} | {m.row.change} | {m.photos} | {m.wall:.1f} | {m.cpu:.1f} | {m.photos_per_s:.3f} | {faces} "
            f"| {x_ref} "
            f"| {x_base} | {fmt(q.recall)} ({q.matched}) | {fmt(q.precision)} | {ident} | {m.peak_mb:.0f} "
            f"| {m.other_load:.2f} |"
        )
    return head + "\n".join(lines) + "\n"


def replace_block(name: str, body: str) -> None:
    """Rewrite only this benchmark's block `name` in BENCHMARKS.md; the rest of the file is kept."""
    begin, end = f"<!-- extract_bench:{name} begin -->", f"<!-- extract_bench:{name} end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    BENCHMARKS_MD.write_text(text)


BLOCK_TITLES = {
    "results": "### Results",
    "library": "### Dagster overhead: `facepipe index` on a 200-photo library",
    "solvay": "### The Solvay photo (2560x1853, 29 faces): `--solvay`",
    "big": "### 12 MP photos: `--only big`",
    "dlib": "### dlib builds: dlib-bin vs a source build (`--dlib-python`)",
}


def header(command: str, info: dict[str, str], started: datetime, minutes: float) -> str:
    return (
        f"Command: `{command}` (run {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min).  \n"
        f"Machine: {info['cpu']}, {info['ram']} RAM, no GPU; {info['os']}, Python {info['python']}.  \n"
        f"Libraries: {info['dlib']}; onnxruntime {info['onnxruntime']}; numpy {info['numpy']}.  \n"
        f"Load average: {info['load']}.\n"
    )


# --------------------------------------------------------------------------------------------
# dlib builds (--dlib-python): dlib-bin vs a source build, dlib's own CNN and the encoder
# --------------------------------------------------------------------------------------------

DLIB_PHOTOS = ["dlib_faces/2008_001322.jpg", "cocoindex/Carter_welcomes_Reagan.jpg"]


def dlib_speed_main(out_path: Path) -> None:
    """Runs under any Python with dlib, numpy, Pillow and face_recognition_models (no facepipe)."""
    import warnings

    import dlib
    import numpy as np
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition_models as frm

    cnn = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    result: dict = {
        "dlib": dlib.__version__,
        "blas": bool(getattr(dlib, "DLIB_USE_BLAS", False)),
        "cuda": bool(getattr(dlib, "DLIB_USE_CUDA", False)),
        "cnn": {},
    }
    faces = 0
    encode_seconds = 0.0
    for name in DLIB_PHOTOS:
        img = np.asarray(Image.open(DATA / name).convert("RGB"))
        for upsample in (0, 1):
            started = time.perf_counter()
            dets = cnn(img, upsample)
            result["cnn"][f"{Path(name).name} up{upsample}"] = {
                "seconds": time.perf_counter() - started,
                "boxes": sorted([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in dets),
            }
        shapes = dlib.full_object_detections()
        for d in dets:
            shapes.append(predictor(img, d.rect))
        encoder.compute_face_descriptor(img, shapes, 1)  # warm-up
        started = time.perf_counter()
        for _ in range(3):
            for d in dets:
                one = dlib.full_object_detections()
                one.append(predictor(img, d.rect))
                encoder.compute_face_descriptor(img, one, 1)
        encode_seconds += time.perf_counter() - started
        faces += 3 * len(dets)
    result["encode_per_face"] = encode_seconds / max(faces, 1)
    out_path.write_text(json.dumps(result))


def run_dlib_builds(bench: Bench, other_python: str) -> str:
    variants = [
        ("dlib-bin (this venv)", sys.executable, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}),
        ("source build, 1 BLAS thread", other_python, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}),
        ("source build, 2 BLAS threads", other_python, {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}),
    ]
    rows = []
    for label, python, env in variants:
        out = bench.work / f"dlib-{len(rows)}.json"
        log = bench.work / f"dlib-{len(rows)}.log"
        bench.say(f"[{time.strftime('%H:%M:%S')}] {label} ...")
        cmd = [python, str(Path(__file__).resolve()), "--_dlib_speed", str(out)]
        _wall, _cpu, other, _peak, code = measure(cmd, clean_env(env), log)
        if code != 0:
            raise SystemExit(f"{label} failed:\n{log.read_text()[-3000:]}")
        rows.append((label, json.loads(out.read_text()), other))
    fast = _onnx_reference_seconds()
    keys = list(rows[0][1]["cnn"])
    lines = [
        "| dlib | build flags | " + " | ".join(f"CNN {k} s" for k in keys) + " | landmarks + encoding per face s "
        "| same boxes as dlib-bin | other load |\n",
        "|---|---|" + "--:|" * len(keys) + "--:|---|--:|\n",
    ]
    base = rows[0][1]
    for label, r, other in rows:
        same = all(r["cnn"][k]["boxes"] == base["cnn"][k]["boxes"] for k in keys)
        flags = ", ".join(n for n, on in (("BLAS", r["blas"]), ("CUDA", r["cuda"])) if on) or "no BLAS"
        cells = " | ".join(
            f"{r['cnn'][k]['seconds']:.2f} ({base['cnn'][k]['seconds'] / r['cnn'][k]['seconds']:.1f}x)" for k in keys
        )
        lines.append(
            f"| {label} | dlib {r['dlib']}, {flags} | {cells} | {r['encode_per_face']:.3f} "
            f"| {'yes' if same else 'no'} | {other:.2f} |\n"
        )
    lines.append(
        "| facepipe's onnx engine (FastMMOD, 1 thread) | onnxruntime | "
        + " | ".join(f"{fast[k]:.2f} ({base['cnn'][k]['seconds'] / fast[k]:.1f}x)" for k in keys)
        + " | | | |\n"
    )
    return "".join(lines)


def _onnx_reference_seconds() -> dict[str, float]:
    """FastMMOD on the same photos and upsampling, best of 3, in a one-thread subprocess."""
    code = (
        "import json, time, numpy as np, sys; from PIL import Image; from facepipe.faces.mmod import FastMMOD;"
        "f = FastMMOD(threads=1); out = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    img = np.asarray(Image.open(sys.argv[2] + '/' + name).convert('RGB'))\n"
        "    for up in (0, 1):\n"
        "        f.detect(img, up); best = 1e9\n"
        "        for _ in range(3):\n"
        "            t = time.perf_counter(); f.detect(img, up); best = min(best, time.perf_counter() - t)\n"
        "        out[name.split('/')[-1] + f' up{up}'] = best\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(DLIB_PHOTOS), str(DATA)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=clean_env({"OMP_NUM_THREADS": "1"}),
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def run_main(bench: Bench, selected: set[str]) -> tuple[str, dict]:
    results = bench.results
    summary: dict = {}
    if "main" in selected:
        bench.run(MAIN_ROWS[0])  # the reference first, on a quiet machine
        bench.run(MAIN_ROWS[1])
    if "levers" in selected:
        for row in LEVER_ROWS:
            if row.kind == "index" and "B facepipe default" not in results:
                continue
            bench.run(row)
    if "main" in selected:
        candidates = [bench.run(row) for row in FAST_CANDIDATES]
        fastest = max(candidates, key=lambda m: m.photos_per_s)
        summary["fastest"] = fastest.row.name
        row = MAIN_ROWS[2]
        bench.run(Row(row.name, row.kind, f"{row.change}: {fastest.row.change}", env=fastest.row.env, data=row.data))
    ref = results.get("A reference")
    out = []
    main_labels = [r.name for r in MAIN_ROWS if r.name in results]
    if main_labels:
        out.append("#### Reference vs facepipe\n\n")
        out.append(table([(k, results[k]) for k in main_labels], ref, results))
        if ref is not None and "B facepipe default" in results:
            b, c = results["B facepipe default"], results["C facepipe fastest"]
            qr, qb, qc = quality(ref), quality(b), quality(c)
            out.append(
                f"\nTargets: B is {b.photos_per_s / ref.photos_per_s:.1f}x the reference's photos/s "
                f"(target >= 4x) with recall {fmt(qb.recall)} vs {fmt(qr.recall)} (target: at least the "
                f"reference's); C is {c.photos_per_s / ref.photos_per_s:.1f}x (target >= 20x) with recall "
                f"{fmt(qc.recall)}. C = `{summary.get('fastest')}`, the highest photos/s of the candidates below.\n"
            )
    lever_labels = [r.name for r in LEVER_ROWS if r.name in results]
    if lever_labels:
        out.append("\n#### Levers, one at a time (same photos; `x baseline` = photos/s vs the row named there)\n\n")
        out.append(table([(k, results[k]) for k in lever_labels], ref, results))
        inside = [(k, results[k].extra.get("inside")) for k in lever_labels if results[k].extra.get("inside")]
        if inside:
            out.append(
                "\nTimed inside those processes (seconds summed over the photos; `vs:` = facepipe's way on the "
                "same inputs, done only to compare and taken off the row's wall and CPU time):\n\n"
                "| row | inside the process |\n|---|---|\n"
            )
            out.extend(
                f"| {k} | {'; '.join(f'{name} {sec:.2f} s' for name, sec in parts.items())} |\n" for k, parts in inside
            )
    cand_labels = [r.name for r in FAST_CANDIDATES if r.name in results]
    if cand_labels:
        out.append("\n#### Fastest-mode candidates (extraction alone, pool of 2, no Dagster)\n\n")
        out.append(table([(k, results[k]) for k in cand_labels], ref, results))
    return "".join(out), summary


DAGSTER_SHARE = (
    "**Dagster's share**, as measured here: the wall time the `facepipe index` process spends in Dagster "
    "code, that is the first import of `facepipe.defs` (which imports Dagster), creating or opening the "
    "Dagster home, building the Definitions, the dynamic partitions, and each run "
    "(`execute_in_process`) minus the facepipe work inside it; timed by spans around facepipe's own "
    "work functions and Dagster's entry points (`benchmarks/index_spans.py`). facepipe's work: "
    "extraction with Parquet and manifest (`index_batch`), exports, people, compaction, folder sync, "
    "store clients and the embedded Postgres. Neither: interpreter start-up, facepipe's own imports, "
    "the CLI and exit. Since Dagster loads on a thread of its own while the main thread starts the "
    "workers and the embedded Postgres (`facepipe.warmup`), what counts of the import and the home is "
    "the main thread's wait for that thread; the thread's own spans are shown as \"beside facepipe\" "
    "and not counted (they overlapped facepipe's work, and slowed it where both wanted a core)."
)


def breakdown(m: Measured) -> tuple[list[tuple[str, float]], float]:
    """Rows of where the wall time went, from the spans of an index row, and Dagster's seconds."""
    spans = m.extra["spans"]
    workers = os.cpu_count() or 1
    busy = sum(m.seconds.values()) / workers  # the pool's extraction time if no worker ever idled
    outer, dagster = spans["outer"], spans["dagster"]
    batch = outer.get("extraction + Parquet + manifest (index_batch)", 0.0)
    runs = spans["calls"].get("runs (execute_in_process)", 0)
    parts = [
        ("facepipe: detection + embedding (sum of per-photo `seconds` / workers)", busy),
        ("facepipe: rest of `index_batch` (pool start, Parquet, manifest, workers idle at the end)", batch - busy),
        *(
            (f"facepipe: {name}", sec)
            for name, sec in sorted(outer.items(), key=lambda kv: -kv[1])
            if not name.startswith("extraction")
        ),
        *(
            (f"Dagster: {name}" + (f", {runs} runs" if name.startswith("runs") else ""), sec)
            for name, sec in dagster.items()
        ),
    ]
    accounted = sum(sec for _, sec in parts)
    parts.append(("neither: interpreter, facepipe imports, CLI, exit (wall minus the above)", m.wall - accounted))
    parts += [
        (f"beside facepipe, not counted: Dagster {name} on its own thread", sec)
        for name, sec in spans.get("background", {}).items()
    ]
    return parts, sum(dagster.values())


def breakdown_table(m: Measured) -> str:
    parts, dagster = breakdown(m)
    lines = [f"| where the wall time of `{m.row.name}` went | seconds | share |\n|---|--:|--:|\n"]
    lines.extend(f"| {name} | {sec:.2f} | {sec / m.wall:.1%} |\n" for name, sec in parts)
    lines.append(f"| **Dagster's share** | **{dagster:.2f}** | **{dagster / m.wall:.1%}** |\n")
    lines.append(f"| total wall | {m.wall:.2f} | 100% |\n")
    return "".join(lines)


def run_library(bench: Bench) -> str:
    results = bench.results
    for row in LIBRARY_ROWS:
        bench.run(row)
    e2e, core, again = (results[r.name] for r in LIBRARY_ROWS[:3])
    workers = os.cpu_count() or 1
    runs = e2e.extra["spans"]["calls"].get("runs (execute_in_process)", 0)
    lines = [
        f"{e2e.photos} photos made from the samples (long side {', '.join(map(str, LIBRARY_SIDES))} px, "
        f"half mirrored, JPEG quality 70/85/92), {e2e.face_count} faces, default settings, FACEPIPE_BATCH "
        f"default ({runs} Dagster run(s)), {workers} workers; and the "
        "17 benchmark photos at their real size.\n\n",
        table([(r.name, results[r.name]) for r in LIBRARY_ROWS], None, results),
        f"\n{DAGSTER_SHARE}\n\n",
    ]
    for row in LIBRARY_ROWS:
        if row.spans:
            lines.append(breakdown_table(results[row.name]) + "\n")
    shares = {r.name: breakdown(results[r.name])[1] / results[r.name].wall for r in LIBRARY_ROWS if r.spans}
    small = results["17 photos: facepipe index"]
    small_core = results["17 photos: core, 2 workers"]
    lines.append(
        f"Dagster's share: {shares[LIBRARY_ROWS[0].name]:.1%} on the 200-photo library (target < 10%), "
        f"{shares['library: FACEPIPE_BATCH=64']:.1%} with FACEPIPE_BATCH=64, "
        f"{shares[small.row.name]:.1%} on the 17 photos (target < 5%). "
        f"`facepipe index` took {e2e.wall / core.wall:.2f}x the wall time and {e2e.cpu / core.cpu:.2f}x the CPU "
        f"time of `extract_many` alone on the 200 photos, {small.wall / small_core.wall:.2f}x "
        f"the wall time on the 17. A second `facepipe index` with nothing to do: {again.wall:.1f} s.\n"
    )
    return "".join(lines)


BIG_ROWS = [
    Row("12 MP: core, 2 workers", "core", "default extraction (pool of 2) on the 12 photos at 4000x3000", photos="big"),
    Row(
        "12 MP: facepipe index",
        "index",
        "`facepipe index` on the 12 photos at 4000x3000, fresh data folder",
        photos="big",
        data="big",
    ),
    Row(
        "originals: core, 2 workers",
        "core",
        "default extraction on the same 12 photos at their size",
        photos="big-originals",
    ),
]


def make_big(folder: Path) -> dict[str, Path]:
    """Each photo scaled up (bicubic) to fit 4000x3000, centred on a grey 12 MP canvas: the faces grow with
    the photo, so the smallest face to find is larger but the detector searches 12 MP."""
    from PIL import Image, ImageOps

    files = {}
    for key in BIG_KEYS:
        with Image.open(DATA / BENCH_PHOTOS[key]) as img:
            image = ImageOps.exif_transpose(img).convert("RGB")
        scale = min(BIG_SIZE[0] / image.width, BIG_SIZE[1] / image.height)
        size = (round(image.width * scale), round(image.height * scale))
        canvas = Image.new("RGB", BIG_SIZE, (128, 128, 128))
        dx, dy = (BIG_SIZE[0] - size[0]) // 2, (BIG_SIZE[1] - size[1]) // 2
        canvas.paste(image.resize(size, Image.Resampling.BICUBIC), (dx, dy))
        BIG_PLACEMENT[key] = (scale, dx, dy)
        target = folder / key
        target.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(target, format="JPEG", quality=90)
        files[key] = target
    return files


def run_big(bench: Bench) -> str:
    for row in BIG_ROWS:
        bench.run(row)
    big, e2e, small = (bench.results[r.name] for r in BIG_ROWS)
    same = sum(len(big.faces.get(k) or []) == len(small.faces.get(k) or []) for k in BIG_KEYS)
    return (
        f"{len(BIG_KEYS)} of the benchmark photos, each scaled up (bicubic) to fit 4000x3000 and centred on a grey "
        "4000x3000 canvas (made by the benchmark, not kept), JPEG quality 90; recall on the 4 labelled photos with "
        "the labels scaled and moved the same way.\n\n"
        + table([(r.name, bench.results[r.name]) for r in BIG_ROWS], None, bench.results)
        + f"\nFaces found: {big.face_count} at 12 MP vs {small.face_count} at the original size; the same count on "
        f"{same} of {len(BIG_KEYS)} photos. 12 MP: {big.photos_per_s:.2f} photos/s and {big.faces_per_s:.1f} faces/s "
        f"in extraction, {e2e.photos_per_s:.2f} photos/s end to end; peak RSS {big.peak_mb:.0f} MB "
        f"(extraction, 2 workers) and {e2e.peak_mb:.0f} MB (`facepipe index`).\n"
    )


def run_solvay(bench: Bench) -> str:
    for row in SOLVAY_ROWS:
        bench.run(row, f"solvay: {row.name}")
    rows = [(f"solvay: {r.name}", bench.results[f"solvay: {r.name}"]) for r in SOLVAY_ROWS]
    ref = bench.results["solvay: A reference"]
    body = table(rows, ref, bench.results)
    return body + "\nThe README counts 29 faces in this photo (no boxes to score against).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="main,levers,library", help="comma-separated: main, levers, library, big")
    parser.add_argument("--solvay", action="store_true", help="only the Solvay photo: reference vs facepipe")
    parser.add_argument("--no-write", action="store_true", help="print the results, leave BENCHMARKS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, data folders)")
    parser.add_argument(
        "--dlib-python",
        help="only compare dlib builds: this venv's dlib-bin vs the dlib of this Python "
        "(e.g. a venv made by scripts/build-dlib-openblas.sh)",
    )
    parser.add_argument("--_dlib_speed", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_main(json.loads(args._child.read_text()), args._out)
        return
    if args._dlib_speed:
        dlib_speed_main(args._dlib_speed)
        return

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    command = "python benchmarks/extract_bench.py" + "".join(f" {a}" for a in sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    bench = Bench(work)
    blocks: dict[str, str] = {}
    try:
        if args.dlib_python:
            blocks["dlib"] = run_dlib_builds(bench, args.dlib_python)
        elif args.solvay:
            blocks["solvay"] = run_solvay(bench)
        else:
            selected = set(args.only.split(","))
            if selected & {"main", "levers"}:
                blocks["results"], _ = run_main(bench, selected)
            if "library" in selected:
                blocks["library"] = run_library(bench)
            if "big" in selected:
                blocks["big"] = run_big(bench)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    info = machine()
    minutes = (time.perf_counter() - t0) / 60
    head = header(command, info, started, minutes)
    raw = {label: {**asdict(m.row), **_numbers(m)} for label, m in bench.results.items()}
    for name, body in blocks.items():
        text = f"{BLOCK_TITLES[name]}\n\n{head}\n{body}"
        print(text)
        if not args.no_write:
            replace_block(name, text)
    print(json.dumps(raw, indent=1), file=sys.stderr)


def _numbers(m: Measured) -> dict:
    q = quality(m)
    return {
        "photos": m.photos,
        "faces": m.face_count,
        "wall": round(m.wall, 3),
        "cpu": round(m.cpu, 3),
        "peak_mb": round(m.peak_mb),
        "other_load": round(m.other_load, 2),
        "recall": q.recall,
        "precision": q.precision,
        "identity": q.identity,
        "extract_seconds": round(sum(m.seconds.values()), 3),
    }


if __name__ == "__main__":
    main()
