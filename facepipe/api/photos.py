"""One photo of the collection for the photo viewer: its size, its faces with their persons, its metadata."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from facepipe.api.context import Context
from facepipe.api.models import PhotoOut
from facepipe.api.statuses import errors
from facepipe.keys import UnsafeKeyError, path_for_key
from facepipe.objects import BucketImages

router = APIRouter(tags=["pictures"])


@router.get("/api/photos/{image_key:path}", response_model=PhotoOut, responses=errors(400, 404, 503))
def api_photo(image_key: str, ctx: Context) -> PhotoOut:
    """The photo's every face with its person (as the person now is: merged ids resolved) and name."""
    try:
        root = ctx.images_root
        root.object_path(image_key) if isinstance(root, BucketImages) else path_for_key(image_key, root)
    except UnsafeKeyError as exc:
        raise HTTPException(400, str(exc)) from None
    row = ctx.parquet.read_image(image_key)
    if row is None:
        raise HTTPException(404, "This photo is not in the collection.")
    known = ctx.people.names()
    faces = []
    table = ctx.parquet.read_faces(image_key, ["face_id", "top", "right", "bottom", "left", "person_id"])
    for face in table.to_pylist():
        pid, name = known.get(face["person_id"], (face["person_id"], None)) if face["person_id"] else (None, None)
        box = [face["top"], face["right"], face["bottom"], face["left"]]
        faces.append({"face_id": face["face_id"], "box": box, "person_id": pid, "name": name})
    faces.sort(key=lambda f: (f["box"][3], f["box"][0]))  # left to right, as one reads a group photo
    return PhotoOut(
        image_key=image_key,
        width=row["width"],
        height=row["height"],
        status=row["status"],
        reason=row["reason"],
        taken_at=row.get("taken_at"),
        camera_make=row.get("camera_make"),
        camera_model=row.get("camera_model"),
        faces=faces,
    )
