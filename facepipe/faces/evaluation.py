"""Scoring detections against hand-labelled boxes (dlib imglab XML), for tests and benchmarks."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from facepipe.faces.records import Box


def load_imglab(xml_path: Path) -> dict[str, list[Box]]:
    """file name -> (top, right, bottom, left) boxes; boxes marked ignore are left out."""
    truth: dict[str, list[Box]] = {}
    for image in ET.parse(xml_path).getroot().iter("image"):
        boxes = truth.setdefault(image.attrib["file"], [])
        for box in image.iter("box"):
            if box.attrib.get("ignore") == "1":
                continue
            top, left = int(box.attrib["top"]), int(box.attrib["left"])
            boxes.append((top, left + int(box.attrib["width"]), top + int(box.attrib["height"]), left))
    return truth


def iou(a: Box, b: Box) -> float:
    top, right, bottom, left = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    area = (a[1] - a[3]) * (a[2] - a[0]) + (b[1] - b[3]) * (b[2] - b[0]) - inter
    return inter / area if area > 0 else 0.0


@dataclass
class Score:
    truths: int = 0
    detections: int = 0
    matched: int = 0

    @property
    def recall(self) -> float:
        return self.matched / self.truths if self.truths else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else 1.0

    def add(self, truth: Sequence[Box], found: Sequence[Box], min_iou: float = 0.4) -> None:
        """Greedy one-to-one matching, best overlaps first."""
        pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
        used_t: set[int] = set()
        used_f: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < min_iou:
                break
            if i not in used_t and j not in used_f:
                used_t.add(i)
                used_f.add(j)
        self.truths += len(truth)
        self.detections += len(found)
        self.matched += len(used_t)
