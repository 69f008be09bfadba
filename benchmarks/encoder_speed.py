"""Seconds per face: dlib-bin's face encoder vs FastEncoder (same weights on onnxruntime), one thread.

    .venv/bin/python benchmarks/encoder_speed.py [--repeat 5] [--no-write]

Faces: every face dlib's HOG detector finds in the sample photos (upsample 1, 0 above 1500 px),
with dlib's 5-point landmarks. Per photo, both encoders get all its faces in one call, in turns
(dlib, onnx, dlib, onnx, ...), ``--repeat`` times; the best time of each is kept. Both sides include
cutting the aligned 150x150 chips (dlib's extract_image_chips). The machine is shared, so the
ratio, measured side by side, is the claim, not the seconds. Writes its block in BENCHMARKS.md
(between the ``encoder_speed:results`` markers) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every library, before they load

import platform
import re
import sys
import time
import warnings
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
MARK = "encoder_speed:results"


def sample_faces(data: Path) -> list[tuple[str, np.ndarray, object]]:
    import dlib

    from facepipe.faces import models
    from facepipe.faces.loading import load_rgb

    hog, predictor = models.hog_detector(), models.landmarks_5pt()
    out = []
    for path in sorted(p for p in data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        rgb = load_rgb(path.read_bytes())
        rects = hog(rgb, 0 if max(rgb.shape) > 1500 else 1)
        if rects:
            shapes = dlib.full_object_detections()
            for rect in rects:
                shapes.append(predictor(rgb, rect))
            out.append((str(path.relative_to(data)), rgb, shapes))
    return out


def landmarks(predictor, rgb: np.ndarray, rects: list) -> list:
    return [predictor(rgb, rect) for rect in rects]


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="calls per photo and engine (best is kept)")
    parser.add_argument("--data", type=Path, default=DATA, help="the sample photos")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    started_at = datetime.now(UTC)
    began = time.perf_counter()

    import dlib
    import onnxruntime

    from facepipe.faces import models
    from facepipe.faces.encoder import FastEncoder

    reference = models.encoder()
    t0 = time.perf_counter()
    fast = FastEncoder(threads=1)
    load_s = time.perf_counter() - t0
    predictor = models.landmarks_5pt()
    faces = sample_faces(args.data)

    totals = {"dlib": 0.0, "onnx": 0.0, "onnx one by one": 0.0, "landmarks": 0.0}
    n_faces, worst = 0, 0.0
    rows = []
    for name, rgb, shapes in faces:
        want = np.asarray([np.asarray(v) for v in reference.compute_face_descriptor(rgb, shapes, 1)])
        got = fast.face_descriptors(rgb, shapes)  # also the warm-up for this batch size
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        run_dlib = partial(reference.compute_face_descriptor, rgb, shapes, 1)
        run_onnx = partial(fast.face_descriptors, rgb, shapes)
        t_dlib = t_onnx = float("inf")
        for _ in range(args.repeat):  # in turns, so both see the same machine load
            t_dlib = min(t_dlib, best_of(run_dlib, 1))
            t_onnx = min(t_onnx, best_of(run_onnx, 1))
        t_single = 0.0
        for shape in shapes:
            one = dlib.full_object_detections()
            one.append(shape)
            t_single += best_of(partial(fast.face_descriptors, rgb, one), args.repeat)
        t_marks = best_of(partial(landmarks, predictor, rgb, [s.rect for s in shapes]), args.repeat)
        n = len(shapes)
        n_faces += n
        for key, value in (("dlib", t_dlib), ("onnx", t_onnx), ("onnx one by one", t_single), ("landmarks", t_marks)):
            totals[key] += value
        rows.append((name, n, t_dlib / n, t_onnx / n, diff))
        print(
            f"{name[:60]:60s} {n:3d} faces  dlib {t_dlib / n * 1e3:6.1f} ms/face  onnx {t_onnx / n * 1e3:5.1f}"
            f"  {t_dlib / t_onnx:5.1f}x  max diff {diff:.1e}",
            flush=True,
        )

    per = {k: v / n_faces for k, v in totals.items()}
    ratio = per["dlib"] / per["onnx"]
    with_marks = (per["dlib"] + per["landmarks"]) / (per["onnx"] + per["landmarks"])
    print(
        f"{n_faces} faces: dlib {per['dlib'] * 1e3:.1f} ms/face, onnx {per['onnx'] * 1e3:.1f} ms/face: {ratio:.1f}x; "
        f"max abs diff {worst:.1e}"
    )
    if args.no_write:
        return

    load = os.getloadavg()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    largest = sorted(rows, key=lambda r: -r[1])[:5]
    body = "\n".join(
        [
            "### Face encoder: dlib-bin vs FastEncoder (onnxruntime), one thread",
            "",
            f"Command: `.venv/bin/python benchmarks/encoder_speed.py --repeat {args.repeat}` "
            f"(run {started_at:%Y-%m-%d %H:%M} UTC, {(time.perf_counter() - began) / 60:.1f} min).  ",
            f"Machine: {cpu}, {os.cpu_count()} cores shared with other jobs, no GPU; {platform.platform()}, "
            f"Python {platform.python_version()}.  ",
            f"Libraries: dlib {dlib.__version__} (dlib-bin, no BLAS), onnxruntime {onnxruntime.__version__} "
            f"({fast.providers[0]}), numpy {np.__version__}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
            "onnxruntime intra-op threads 1.  ",
            f"Load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min).",
            "",
            f"{n_faces} faces in {len(rows)} sample photos (dlib HOG, 5-point landmarks); per photo all its faces "
            f"in one call, best of {args.repeat} in turns; both sides include dlib's chip extraction. "
            f"FastEncoder load and ONNX build: {load_s:.2f} s.",
            "",
            "| per face | dlib-bin `compute_face_descriptor` | FastEncoder | ratio |",
            "|---|--:|--:|--:|",
            f"| encoding (chips + network) | {per['dlib'] * 1e3:.1f} ms | {per['onnx'] * 1e3:.1f} ms "
            f"| **{ratio:.1f}x** |",
            f"| encoding, onnx one face per call | | {per['onnx one by one'] * 1e3:.1f} ms | "
            f"{per['dlib'] / per['onnx one by one']:.1f}x |",
            f"| landmarks (dlib's 5-point predictor, both) + encoding "
            f"| {(per['dlib'] + per['landmarks']) * 1e3:.1f} ms "
            f"| {(per['onnx'] + per['landmarks']) * 1e3:.1f} ms | {with_marks:.1f}x |",
            "",
            f"Descriptors: max abs difference to dlib's over all {n_faces} faces **{worst:.1e}** (target < 1e-4). "
            "Photos with the most faces:",
            "",
            "| photo | faces | dlib ms/face | onnx ms/face | ratio | max abs diff |",
            "|---|--:|--:|--:|--:|--:|",
            *(
                f"| {name} | {n} | {d * 1e3:.1f} | {o * 1e3:.1f} | {d / o:.1f}x | {diff:.1e} |"
                for name, n, d, o, diff in largest
            ),
        ]
    )
    replace_block(body)
    print(f"wrote the {MARK} block of {BENCHMARKS_MD.name}")


def replace_block(body: str) -> None:
    """Rewrite only this benchmark's block in BENCHMARKS.md; the rest of the file is kept."""
    begin, end = f"<!-- {MARK} begin -->", f"<!-- {MARK} end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    BENCHMARKS_MD.write_text(text)


if __name__ == "__main__":
    main()
