"""Response models of the HTTP API (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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


class PersonOut(BaseModel):
    person_id: str
    name: str | None
    faces: int
    image_keys: list[str]
    cover_face_id: str | None


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
