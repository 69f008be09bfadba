"""What the people code hands out: persons, the report of an update, the error for bad input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Protocol

Stat = tuple[int, int]
"""A file's (mtime_ns, size)."""


class PeopleError(ValueError):
    """A person id that does not exist, a merge with itself, an empty name: the caller's input."""


class NotFound(PeopleError):
    """No such person or face (HTTP 404)."""


class Conflict(PeopleError):
    """The edit would break a rule: two faces of one photo in one person, a person merged with itself (409)."""


@dataclass
class Person:
    person_id: str
    name: str | None
    faces: int
    image_keys: list[str]
    cover_face_id: str | None = None
    hidden: bool = False

    def as_json(self) -> dict:
        """The DESIGN's `people --json` entry (plus the cover face, for thumbnails)."""
        return {
            "person_id": self.person_id,
            "name": self.name,
            "faces": self.faces,
            "image_keys": self.image_keys,
            "cover_face_id": self.cover_face_id,
            "hidden": self.hidden,
        }


@dataclass
class UpdateReport:
    faces: int = 0  # faces known after the update
    assigned: int = 0  # of which in a person
    persons: int = 0
    files_read: int = 0
    files_rewritten: int = 0
    added: int = 0
    removed: int = 0
    reclustered: int = 0  # faces in the components Chinese whispers ran on
    changed: int = 0  # faces whose person_id changed in Parquet or a store
    new_persons: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # files rewritten by someone else meanwhile
    seconds: float = 0.0

    def metadata(self) -> dict:
        out = asdict(self)
        out["new_persons"] = ", ".join(self.new_persons) or "none"
        out["retry"] = ", ".join(self.retry) or "none"
        out["seconds"] = round(self.seconds, 3)
        return out


class PersonIdSink(Protocol):
    """What a store must offer to receive person ids (both FaceStores do)."""

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None: ...


def person_number(person_id: str) -> int:
    """The n of `pn`, for ordering persons as they were created (odd ids last)."""
    return int(person_id[1:]) if person_id[1:].isdigit() else 1 << 62


def people_json(people: Iterable[Person]) -> list[dict]:
    """`facepipe people --json` (DESIGN contract: person_id, name, faces, image_keys)."""
    return [{"person_id": p.person_id, "name": p.name, "faces": p.faces, "image_keys": p.image_keys} for p in people]
