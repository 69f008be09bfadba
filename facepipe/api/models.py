"""Response models of the HTTP API (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from facepipe.query import SAME_PERSON_CUE


class MatchOut(BaseModel):
    image_key: str
    face_id: str
    box: list[int] = Field(description="top, right, bottom, left in pixels of the upright photo")
    distance: float = Field(description="Euclidean; the same person is usually under 0.6")
    person_id: str | None
    name: str | None


class FaceOut(BaseModel):
    box: list[int]
    matches: list[MatchOut]


class ImageSize(BaseModel):
    width: int
    height: int


class SearchOut(BaseModel):
    faces: list[FaceOut]
    image: ImageSize | None = Field(None, description="size of the upright query photo, for drawing the boxes")
    same_person: float = Field(SAME_PERSON_CUE, description="matches closer than this are shown as the same person")


class PersonOut(BaseModel):
    person_id: str
    name: str | None
    faces: int
    image_keys: list[str]
    cover_face_id: str | None
    hidden: bool = False


class PhotoFace(BaseModel):
    face_id: str
    box: list[int]


class PersonPhotoOut(BaseModel):
    image_key: str
    faces: list[PhotoFace] = Field(description="this person's faces in the photo")


class PersonDetailOut(PersonOut):
    photos: list[PersonPhotoOut] = Field(description="this page of the person's photos (`offset`, `limit`)")
    photos_total: int = Field(description="how many photos the person is in, over all pages")


class PhotoFaceOut(BaseModel):
    face_id: str
    box: list[int] = Field(description="top, right, bottom, left in pixels of the upright photo")
    person_id: str | None
    name: str | None


class PhotoOut(BaseModel):
    image_key: str
    width: int | None
    height: int | None
    status: str = Field(description="ok, or error (then `reason` says why)")
    reason: str | None
    taken_at: datetime | None = Field(None, description="EXIF DateTimeOriginal, the camera's wall-clock time")
    camera_make: str | None = None
    camera_model: str | None = None
    faces: list[PhotoFaceOut] = Field(description="every face, left to right, with its person")


class PersonSearchOut(BaseModel):
    person_id: str | None
    name: str | None
    photos: list[dict[str, Any]] = Field(description="[{image_key, distance}], nearest first")


# -- people edits --------------------------------------------------------------------------------------------


class PersonPatch(BaseModel):
    name: str | None = Field(None, description="the new name; null or blank removes it")
    hidden: bool | None = Field(None, description="hide the person from the people page (or show again)")


class MergeIn(BaseModel):
    from_: list[str] = Field(alias="from", min_length=1, description="persons folded into this one")


class SplitIn(BaseModel):
    face_ids: list[str] = Field(min_length=1, description="faces of this person that move to a new person")


class FacePersonIn(BaseModel):
    person_id: str | None = Field(description="the person the face is (null: no person)")


class FacePersonOut(BaseModel):
    face_id: str
    person_id: str | None
    name: str | None


class UndoIn(BaseModel):
    n: int = Field(1, ge=1, le=100, description="how many of the last edits to revert")


class EditOut(BaseModel):
    id: int
    at: str
    who: str
    action: str
    detail: dict[str, Any]
    undone_at: str | None


class SuggestionOut(BaseModel):
    kind: str = Field(description="'persons' (person_id and other_id may be one) or 'face' (face_id may be person_id)")
    person_id: str
    other_id: str | None = None
    face_id: str | None = None
    image_key: str | None = None
    distance: float
    face_ids: list[str] = Field(description="the two faces to show side by side")


class DecisionIn(BaseModel):
    kind: str = Field(pattern="^(persons|face)$")
    person_id: str
    other_id: str | None = None
    face_id: str | None = None
    accept: bool


class UnassignedOut(BaseModel):
    face_id: str
    image_key: str
    box: list[int] | None
