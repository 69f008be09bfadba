"""Stable person ids: which id each new cluster of faces keeps (reuse, reclaim, or a new one)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from facepipe.people import constraints, graph
from facepipe.people.records import PeopleError, person_number
from facepipe.people.state import State, timestamp

RECLAIM = 0.5
"""A new cluster takes over a person that lost all its faces if their centroids are this close."""


def choose_ids(
    clusters: Sequence[Sequence[int]],
    previous: Mapping[int, str | None],
    vectors: Mapping[int, np.ndarray],
    persons: Mapping[str, tuple[str | None, np.ndarray | None]],
    alive: set[str],
) -> dict[int, str]:
    """Cluster index -> an existing person id, for the clusters that should keep or reclaim one.

    `previous` is each face's cluster before, `persons` every person's (name, centroid), `alive` the
    persons that still have faces outside these clusters. The clusters left out need new ids.
    """
    # By overlap with the previous clusters: named persons first, then most shared faces, then oldest id.
    candidates = []
    for n, vs in enumerate(clusters):
        for pid, shared in Counter(previous[v] for v in vs if previous[v]).items():
            unnamed = persons.get(pid, (None,))[0] is None
            candidates.append((unnamed, -shared, person_number(pid), pid, n))
    assigned: dict[int, str] = {}
    used: set[str] = set()
    for *_, pid, n in sorted(candidates):
        if n not in assigned and pid not in used:
            assigned[n] = pid
            used.add(pid)

    # Left over: take over a person that has no face left (outside these components), if the centroids
    # are close: the same people after re-indexing with other settings, or photos deleted and re-added.
    orphans = [pid for pid, (_, c) in persons.items() if c is not None and pid not in used and pid not in alive]
    open_clusters = [n for n in range(len(clusters)) if n not in assigned]
    if open_clusters and orphans:
        centroids = np.stack([persons[pid][1] for pid in orphans])
        means = np.stack([np.mean([vectors[v] for v in clusters[n]], axis=0) for n in open_clusters])
        d = graph.pairwise(means.astype(np.float32), centroids)
        for r, c in sorted(zip(*np.nonzero(d < RECLAIM), strict=True), key=lambda rc: d[rc]):
            n, pid = open_clusters[r], orphans[c]
            if n not in assigned and pid not in used:
                assigned[n] = pid
                used.add(pid)
    return assigned


def recluster(state: State, comp: list[int], comp_edges: list[tuple[int, int]]) -> list[str]:
    """Chinese whispers with the constraints (two faces of one photo apart, the user's rules and persons
    apart) on one set of components, then each cluster gets the id it should keep: the person its
    fixed faces were put in, else by `choose_ids`. Updates the faces' clusters and persons, and the
    touched persons' centroids and covers. Returns the new ids."""
    faces = state.faces_in("id", comp)
    pins, nots = _user_rules(state, faces)
    vertices = [f for f in faces if pins.get(f.row) != constraints.NOBODY]
    keep = {f.row for f in vertices}
    rules = constraints.for_whispers(vertices, pins, nots, constraints.apart_map(state.apart_pairs()))
    kept_edges = [(a, b) for a, b in comp_edges if a in keep and b in keep]
    clusters = graph.clusters([f.row for f in vertices], kept_edges, rules)
    state.mark_component(comp)
    previous, vectors = state.component_faces()
    pinned = {n: pins[v] for n, vs in enumerate(clusters) for v in vs if pins.get(v)}
    free = [n for n in range(len(clusters)) if n not in pinned]
    chosen = choose_ids(
        [clusters[n] for n in free], previous, vectors, state.names_and_centroids(), state.clusters_outside_component()
    )
    assigned = {**pinned, **{free[k]: pid for k, pid in chosen.items()}}
    created = []
    now = timestamp()
    for n in range(len(clusters)):
        if n not in assigned:
            assigned[n] = state.new_person(now)
            created.append(assigned[n])

    cluster_of: dict[int, str | None] = dict.fromkeys(comp)
    for n, vs in enumerate(clusters):
        for v in vs:
            cluster_of[v] = assigned[n]
    canonical = {pid: state.canonical(pid) for pid in set(cluster_of.values()) if pid}
    person_of = {v: canonical[c] if c else None for v, c in cluster_of.items()}
    for v in _one_face_per_photo(state, faces, person_of, pins, nots, vectors):
        cluster_of[v] = person_of[v] = None
    state.set_clusters(cluster_of)

    # Centroid and cover of every cluster touched; then what each face is after merges.
    for pid in {c for c in previous.values() if c} | set(assigned.values()):
        rows = state.cluster_faces(pid)
        if not rows:
            continue  # keeps its last centroid, so that it can be reclaimed later
        centroid, cover = graph.centroid_and_cover(np.stack([v for _, v in rows]))
        state.set_centroid(pid, centroid, rows[cover][0], now)
    state.set_persons_of(person_of)
    return created


def _user_rules(state: State, faces: list[constraints.FaceAt]) -> tuple[dict[int, str], dict[int, set[str]]]:
    """The pins and nots of these faces, as the persons those are now (a forgotten person's rule is dropped)."""
    rules = state.rules_of_images([f.image_key for f in faces])
    pins, nots = constraints.pins_and_nots(constraints.match(rules, faces))

    def now(pid: str) -> str | None:
        try:
            return state.canonical(pid)
        except PeopleError:
            return None

    pins = {row: (now(p) or "") if p else p for row, p in pins.items()}
    pins = {row: p for row, p in pins.items() if p or p == constraints.NOBODY}
    return pins, {row: {q for p in ps if (q := now(p))} for row, ps in nots.items()}


def _one_face_per_photo(
    state: State,
    faces: list[constraints.FaceAt],
    person_of: Mapping[int, str | None],
    pins: Mapping[int, str],
    nots: Mapping[int, set[str]],
    vectors: Mapping[int, np.ndarray],
) -> list[int]:
    """The safety net after clustering and merges: faces of this component to take out of their person
    because the person already has a face in the photo (a pinned face wins, else the one nearest the
    person's other faces), or because the user said the face is not that person."""
    out = [f.row for f in faces if person_of.get(f.row) and person_of[f.row] in nots.get(f.row, ())]
    keys = sorted({f.image_key for f in faces})
    others = state.faces_in("image_key", keys)
    holders: dict[tuple[str, str], list[int]] = defaultdict(list)
    for f in others:
        pid = person_of.get(f.row, f.person_id)
        if pid and f.row not in out:
            holders[(f.image_key, pid)].append(f.row)
    for (_, pid), rows in holders.items():
        if len(rows) < 2:
            continue
        mine = [r for r in rows if r in person_of]
        members = [vectors[r] for r, p in person_of.items() if p == pid and r in vectors]
        centre = np.mean(members, axis=0) if members else None

        def rank(r: int, centre: np.ndarray | None = centre) -> tuple[bool, float]:
            far = float(np.linalg.norm(vectors[r] - centre)) if centre is not None and r in vectors else 0.0
            return (not pins.get(r) and r in person_of, far)  # pinned, then faces kept from before, then nearest

        winner = min(rows, key=rank)
        out += [r for r in mine if r != winner]
    return out
