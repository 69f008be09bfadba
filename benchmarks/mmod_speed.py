"""Seconds per photo: dlib's CNN face detector vs FastMMOD (same weights), side by side.

    .venv/bin/python benchmarks/mmod_speed.py [PHOTO ...] [--upsample 0,1] [--repeat 3] [--threads 1]

dlib runs once per photo and setting (it is the slow side); FastMMOD runs ``--repeat`` times after
a warm-up and reports the best time. The last column says whether both found the same boxes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"  # the sample photos beside the checkout
DEFAULT_PHOTOS = [
    DATA / "dlib_faces/2008_001322.jpg",
    DATA / "cocoindex/Carter_welcomes_Reagan.jpg",
    DATA / "face_recognition/examples/two_people.jpg",
    DATA / "face_recognition/tests/test_images/obama.jpg",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--upsample", default="0,1", help="comma-separated upsample levels")
    parser.add_argument("--repeat", type=int, default=3, help="FastMMOD runs per photo (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args()

    import dlib
    import face_recognition_models

    from facepipe.faces.mmod import FastMMOD

    model = face_recognition_models.cnn_face_detector_model_location()
    slow = dlib.cnn_face_detection_model_v1(model)
    t0 = time.perf_counter()
    fast = FastMMOD(model, threads=args.threads)
    print(f"FastMMOD load + convert: {time.perf_counter() - t0:.2f} s; threads={args.threads}")
    print(f"{'photo':40s} {'size':>10s} {'up':>3s} {'dlib s':>8s} {'fast s':>8s} {'speedup':>8s}  same")
    totals = {"dlib": 0.0, "fast": 0.0}
    for path in args.photos:
        img = np.asarray(Image.open(path).convert("RGB"))
        for upsample in (int(u) for u in args.upsample.split(",")):
            t0 = time.perf_counter()
            want = [
                ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
                for d in slow(img, upsample)
            ]
            t_dlib = time.perf_counter() - t0
            got = fast.detect(img, upsample)  # warm-up
            t_fast = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                got = fast.detect(img, upsample)
                t_fast = min(t_fast, time.perf_counter() - t0)
            same = sorted(b for b, _ in got) == sorted(b for b, _ in want)
            totals["dlib"] += t_dlib
            totals["fast"] += t_fast
            size = f"{img.shape[1]}x{img.shape[0]}"
            print(
                f"{path.name[:40]:40s} {size:>10s} {upsample:>3d} {t_dlib:8.2f} {t_fast:8.3f} "
                f"{t_dlib / t_fast:7.1f}x  {'yes' if same else 'NO'} ({len(want)} faces)",
                flush=True,
            )
    print(
        f"{'total':40s} {'':>10s} {'':>3s} {totals['dlib']:8.2f} {totals['fast']:8.3f} "
        f"{totals['dlib'] / totals['fast']:7.1f}x"
    )


if __name__ == "__main__":
    main()
