"""The user's decisions as clustering constraints: which face a rule is about after a re-index, and the
marks, avoids and fixed labels Chinese whispers gets from them. Pure: no SQL, no I/O.

A rule is made on one face (`face_id`) but is kept by photo and box: faces found again with other
settings or another detector get new ids and slightly different boxes, so a rule goes to the face of
its photo with the same id, else to the one whose box overlaps its box most (IoU >= `SAME_FACE`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from facepipe.faces.evaluation import iou
from facepipe.faces.records import Box
from facepipe.people.graph import Constraints

SAME_FACE = 0.4
"""Two boxes of one photo are the same face from this IoU up (detectors differ by a few pixels to a
margin: HOG, CNN and YuNet boxes of one face overlap 0.5-0.8 on the sample photos)."""

NOBODY = ""
"""The person of a face the user took out of every person (a rule 'is' with no person)."""


@dataclass(frozen=True)
class Rule:
    id: int
    kind: str  # 'is' or 'not'
    person_id: str | None
    face_id: str
    image_key: str
    box: Box


@dataclass(frozen=True)
class FaceAt:
    """A face of the component being clustered: where it is, and the person it was in before."""

    row: int
    face_id: str
    image_key: str
    box: Box | None
    person_id: str | None
    cluster: str | None = None


def match(rules: Iterable[Rule], faces: Sequence[FaceAt]) -> dict[int, list[Rule]]:
    """Face row -> the rules that hold for it, oldest first (each rule goes to one face at most)."""
    by_image: dict[str, list[FaceAt]] = defaultdict(list)
    for f in faces:
        by_image[f.image_key].append(f)
    out: dict[int, list[Rule]] = defaultdict(list)
    for rule in sorted(rules, key=lambda r: r.id):
        here = by_image.get(rule.image_key, [])
        same = [f for f in here if f.face_id == rule.face_id]
        if same:
            out[same[0].row].append(rule)
            continue
        scored = [(iou(rule.box, f.box), f.row) for f in here if f.box is not None]
        best = max(scored, default=(0.0, -1))
        if best[0] >= SAME_FACE:
            out[best[1]].append(rule)
    return dict(out)


def predecessor(box: Box | None, gone: Sequence[FaceAt]) -> FaceAt | None:
    """The face of the same photo a new face replaces (re-indexed, another detector): the box overlapping most."""
    if box is None:
        return None
    best = max(((iou(box, f.box), n) for n, f in enumerate(gone) if f.box is not None), default=(0.0, -1))
    return gone[best[1]] if best[0] >= SAME_FACE else None


def pins_and_nots(matched: Mapping[int, list[Rule]]) -> tuple[dict[int, str], dict[int, set[str]]]:
    """Face row -> the person it is (the latest 'is'; NOBODY: no one), and -> the persons it is not."""
    pins: dict[int, str] = {}
    nots: dict[int, set[str]] = defaultdict(set)
    for row, rules in matched.items():
        for rule in rules:
            if rule.kind == "is":
                pins[row] = rule.person_id or NOBODY
            elif rule.person_id:
                nots[row].add(rule.person_id)
    return pins, dict(nots)


def for_whispers(
    vertices: Sequence[FaceAt],
    pins: Mapping[int, str],
    nots: Mapping[int, set[str]],
    apart: Mapping[str, set[str]],
) -> Constraints:
    """The constraints of these faces: never two faces of one photo; never a face with a person the
    user said it is not, nor with faces of a person said to be another one (`apart`, both ways);
    faces put in a person stay in it together (fixed labels)."""
    marks, avoid, fixed = [], [], {}
    for n, f in enumerate(vertices):
        person = pins.get(f.row) or f.person_id
        mine = {f"image:{f.image_key}"}
        shun = {f"image:{f.image_key}"}
        if person:
            mine.add(f"person:{person}")
            shun |= {f"person:{other}" for other in apart.get(person, ())}
        shun |= {f"person:{p}" for p in nots.get(f.row, ())}
        marks.append(frozenset(mine))
        avoid.append(frozenset(shun))
        if pins.get(f.row):
            fixed[n] = pins[f.row]
    return Constraints(marks, avoid, fixed)


def apart_map(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        out[a].add(b)
        out[b].add(a)
    return dict(out)
