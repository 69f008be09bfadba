"""The face graph: distances, edges between faces closer than `THRESHOLD`, Chinese whispers. Pure numpy, no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

THRESHOLD = 0.5
"""Chinese whispers links two faces closer than this (Euclidean on dlib's 128-d encodings)."""

BLOCK = 256
"""New faces per distance block: 256 x 100k float32 distances is 100 MB."""


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of a and b (float32, clipped at 0 before the root)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0, out=sq))


def chinese_whispers(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """dlib's Chinese whispers on vertices 0..n-1 (deterministic: dlib seeds its own generator)."""
    import dlib

    return list(dlib.chinese_whispers([(i, i) for i in range(n)] + [(int(a), int(b)) for a, b in edges]))


def new_edges(
    ids: np.ndarray, image_keys: Sequence[str], x: np.ndarray, new_ids: Sequence[int]
) -> Iterator[list[tuple[int, int, float]]]:
    """Edges (a < b, distance) from each new face to every face closer than THRESHOLD, except faces of its
    own photo, one block of new faces at a time. `ids`, `image_keys` and `x` describe every face, by id."""
    position = {int(i): n for n, i in enumerate(ids)}
    new_pos = np.array(sorted(position[i] for i in new_ids))
    is_new = np.zeros(len(ids), bool)
    is_new[new_pos] = True
    for start in range(0, len(new_pos), BLOCK):
        block = new_pos[start : start + BLOCK]
        d = pairwise(x[block], x)
        edges = []
        for r, c in zip(*np.nonzero(d < THRESHOLD), strict=True):
            i = int(block[r])
            if c == i or image_keys[c] == image_keys[i] or (is_new[c] and c < i):
                continue  # itself, the same photo, or a new-new pair already taken from its other end
            a, b = sorted((int(ids[i]), int(ids[c])))
            edges.append((a, b, float(d[r, c])))
        yield edges


def clusters(vertices: Sequence[int], edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Chinese whispers on these vertices; the clusters of two or more, ordered by their oldest vertex."""
    local = {v: n for n, v in enumerate(vertices)}
    labels = chinese_whispers(len(vertices), [(local[a], local[b]) for a, b in edges])
    members: dict[int, list[int]] = defaultdict(list)
    for v, label in zip(vertices, labels, strict=True):
        members[label].append(v)
    found = [vs for vs in members.values() if len(vs) >= 2]
    found.sort(key=min)  # deterministic order: new ids follow the oldest face
    return found


def centroid_and_cover(x: np.ndarray) -> tuple[np.ndarray, int]:
    """The mean of these embeddings and the row nearest it (a cluster's thumbnail)."""
    centroid = x.mean(axis=0)
    return centroid, int(np.argmin(np.linalg.norm(x - centroid, axis=1)))
