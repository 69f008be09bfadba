"""Pictures: a face's stored crop, and a photo of the collection with its faces outlined."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from facepipe.api.context import ApiContext, Context
from facepipe.api.drawing import outlined_jpeg
from facepipe.api.statuses import errors
from facepipe.faces.loading import ImageLoadError, load_rgb_shrunk
from facepipe.keys import UnsafeKeyError, path_for_key
from facepipe.objects import BucketImages
from facepipe.people import People
from facepipe.stores.parquet import ParquetStore

router = APIRouter(tags=["pictures"])
JPEG = {200: {"content": {"image/jpeg": {}}}}
CROP = {200: {"content": {"image/jpeg": {}, "image/png": {}}}}

RETRY_RENDER = "2"
"""Seconds a client told 503 by the rendering limit should wait (Retry-After)."""


@router.get("/api/faces/{face_id}/crop", response_class=Response, responses={**CROP, **errors(400, 404, 503)})
def api_crop(
    face_id: str, ctx: Context, image_key: str | None = Query(None, description="where to look first")
) -> Response:
    """The face's crop as stored in the Parquet (a small JPEG)."""
    try:
        face_id = str(uuid.UUID(face_id))
    except ValueError:
        raise HTTPException(400, "a face id is a UUID") from None
    crop = find_crop(ctx.parquet, ctx.people, face_id, image_key)
    if crop is None:
        raise HTTPException(404, f"no face {face_id}")
    media = "image/png" if crop.startswith(b"\x89PNG") else "image/jpeg"
    return Response(crop, media_type=media, headers={"Cache-Control": "public, max-age=86400"})


def _photo_bytes(root: Path | BucketImages, image_key: str) -> bytes | None:
    """The photo's bytes from the folder or the bucket; None when there is none (UnsafeKeyError: refused)."""
    if isinstance(root, BucketImages):
        try:
            return root.read(image_key)
        except FileNotFoundError:
            return None
    path = path_for_key(image_key, root)
    return path.read_bytes() if path.is_file() else None


@router.get("/api/images/{image_key:path}", response_class=Response, responses={**JPEG, **errors(400, 404, 422, 503)})
def api_image(
    image_key: str,
    ctx: Context,
    max_side: int = Query(1280, ge=64, le=4096),
    boxes: bool = Query(True, description="outline every face"),
    face_id: Annotated[list[str] | None, Query(description="outline these faces in yellow (repeatable)")] = None,
) -> Response:
    """A photo of the collection, shrunk to `max_side`, with its faces outlined. At most FACEPIPE_RENDERS
    photos are decoded at once; more wait for a turn, then get 503 with Retry-After."""
    try:
        data = _photo_bytes(ctx.images_root, image_key)
    except UnsafeKeyError as exc:
        raise HTTPException(400, str(exc)) from None
    if data is None:
        raise HTTPException(404, f"no photo {image_key!r}")
    faces = ctx.parquet.read_faces(image_key, ["face_id", "top", "right", "bottom", "left"]).to_pylist()
    with rendering_slot(ctx):
        try:
            rgb, decoded_scale = load_rgb_shrunk(data, max_side)
        except ImageLoadError as exc:
            raise HTTPException(422, f"{image_key}: {exc}") from None
        jpeg = outlined_jpeg(rgb, faces if boxes else [], set(face_id or ()), max_side, decoded_scale)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})


@contextlib.contextmanager
def rendering_slot(ctx: ApiContext) -> Iterator[None]:
    """One of the FACEPIPE_RENDERS slots: decoding a 100 MP PNG takes ~1 GB (a JPEG is decoded at a
    fraction of its size), so a burst of them waits (up to `render_wait` s) instead of taking the
    server's memory; past the wait, 503 + Retry-After."""
    if not ctx.renders.acquire(timeout=ctx.render_wait):
        raise HTTPException(503, "busy drawing other photos: try again shortly", headers={"Retry-After": RETRY_RENDER})
    try:
        yield
    finally:
        ctx.renders.release()


def find_crop(parquet: ParquetStore, people: People, face_id: str, hint: str | None = None) -> bytes | None:
    """The crop of a face, from the one faces file that holds it: the `hint` image's, else the image the
    people state (face_id -> image_key, every face clustered) names, else a file written since the last
    clustering. An unknown id opens no Parquet file once the people state is up to date."""
    keys = [hint, people.image_of_face(face_id)]
    keys += [parquet.image_key_of_face_file(rel) for rel in people.unseen_face_files()]
    for key in dict.fromkeys(k for k in keys if k):
        try:
            table = parquet.read_faces(key, ["face_id", "crop"])
        except (UnsafeKeyError, OSError, ValueError):  # a damaged file is not this route's to report
            continue
        for fid, crop in zip(table.column("face_id").to_pylist(), table.column("crop").to_pylist(), strict=True):
            if fid == face_id:
                return crop
    return None
