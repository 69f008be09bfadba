"""Stable person ids: which id each new cluster of faces keeps (reuse, reclaim, or a new one)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from facepipe.people import graph
from facepipe.people.records import person_number
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
    """Chinese whispers on one set of components, then each cluster gets the id it should keep; updates
    the faces' clusters and persons, and the touched persons' centroids and covers. Returns the new ids."""
    clusters = graph.clusters(comp, comp_edges)
    state.mark_component(comp)
    previous, vectors = state.component_faces()
    assigned = choose_ids(clusters, previous, vectors, state.names_and_centroids(), state.clusters_outside_component())
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
    state.set_clusters(cluster_of)

    # Centroid and cover of every cluster touched; then what each face is after merges.
    for pid in {c for c in previous.values() if c} | set(assigned.values()):
        rows = state.cluster_faces(pid)
        if not rows:
            continue  # keeps its last centroid, so that it can be reclaimed later
        centroid, cover = graph.centroid_and_cover(np.stack([v for _, v in rows]))
        state.set_centroid(pid, centroid, rows[cover][0], now)
    canonical = {pid: state.canonical(pid) for pid in set(cluster_of.values()) if pid}
    state.set_persons_of({v: canonical[c] if c else None for v, c in cluster_of.items()})
    return created
