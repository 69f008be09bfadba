"""Pictures: a face's stored crop, and a photo of the collection with its faces outlined."""

from __future__ import annotations

import uuid
from typing import Annotated

import pyarrow.dataset as ds
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from facepipe.api.context import Context
from facepipe.api.drawing import outlined_jpeg
from facepipe.faces.loading import ImageLoadError, load_rgb
from facepipe.keys import UnsafeKeyError, path_for_key
from facepipe.stores.parquet import ParquetStore

router = APIRouter(tags=["pictures"])
JPEG = {200: {"content": {"image/jpeg": {}}}}


@router.get("/api/faces/{face_id}/crop", response_class=Response, responses=JPEG)
def api_crop(
    face_id: str, ctx: Context, image_key: str | None = Query(None, description="where to look first")
) -> Response:
    """The face's crop as stored in the Parquet (a small JPEG)."""
    try:
        face_id = str(uuid.UUID(face_id))
    except ValueError:
        raise HTTPException(400, "a face id is a UUID") from None
    crop = find_crop(ctx.parquet, face_id, [image_key, ctx.people.image_of_face(face_id)])
    if crop is None:
        raise HTTPException(404, f"no face {face_id}")
    media = "image/png" if crop.startswith(b"\x89PNG") else "image/jpeg"
    return Response(crop, media_type=media, headers={"Cache-Control": "public, max-age=86400"})


@router.get("/api/images/{image_key:path}", response_class=Response, responses=JPEG)
def api_image(
    image_key: str,
    ctx: Context,
    max_side: int = Query(1280, ge=64, le=4096),
    boxes: bool = Query(True, description="outline every face"),
    face_id: Annotated[list[str] | None, Query(description="outline these faces in yellow (repeatable)")] = None,
) -> Response:
    """A photo of the collection, shrunk to `max_side`, with its faces outlined."""
    try:
        path = path_for_key(image_key, ctx.images_root)
    except UnsafeKeyError as exc:
        raise HTTPException(400, str(exc)) from None
    if not path.is_file():
        raise HTTPException(404, f"no photo {image_key!r}")
    try:
        rgb = load_rgb(path.read_bytes())
    except ImageLoadError as exc:
        raise HTTPException(422, f"{image_key}: {exc}") from None
    faces = ctx.parquet.read_faces(image_key, ["face_id", "top", "right", "bottom", "left"]).to_pylist()
    return Response(
        outlined_jpeg(rgb, faces if boxes else [], set(face_id or ()), max_side),
        media_type="image/jpeg",
        headers={"Cache-Control": "no-cache"},
    )


def find_crop(parquet: ParquetStore, face_id: str, hints: list[str | None]) -> bytes | None:
    """The crop of a face, looked up first in the images `hints` name."""
    for key in hints:
        if not key:
            continue
        try:
            table = parquet.read_faces(key, ["face_id", "crop"])
        except (UnsafeKeyError, OSError):
            continue
        for fid, crop in zip(table.column("face_id").to_pylist(), table.column("crop").to_pylist(), strict=True):
            if fid == face_id:
                return crop
    # Not clustered yet and no hint: scan the dataset (slow on big collections, rare).
    files = [str(p) for p in parquet.iter_face_files()]
    if not files:
        return None
    table = ds.dataset(files, format="parquet").to_table(columns=["crop"], filter=ds.field("face_id") == face_id)
    return table.column("crop")[0].as_py() if table.num_rows else None
