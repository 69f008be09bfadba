"""The face graph: distances, edges between faces closer than `THRESHOLD`, Chinese whispers. Pure numpy, no I/O."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

THRESHOLD = 0.5
"""Chinese whispers links two faces closer than this (Euclidean on dlib's 128-d encodings)."""

BLOCK = 256
"""New faces per distance block: 256 x 100k float32 distances is 100 MB."""


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of a and b (float32, clipped at 0 before the root)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0, out=sq))


ROUNDS = 100
"""Passes over the vertices at most (dlib's default); clustering stops earlier once no label moves."""


@dataclass(frozen=True)
class Constraints:
    """What the clustering must respect, per vertex (0..n-1).

    `marks[v]` are tokens v carries (its photo, the person it was in) and `avoid[v]` the tokens it
    must never share a cluster with; `fixed[v]` is a label v keeps whatever its neighbours say (faces
    the user put in a person: every vertex with the same fixed label is one cluster, a must-link).
    A vertex never joins a cluster where its marks meet a member's avoid or the other way round, so
    every cluster satisfies the cannot-links at every step, not only at the end.
    """

    marks: Sequence[frozenset[str]]
    avoid: Sequence[frozenset[str]]
    fixed: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def photos(cls, image_keys: Sequence[str]) -> Constraints:
        """Only the rule every clustering keeps: two faces of one photo are two people."""
        marks = [frozenset({f"image:{k}"}) for k in image_keys]
        return cls(marks, marks)


def constrained_whispers(n: int, edges: Sequence[tuple[int, int]], rules: Constraints, seed: int = 0) -> list[int]:
    """Chinese whispers with cannot-links and fixed labels (must-links): each vertex in turn (a seeded
    order) takes the label most of its neighbours have among the labels it may join. Deterministic."""
    near: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        if a != b:
            near[a].append(b)
            near[b].append(a)
    fixed_label = {name: n + k for k, name in enumerate(sorted(set(rules.fixed.values())))}
    label = [fixed_label[rules.fixed[v]] if v in rules.fixed else v for v in range(n)]
    marks_in: dict[int, Counter[str]] = defaultdict(Counter)
    avoid_in: dict[int, Counter[str]] = defaultdict(Counter)
    for v in range(n):
        marks_in[label[v]].update(rules.marks[v])
        avoid_in[label[v]].update(rules.avoid[v])

    def allowed(v: int, target: int) -> bool:
        return not (
            any(marks_in[target][t] for t in rules.avoid[v]) or any(avoid_in[target][t] for t in rules.marks[v])
        )

    order = np.random.default_rng(seed).permutation(n)
    for _ in range(ROUNDS):
        moved = 0
        for v in map(int, order):
            if v in rules.fixed or not near[v]:
                continue
            votes = Counter(label[u] for u in near[v])
            here = votes[label[v]]
            for candidate, count in sorted(votes.items(), key=lambda lc: (-lc[1], lc[0])):
                if candidate == label[v] or count < here or (count == here and candidate > label[v]):
                    break  # nothing allowed beats staying (a tie goes to the smaller label)
                if allowed(v, candidate):
                    marks_in[label[v]].subtract(rules.marks[v])
                    avoid_in[label[v]].subtract(rules.avoid[v])
                    label[v] = candidate
                    marks_in[candidate].update(rules.marks[v])
                    avoid_in[candidate].update(rules.avoid[v])
                    moved += 1
                    break
        if not moved:
            break
    return label


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


def clusters(
    vertices: Sequence[int], edges: Sequence[tuple[int, int]], rules: Constraints | None = None
) -> list[list[int]]:
    """Constrained Chinese whispers on these vertices (`rules` by position in `vertices`, default none);
    the clusters of two or more, or holding a fixed vertex, ordered by their oldest vertex."""
    local = {v: n for n, v in enumerate(vertices)}
    rules = rules or Constraints([frozenset()] * len(vertices), [frozenset()] * len(vertices))
    labels = constrained_whispers(len(vertices), [(local[a], local[b]) for a, b in edges], rules)
    members: dict[int, list[int]] = defaultdict(list)
    for v, label in zip(vertices, labels, strict=True):
        members[label].append(v)
    fixed = {vertices[n] for n in rules.fixed}
    found = [vs for vs in members.values() if len(vs) >= 2 or fixed.intersection(vs)]
    found.sort(key=min)  # deterministic order: new ids follow the oldest face
    return found


def centroid_and_cover(x: np.ndarray) -> tuple[np.ndarray, int]:
    """The mean of these embeddings and the row nearest it (a cluster's thumbnail)."""
    centroid = x.mean(axis=0)
    return centroid, int(np.argmin(np.linalg.norm(x - centroid, axis=1)))
