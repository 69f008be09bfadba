"""Which clustering turns faces into persons best? Measured on the sample photos.

    .venv/bin/python benchmarks/people_clustering.py [--detector hog|cnn] [--cache FILE]

Faces come from every photo under ../shared/data (face_recognition, cocoindex, dlib_faces), extracted
with facepipe's own settings. Ground truth: the 5 `knn_examples/train/<person>/` folders, plus the
face_recognition photos whose file names say who they are (obama*, biden*, alex*, the knn `test/` shots,
faces in group photos told apart by position). Every other face (cocoindex, dlib_faces, the girl in
obama_and_biden) is a distractor counted as a person of its own.

Per method and threshold it prints: pairwise precision/recall/F1 over all faces (a pair is "same"
when both faces share a cluster of 2 or more), how many clusters each labelled person is split over,
how many labelled clusters absorbed a foreign face, and whether the knn `train/` folders come out as
one person per folder (alex_lacamoire has a single photo there, so it may stay unassigned).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KNN = "face_recognition/examples/knn_examples/"

# Multi-face photos: person per face, faces ordered left to right (None: not labelled).
GROUPS = {
    KNN + "test/kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    KNN + "test/obama_and_biden.jpg": ["biden", "obama", None],
    "face_recognition/examples/two_people.jpg": ["obama", "biden"],
}
SINGLES = {
    KNN + "test/alex_lacamoire1.jpg": "alex_lacamoire",
    KNN + "test/johnsnow_test1.jpg": "kit_harington",
    KNN + "test/obama1.jpg": "obama",
    "face_recognition/examples/alex-lacamoire.png": "alex_lacamoire",
    "face_recognition/examples/lin-manuel-miranda.png": "lin_manuel_miranda",
    "face_recognition/tests/test_images/32bit.png": "obama",
}


def label_of(image: str, rank: int, faces_in_image: int) -> str | None:
    if image in GROUPS:
        labels = GROUPS[image]
        return labels[rank] if faces_in_image == len(labels) else None
    if faces_in_image != 1:
        return None
    if image.startswith(KNN + "train/"):
        return image.split("/")[-2]
    if image in SINGLES:
        return SINGLES[image]
    name = image.rsplit("/", 1)[-1]
    if image.startswith("face_recognition/") and name.startswith(("obama", "biden")):
        return name.split("_")[0].split("-")[0].split(".")[0].rstrip("0123456789")
    return None


def extract(detector: str) -> list[tuple[str, tuple, np.ndarray]]:
    from facepipe.faces.detection import DetectSettings
    from facepipe.faces.extract import ExtractSettings, extract_faces

    settings = ExtractSettings(detect=DetectSettings(detector=detector))
    photos = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = []
    for photo in photos:
        record = extract_faces(photo.read_bytes(), str(photo.relative_to(DATA)), settings)
        out.extend((record.image_key, f.box, f.embedding) for f in record.faces)
    return out


# -- methods: each returns one cluster number per face; singletons may share -1 ------------------------


def chinese_whispers(x: np.ndarray, threshold: float) -> np.ndarray:
    import dlib

    labels = dlib.chinese_whispers_clustering([dlib.vector(v.astype(float).tolist()) for v in x], threshold)
    return np.asarray(labels)


def chinese_whispers_apart(x: np.ndarray, threshold: float, images: list[str]) -> np.ndarray:
    """Chinese whispers on the < threshold graph without edges between faces of the same photo."""
    import dlib

    d = distances(x)
    edges = [(i, i) for i in range(len(x))]
    edges += [(i, j) for i, j in zip(*np.nonzero(np.triu(d < threshold, 1)), strict=True) if images[i] != images[j]]
    return np.asarray(dlib.chinese_whispers([(int(i), int(j)) for i, j in edges]))


def components(x: np.ndarray, threshold: float) -> np.ndarray:
    """DBSCAN with min_samples=2 is exactly this: connected components of the < threshold graph."""
    d = distances(x)
    labels = -np.ones(len(x), int)
    n = 0
    for i in range(len(x)):
        if labels[i] >= 0:
            continue
        stack, labels[i] = [i], n
        while stack:
            j = stack.pop()
            for k in np.flatnonzero((d[j] < threshold) & (labels < 0)):
                labels[k] = n
                stack.append(k)
        n += 1
    return labels


def dbscan(x: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    d = distances(x)
    core = (d <= eps).sum(1) >= min_samples
    labels = -np.ones(len(x), int)
    n = 0
    for i in np.flatnonzero(core):
        if labels[i] >= 0:
            continue
        stack, labels[i] = [i], n
        while stack:
            j = stack.pop()
            for k in np.flatnonzero((d[j] <= eps) & (labels < 0)):
                labels[k] = n
                if core[k]:
                    stack.append(k)
        n += 1
    for i in np.flatnonzero(labels < 0):  # noise: own cluster
        labels[i], n = n, n + 1
    return labels


def agglomerative(x: np.ndarray, threshold: float, linkage: str) -> np.ndarray:
    d = distances(x)
    clusters = [[i] for i in range(len(x))]
    while len(clusters) > 1:
        best, pair = np.inf, None
        for a, b in combinations(range(len(clusters)), 2):
            block = d[np.ix_(clusters[a], clusters[b])]
            link = block.mean() if linkage == "average" else block.max()
            if link < best:
                best, pair = link, (a, b)
        if best >= threshold or pair is None:
            break
        a, b = pair
        clusters[a] += clusters.pop(b)
    labels = np.empty(len(x), int)
    for n, members in enumerate(clusters):
        labels[members] = n
    return labels


def distances(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)


# -- scoring -------------------------------------------------------------------------------------------


def score(labels: np.ndarray, truth: list[str], images: list[str]) -> dict:
    size = Counter(labels.tolist())
    assigned = [size[c] >= 2 for c in labels]  # singletons stay unassigned, as in facepipe
    tp = fp = fn = 0
    for i, j in combinations(range(len(labels)), 2):
        same_pred = assigned[i] and labels[i] == labels[j]
        same_true = truth[i] == truth[j]
        tp += same_pred and same_true
        fp += same_pred and not same_true
        fn += same_true and not same_pred
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    people = defaultdict(set)
    for c, t, a in zip(labels, truth, assigned, strict=True):
        if not t.startswith("?"):
            people[t].add(c if a else f"single{id(t)}{c}")
    splits = sum(len(cs) - 1 for cs in people.values())
    members = defaultdict(set)
    for c, t, a in zip(labels, truth, assigned, strict=True):
        if a:
            members[c].add(t)
    impure = sum(1 for ts in members.values() if len(ts) > 1)
    # knn train: one person per folder (alex_lacamoire's lone photo may be a singleton)
    train = defaultdict(set)
    owner = defaultdict(set)
    for c, t, a, img in zip(labels, truth, assigned, images, strict=True):
        if img.startswith(KNN + "train/"):
            train[t].add(c if a else None)
            if a:
                owner[c].add(t)
    knn_ok = all(len(cs) == 1 and (None not in cs or t == "alex_lacamoire") for t, cs in train.items()) and all(
        len(ts) == 1 for ts in owner.values()
    )
    same_photo = sum(
        1
        for i, j in combinations(range(len(labels)), 2)
        if assigned[i] and labels[i] == labels[j] and images[i] == images[j]
    )
    lp_tp = lp_fp = 0
    for i, j in combinations(range(len(labels)), 2):
        if truth[i].startswith("?") and truth[j].startswith("?"):
            continue
        if assigned[i] and labels[i] == labels[j]:
            lp_tp += truth[i] == truth[j]
            lp_fp += truth[i] != truth[j]
    return {
        "LP": lp_tp / (lp_tp + lp_fp) if lp_tp + lp_fp else 1.0,
        "same_photo": same_photo,
        "P": precision,
        "R": recall,
        "F1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "splits": splits,
        "impure": impure,
        "clusters": sum(1 for n in size.values() if n >= 2),
        "unassigned": sum(1 for a in assigned if not a),
        "knn": knn_ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", default="hog", choices=["hog", "cnn", "yunet"])
    parser.add_argument("--cache", type=Path, help="pickle of extracted faces (written if missing)")
    args = parser.parse_args()
    if args.cache and args.cache.exists():
        faces = pickle.loads(args.cache.read_bytes())
    else:
        started = time.perf_counter()
        faces = extract(args.detector)
        print(f"extracted {len(faces)} faces in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(faces))

    by_image = defaultdict(list)
    for n, (image, box, _) in enumerate(faces):
        by_image[image].append((box[3], n))
    truth: list[str] = [""] * len(faces)
    for image, entries in by_image.items():
        for rank, (_, n) in enumerate(sorted(entries)):
            truth[n] = label_of(image, rank, len(entries)) or f"?{n}"
    images = [image for image, _, _ in faces]
    x = np.stack([e for _, _, e in faces]).astype(np.float64)
    labelled = Counter(t for t in truth if not t.startswith("?"))
    print(f"{len(faces)} faces ({args.detector}), {sum(labelled.values())} labelled: {dict(sorted(labelled.items()))}")

    methods = [(f"chinese_whispers {t}", lambda x, t=t: chinese_whispers(x, t)) for t in (0.4, 0.45, 0.5, 0.55, 0.6)]
    methods += [
        (f"chinese_whispers {t} apart", lambda x, t=t: chinese_whispers_apart(x, t, images)) for t in (0.5, 0.55, 0.6)
    ]
    methods += [(f"facepipe constrained {t}", lambda x, t=t: constrained(x, t, images)) for t in (0.45, 0.5, 0.55, 0.6)]
    methods += [(f"dbscan eps={t} min=2", lambda x, t=t: components(x, t)) for t in (0.5, 0.6)]
    methods += [(f"dbscan eps={t} min=3", lambda x, t=t: dbscan(x, t, 3)) for t in (0.5, 0.6)]
    methods += [
        (f"agglomerative {k} {t}", lambda x, t=t, k=k: agglomerative(x, t, k))
        for k in ("average", "complete")
        for t in (0.5, 0.6)
    ]
    print(
        f"{'method':32} {'LP':>5} {'P':>5} {'R':>5} {'F1':>5} {'photo':>5} {'splits':>6} {'impure':>6} "
        f"{'clusters':>8} {'unassigned':>10} knn-ok  ms"
    )
    for name, method in methods:
        started = time.perf_counter()
        labels = method(x)
        ms = (time.perf_counter() - started) * 1000
        s = score(labels, truth, images)
        print(
            f"{name:32} {s['LP']:5.2f} {s['P']:5.2f} {s['R']:5.2f} {s['F1']:5.2f} {s['same_photo']:5d} "
            f"{s['splits']:6d} {s['impure']:6d} "
            f"{s['clusters']:8d} {s['unassigned']:10d} {'yes' if s['knn'] else 'NO ':6} {ms:5.0f}"
        )
    same_person_cue(x, truth, images)


def constrained(x: np.ndarray, threshold: float, images: list[str]) -> np.ndarray:
    """facepipe's clustering: Chinese whispers with two faces of one photo as a cannot-link."""
    from facepipe.people import graph

    d = graph.pairwise(x.astype(np.float32), x.astype(np.float32))
    edges = [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(d < threshold, k=1)), strict=True)]
    return np.asarray(graph.constrained_whispers(len(x), edges, graph.Constraints.photos(images)))


MAYBE_SAME = {"cocoindex/Solvay_conference_1927.jpg", "cocoindex/einplanck3.jpg"}
"""Distractor photos that share people (Einstein and Planck are at Solvay): their pairs are not counted."""


def same_person_cue(x: np.ndarray, truth: list[str], images: list[str]) -> None:
    """The distance under which the search page marks a match "same person": the nearest pair of two
    different people, and how many same-person pairs fall under it. Different people: two labels, a
    label and a distractor, or two distractors of different photos (except photos that share people)."""
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    same, other = [], []
    nearest = (9.0, "", "")
    for i, j in combinations(range(len(x)), 2):
        if images[i] == images[j]:
            continue
        unknown = truth[i].startswith("?"), truth[j].startswith("?")
        if all(unknown) and images[i] in MAYBE_SAME and images[j] in MAYBE_SAME:
            continue
        if truth[i] == truth[j]:
            same.append(d[i, j])
            continue
        other.append(d[i, j])
        nearest = min(nearest, (d[i, j], images[i], images[j]))
    cue = np.floor(nearest[0] * 100) / 100
    under = sum(v < cue for v in same) / len(same)
    print(
        f"same-person cue: same-person pairs max {max(same):.3f} (95% under {np.percentile(same, 95):.3f}); "
        f"nearest two different people {nearest[0]:.3f} ({nearest[1]} / {nearest[2]}); "
        f"cue {cue:.2f} keeps {under:.0%} of same-person pairs"
    )


if __name__ == "__main__":
    main()
