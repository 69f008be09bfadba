"""The people found: the list, one person with their photos; and the edits (rename, hide, merge, split,
move a face, the review queue, the log and undo), through the same `People` methods as the CLI.

Every edit is logged with who made it (`api <client address>`) and can be undone; the guard
(facepipe.api.guard) lets edits come only from this origin, with the token when one is set.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, Response

from facepipe.api.context import ApiContext, Context
from facepipe.api.models import (
    DecisionIn,
    EditOut,
    FacePersonIn,
    FacePersonOut,
    MergeIn,
    PersonDetailOut,
    PersonOut,
    PersonPatch,
    PersonPhotoOut,
    PhotoFace,
    SplitIn,
    SuggestionOut,
    UnassignedOut,
    UndoIn,
)
from facepipe.api.statuses import errors
from facepipe.people import PeopleError
from facepipe.people.records import Conflict, NotFound

router = APIRouter(tags=["people"])

EDIT_ERRORS = errors(401, 403, 404, 409, 422, 503)
READ_ERRORS = errors(422, 503)

TOTAL = "X-Total-Count"
PAGE = {"headers": {TOTAL: {"description": "how many there are over all pages", "schema": {"type": "integer"}}}}
OFFSET = Query(0, ge=0, description="skip this many")
LIMIT = Query(None, ge=1, le=1000, description="at most this many (all when omitted)")


def page(items: list, offset: int, limit: int | None) -> list:
    return items[offset : None if limit is None else offset + limit]


def _who(request: Request) -> str:
    return f"api {request.client.host if request.client else 'unknown'}"


def _edit(call):
    """Run an edit; the people errors become 404, 409 or 422 with the message."""
    try:
        return call()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/api/people", response_model=list[PersonOut], responses={200: PAGE, **READ_ERRORS})
def api_people(ctx: Context, response: Response, offset: int = OFFSET, limit: int | None = LIMIT) -> list[dict]:
    """The persons with at least one face, largest first (hidden ones too, flagged); the total is in the
    X-Total-Count header."""
    people = ctx.people.list()
    response.headers[TOTAL] = str(len(people))
    return [p.as_json() for p in page(people, offset, limit)]


@router.get("/api/people/log", response_model=list[EditOut], responses=READ_ERRORS)
def api_people_log(ctx: Context, limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
    """The people edits, newest first: who, when, what, and whether it was undone."""
    return ctx.people.log(limit)


@router.get("/api/people/{person_id}", response_model=PersonDetailOut, responses=errors(404, 422, 503))
def api_person_detail(person_id: str, ctx: Context, offset: int = OFFSET, limit: int | None = LIMIT) -> dict:
    """One person and (a page of) their photos, each with all of the person's faces in it (a merged id
    answers as the person it was merged into)."""
    try:
        person = ctx.people.get(person_id)
    except PeopleError:
        raise HTTPException(404, f"There is no person {person_id} (any more).") from None
    return person_detail(ctx, person, offset, limit)


def person_detail(ctx: ApiContext, person, offset: int = 0, limit: int | None = None) -> dict:
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


@router.patch("/api/people/{person_id}", response_model=PersonOut, responses=EDIT_ERRORS)
def api_person_patch(person_id: str, body: PersonPatch, request: Request, ctx: Context) -> dict:
    """Rename (`name`; null or blank removes it) and/or hide (`hidden`) a person."""
    given = body.model_fields_set
    if not given & {"name", "hidden"}:
        raise HTTPException(422, "send a name, hidden, or both")

    def run():
        person = ctx.people.get(person_id)
        if "name" in given:
            person = ctx.people.name(person_id, body.name, who=_who(request))
        if "hidden" in given and body.hidden is not None:
            person = ctx.people.hide(person_id, body.hidden, who=_who(request))
        return person.as_json()

    return _edit(run)


@router.post("/api/people/{person_id}/merge", response_model=PersonOut, responses=EDIT_ERRORS)
def api_person_merge(person_id: str, body: MergeIn, request: Request, ctx: Context) -> dict:
    """Fold the persons `from` into this one (kept through every later re-clustering)."""
    with ctx.sinks() as sinks:
        person, _ = _edit(lambda: ctx.people.merge_all(person_id, body.from_, sinks, _who(request)))
    return person.as_json()


@router.post("/api/people/{person_id}/split", response_model=PersonOut, status_code=201, responses=EDIT_ERRORS)
def api_person_split(person_id: str, body: SplitIn, request: Request, ctx: Context) -> dict:
    """Move these faces of the person to a new person, answered (the two are kept apart from now on)."""
    with ctx.sinks() as sinks:
        person = _edit(lambda: ctx.people.split(person_id, body.face_ids, sinks, _who(request)))
    return person.as_json()


@router.put("/api/faces/{face_id}/person", response_model=FacePersonOut, responses=EDIT_ERRORS)
def api_face_person(face_id: str, body: FacePersonIn, request: Request, ctx: Context) -> FacePersonOut:
    """Put one face in a person (`person_id`), or in no person (null); kept through re-clustering."""
    with ctx.sinks() as sinks:
        person = _edit(lambda: ctx.people.move(face_id, body.person_id, sinks, _who(request)))
    return FacePersonOut(face_id=face_id, person_id=person and person.person_id, name=person and person.name)


@router.get("/api/faces/unassigned", response_model=list[UnassignedOut], responses=READ_ERRORS)
def api_unassigned(ctx: Context, limit: int = Query(200, ge=1, le=5000)) -> list[dict]:
    """Faces in no person: seen once, or taken out of a person by hand."""
    return ctx.people.unassigned(limit)


@router.get("/api/review", response_model=list[SuggestionOut], responses=READ_ERRORS)
def api_review(ctx: Context, limit: int = Query(50, ge=1, le=500)) -> list[dict]:
    """ "Maybe the same person": pairs of persons, and faces in no person with the nearest person, nearest first."""
    return ctx.people.suggestions(limit)


@router.post("/api/review/decision", response_model=list[SuggestionOut], responses=EDIT_ERRORS)
def api_review_decision(body: DecisionIn, request: Request, ctx: Context) -> list[dict]:
    """Accept (merge the persons / put the face in the person) or reject (keep them apart) a suggestion;
    answers the queue as it is now."""
    if (body.kind == "persons") != (body.other_id is not None) or (body.kind == "face") != (body.face_id is not None):
        raise HTTPException(422, "a 'persons' decision names other_id, a 'face' decision names face_id")
    with ctx.sinks() as sinks:
        _edit(lambda: ctx.people.decide(body.model_dump(), body.accept, sinks, _who(request)))
    return ctx.people.suggestions()


@router.post("/api/people/undo", response_model=list[EditOut], responses={k: EDIT_ERRORS[k] for k in (401, 403, 422)})
def api_people_undo(request: Request, ctx: Context, body: UndoIn | None = None) -> list[dict]:
    """Revert the last `n` edits (default 1), newest first; answers the edits undone."""
    with ctx.sinks() as sinks:
        return _edit(lambda: ctx.people.undo(body.n if body else 1, sinks))
