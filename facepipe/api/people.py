"""The people found: the list, and one person with their photos."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from facepipe.api.context import Context
from facepipe.api.models import PersonDetailOut, PersonOut, PersonPhotoOut, PhotoFace
from facepipe.people import PeopleError

router = APIRouter(tags=["people"])


@router.get("/api/people", response_model=list[PersonOut])
def api_people(ctx: Context) -> list[dict]:
    """Every person with at least one face, largest first."""
    return [p.as_json() for p in ctx.people.list()]


@router.get("/api/people/{person_id}", response_model=PersonDetailOut)
def api_person_detail(person_id: str, ctx: Context) -> dict:
    """One person and their photos (a merged id answers as the person it was merged into)."""
    try:
        person = ctx.people.get(person_id)
    except PeopleError as exc:
        raise HTTPException(404, str(exc)) from None
    photos = []
    for key in person.image_keys:
        table = ctx.parquet.read_faces(key, ["face_id", "top", "right", "bottom", "left", "person_id"])
        faces = [
            PhotoFace(face_id=r["face_id"], box=[r["top"], r["right"], r["bottom"], r["left"]])
            for r in table.to_pylist()
            if r["person_id"] == person.person_id
        ]
        photos.append(PersonPhotoOut(image_key=key, faces=faces))
    return {**person.as_json(), "photos": photos}
