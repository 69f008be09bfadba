"""What the user is asked to look at, and how well the clustering agrees with them. Pure numpy.

`suggestions`: "maybe the same person" — pairs of persons whose centroids are within `REVIEW`, and
faces in no person within `REVIEW` of a person's centroid, nearest first; leaving out what cannot
be (a pair sharing a photo, a face whose photo the person is already in) and what the user already
declined (persons apart, a face said not to be that person, a face taken out of every person).

`evaluate`: the persons the user named are the labels; pairwise precision and recall of the
clustering on those faces, re-run at each threshold of a sweep (same-photo rule kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from facepipe.people import graph

REVIEW = 0.65
"""Suggest up to this distance (person centroid to centroid, or face to centroid): above the clustering
threshold (0.5, nothing closer was left apart unless a rule said so) and a little past the usual 0.6."""

SWEEP = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)


@dataclass(frozen=True)
class Group:
    """One person's faces as review sees them."""

    person_id: str
    face_ids: list[str]
    embeddings: np.ndarray
    image_keys: set[str]
    cover_face_id: str | None


@dataclass(frozen=True)
class Loose:
    """A face in no person."""

    face_id: str
    image_key: str
    embedding: np.ndarray
    declined: frozenset[str]  # persons the user said it is not


def suggestions(
    groups: Sequence[Group], loose: Sequence[Loose], apart: Iterable[tuple[str, str]], limit: int = 50
) -> list[dict]:
    """Ranked suggestions: {"kind": "persons", "person_id", "other_id", "distance", "face_ids": [cover, cover]}
    and {"kind": "face", "face_id", "image_key", "person_id", "distance", "face_ids": [face, cover]}."""
    if not groups:
        return []
    declined = {tuple(sorted(p)) for p in apart}
    centroids = np.stack([g.embeddings.mean(axis=0) for g in groups]).astype(np.float32)
    out: list[dict] = []
    d = graph.pairwise(centroids, centroids)
    for i, j in zip(*np.nonzero(np.triu(d < REVIEW, k=1)), strict=True):
        a, b = groups[i], groups[j]
        if tuple(sorted((a.person_id, b.person_id))) in declined or a.image_keys & b.image_keys:
            continue
        out.append(
            {
                "kind": "persons",
                "person_id": a.person_id,
                "other_id": b.person_id,
                "distance": round(float(d[i, j]), 4),
                "face_ids": [a.cover_face_id or a.face_ids[0], b.cover_face_id or b.face_ids[0]],
            }
        )
    if loose:
        x = np.stack([f.embedding for f in loose]).astype(np.float32)
        d = graph.pairwise(x, centroids)
        for r, face in enumerate(loose):
            for c in np.argsort(d[r]):
                g = groups[int(c)]
                if d[r, c] >= REVIEW:
                    break
                if g.person_id in face.declined or face.image_key in g.image_keys:
                    continue
                out.append(
                    {
                        "kind": "face",
                        "face_id": face.face_id,
                        "image_key": face.image_key,
                        "person_id": g.person_id,
                        "distance": round(float(d[r, c]), 4),
                        "face_ids": [face.face_id, g.cover_face_id or g.face_ids[0]],
                    }
                )
                break  # one suggestion per face: its nearest possible person
    out.sort(key=lambda s: s["distance"])
    return out[:limit]


def pairwise_scores(labels: Sequence[str], predicted: Sequence[int]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of `predicted` clusters against `labels` (same length)."""
    n = len(labels)
    same_label = np.array([[labels[i] == labels[j] for j in range(n)] for i in range(n)])
    same_cluster = np.array([[predicted[i] == predicted[j] for j in range(n)] for i in range(n)])
    upper = np.triu(np.ones((n, n), bool), k=1)
    tp = int((same_label & same_cluster & upper).sum())
    pred, truth = int((same_cluster & upper).sum()), int((same_label & upper).sum())
    precision = tp / pred if pred else 1.0
    recall = tp / truth if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "pairs": truth}


def evaluate(
    labels: Sequence[str], image_keys: Sequence[str], x: np.ndarray, thresholds: Iterable[float] = SWEEP
) -> list[dict]:
    """Per threshold: the labelled faces clustered alone (Chinese whispers, two faces of one photo
    apart) and scored against their labels."""
    d = graph.pairwise(x.astype(np.float32), x.astype(np.float32))
    rules = graph.Constraints.photos(image_keys)
    rows = []
    for t in thresholds:
        edges = [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(d < t, k=1)), strict=True)]
        predicted = graph.constrained_whispers(len(labels), edges, rules)
        rows.append({"threshold": t, **pairwise_scores(labels, predicted)})
    return rows


def by_person(rows: Iterable[tuple[str | None, str, str, np.ndarray]], covers: Mapping[str, str]) -> list[Group]:
    """(person_id, face_id, image_key, embedding) rows -> one Group per person."""
    grouped: dict[str, tuple[list[str], list[np.ndarray], set[str]]] = {}
    for pid, fid, key, emb in rows:
        if pid:
            fids, embs, keys = grouped.setdefault(pid, ([], [], set()))
            fids.append(fid)
            embs.append(emb)
            keys.add(key)
    return [Group(p, f, np.stack(e), k, covers.get(p)) for p, (f, e, k) in sorted(grouped.items())]
