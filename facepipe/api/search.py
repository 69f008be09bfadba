"""Searches by uploaded photo: similar faces (`/api/search`, a contract) and photos of a person."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from facepipe import query
from facepipe.api.context import ApiContext, Context
from facepipe.api.models import FaceOut, MatchOut, PersonSearchOut, SearchOut
from facepipe.api.statuses import errors
from facepipe.api.uploads import UPLOAD_BODY, not_an_image, read_upload, upright_size

router = APIRouter(tags=["search"])
UPLOAD_ERRORS = errors(400, 413, 415, 422, 503)


def _unreadable(exc: query.QueryImageError) -> HTTPException:
    return HTTPException(415 if not_an_image(exc) else 400, f"cannot read the photo: {exc}")


def run_search(ctx: ApiContext, data: bytes, top_k: int, max_distance: float | None) -> SearchOut:
    with ctx.searches, ctx.held.use() as store:
        try:
            results = query.search(data, store, top_k, max_distance, ctx.extract)
        except query.QueryImageError as exc:
            raise _unreadable(exc) from None
    known = ctx.people.names()
    faces = []
    for r in results:
        matches = []
        for m in r.matches:
            pid, name = known.get(m.person_id, (m.person_id, None)) if m.person_id else (None, None)
            matches.append(
                MatchOut(
                    image_key=m.image_key,
                    face_id=m.face_id,
                    box=list(m.box),
                    distance=round(m.distance, 6),
                    person_id=pid,
                    name=name,
                )
            )
        faces.append(FaceOut(box=[int(v) for v in r.box], matches=matches))
    return SearchOut(faces=faces, image=upright_size(data))


@router.post("/api/search", response_model=SearchOut, openapi_extra=UPLOAD_BODY, responses=UPLOAD_ERRORS)
async def api_search(
    request: Request,
    ctx: Context,
    top_k: int = Query(10, ge=1, le=100, description="matches per face"),
    max_distance: float | None = Query(None, ge=0, description="drop matches farther than this"),
) -> SearchOut:
    """Every face in the uploaded photo (field `image`), largest first, with its nearest stored faces."""
    data = await read_upload(request, ctx.max_upload)
    return await run_in_threadpool(run_search, ctx, data, top_k, max_distance)


def run_person(ctx: ApiContext, data: bytes, max_distance: float) -> PersonSearchOut:
    with ctx.searches, ctx.held.use() as store:
        try:
            person_id, photos = query.person(data, store, ctx.parquet, max_distance, ctx.extract)
        except query.QueryImageError as exc:
            raise _unreadable(exc) from None
    pid, name = ctx.people.names().get(person_id, (person_id, None)) if person_id else (None, None)
    return PersonSearchOut(
        person_id=pid,
        name=name,
        photos=[{"image_key": p.image_key, "distance": round(p.distance, 6)} for p in photos],
    )


@router.post("/api/person", response_model=PersonSearchOut, openapi_extra=UPLOAD_BODY, responses=UPLOAD_ERRORS)
async def api_person(
    request: Request, ctx: Context, max_distance: float = Query(query.SAME_PERSON, ge=0, le=2)
) -> PersonSearchOut:
    """Photos of the person whose face is largest in the upload: through their cluster, else by distance."""
    data = await read_upload(request, ctx.max_upload)
    return await run_in_threadpool(run_person, ctx, data, max_distance)
