"""How long `people` takes: a first clustering, then runs where little or nothing changed.

    .venv/bin/python benchmarks/people_update.py [--persons 2000] [--faces-per-person 10] [--per-photo 2]

Synthetic faces on dlib's scale (a person's faces ~0.3 apart, people ~1.6 apart) written as the
faces asset writes them (one Parquet file per photo) into a temporary folder; no stores attached.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facepipe.faces.records import Face, ImageRecord, face_id
from facepipe.people import People
from facepipe.stores.parquet import ParquetStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--faces-per-person", type=int, default=10)
    parser.add_argument("--per-photo", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 0.1, (args.persons, 128)).astype(np.float32)
    who = np.repeat(np.arange(args.persons), args.faces_per_person)
    rng.shuffle(who)

    with tempfile.TemporaryDirectory() as tmp:
        parquet = ParquetStore(root=f"{tmp}/parquet")
        people = People(tmp, parquet)

        def photo(key: str, persons: np.ndarray) -> None:
            faces = []
            for n, p in enumerate(persons):
                box = (n * 50, n * 50 + 40, n * 50 + 40, n * 50)
                emb = centres[p] + rng.normal(0, 0.02, 128).astype(np.float32)
                faces.append(Face(face_id(key, "s", box), key, "s", *box, None, "hog", emb, b"", "bench"))
            parquet.write(ImageRecord(key, "s", "ok", faces=faces))

        started = time.perf_counter()
        photos = len(who) // args.per_photo
        for i in range(photos):
            photo(f"photos/{i:06d}.jpg", who[i * args.per_photo : (i + 1) * args.per_photo])
        print(f"wrote {photos} photos, {len(who)} faces in {time.perf_counter() - started:.1f}s")

        for label, change in [
            ("first clustering", lambda: None),
            ("nothing changed", lambda: None),
            ("one new photo", lambda: photo("photos/new.jpg", np.array([0, 1]))),
            ("one photo deleted", lambda: parquet.delete("photos/000000.jpg")),
            (
                "100 new photos",
                lambda: [photo(f"photos/more{i}.jpg", rng.integers(0, args.persons, 2)) for i in range(100)],
            ),
        ]:
            change()
            started = time.perf_counter()
            stale = people.is_stale()
            stat_s = time.perf_counter() - started
            report = people.update()
            print(
                f"{label:18} {report.seconds:7.2f}s  (stat check {stat_s:.2f}s, stale={stale}) "
                f"read {report.files_read}, re-clustered {report.reclustered}, rewrote {report.files_rewritten}, "
                f"{report.persons} persons over {report.assigned}/{report.faces} faces"
            )


if __name__ == "__main__":
    main()
