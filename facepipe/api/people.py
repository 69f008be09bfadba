"""The people found: the list, and one person with their photos."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response

from facepipe.api.context import Context
from facepipe.api.models import PersonDetailOut, PersonOut, PersonPhotoOut, PhotoFace
from facepipe.api.statuses import errors
from facepipe.people import PeopleError

router = APIRouter(tags=["people"])


TOTAL = "X-Total-Count"
PAGE = {"headers": {TOTAL: {"description": "how many there are over all pages", "schema": {"type": "integer"}}}}
OFFSET = Query(0, ge=0, description="skip this many")
LIMIT = Query(None, ge=1, le=1000, description="at most this many (all when omitted)")


def page(items: list, offset: int, limit: int | None) -> list:
    return items[offset : None if limit is None else offset + limit]


@router.get("/api/people", response_model=list[PersonOut], responses={200: PAGE, **errors(422, 503)})
def api_people(ctx: Context, response: Response, offset: int = OFFSET, limit: int | None = LIMIT) -> list[dict]:
    """The persons with at least one face, largest first; the total is in the X-Total-Count header."""
    people = ctx.people.list()
    response.headers[TOTAL] = str(len(people))
    return [p.as_json() for p in page(people, offset, limit)]


@router.get("/api/people/{person_id}", response_model=PersonDetailOut, responses=errors(404, 422, 503))
def api_person_detail(person_id: str, ctx: Context, offset: int = OFFSET, limit: int | None = LIMIT) -> dict:
    """One person and (a page of) their photos, each with all of the person's faces in it (a merged id
    answers as the person it was merged into)."""
    try:
        person = ctx.people.get(person_id)
    except PeopleError:
        raise HTTPException(404, f"There is no person {person_id} (any more).") from None
    photos = []
    for key in page(person.image_keys, offset, limit):
        table = ctx.parquet.read_faces(key, ["face_id", "top", "right", "bottom", "left", "person_id"])
        faces = [
            PhotoFace(face_id=r["face_id"], box=[r["top"], r["right"], r["bottom"], r["left"]])
            for r in table.to_pylist()
            if r["person_id"] == person.person_id
        ]
        photos.append(PersonPhotoOut(image_key=key, faces=faces))
    return {**person.as_json(), "photos": photos, "photos_total": len(person.image_keys)}
