"""Do the vector stores hold exactly the faces the Parquet holds? Which images differ?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from facepipe.stores.base import FaceStore
from facepipe.stores.parquet import ParquetStore


@dataclass
class StoreDiff:
    faces: int = 0
    missing: dict[str, int] = field(default_factory=dict)  # image -> faces absent from the store
    extra: dict[str, int] = field(default_factory=dict)  # image -> faces the Parquet does not have

    @property
    def images(self) -> list[str]:
        return sorted(set(self.missing) | set(self.extra))


def compare(parquet: ParquetStore, stores: Mapping[str, FaceStore]) -> tuple[int, dict[str, StoreDiff]]:
    """(faces in Parquet, per store the images whose face ids differ)."""
    truth = parquet.face_ids_by_image()
    diffs: dict[str, StoreDiff] = {}
    for name, store in stores.items():
        held = store.face_ids_by_image()
        diff = StoreDiff(faces=sum(len(v) for v in held.values()))
        for key in set(truth) | set(held):
            want, have = truth.get(key, set()), held.get(key, set())
            if want - have:
                diff.missing[key] = len(want - have)
            if have - want:
                diff.extra[key] = len(have - want)
        diffs[name] = diff
    return sum(len(v) for v in truth.values()), diffs
