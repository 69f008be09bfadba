"""Uploaded photos: the size limit (an ASGI middleware), reading the multipart field, what the photo is."""

from __future__ import annotations

import io

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facepipe.api.models import ImageSize

MAX_UPLOAD = 20 * 1024 * 1024
"""Bytes per upload (413 above): a 50-megapixel JPEG fits, a video or an archive does not."""

FRAMING = 64 * 1024
"""Bytes allowed over the limit for the multipart framing around the file (it is small)."""

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary", "description": "a photo"}},
                }
            }
        },
    }
}
"""The OpenAPI request body of an upload route (the routes read the form themselves)."""


class UploadTooLarge(Exception):
    pass


class LimitUploads:
    """ASGI middleware: a declared Content-Length over the limit is refused before reading anything; a
    body without one (chunked) is counted as it arrives and cut off at the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes + FRAMING:
            await too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes + FRAMING:
                    raise UploadTooLarge
            return message

        await self.app(scope, counted, send)


def too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"upload too large: the limit is {limit // (1024 * 1024)} MB per photo"}, status_code=413
    )


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of multipart field `image`, with 415/400/413 and a message saying what was wrong."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HTTPException(415, f"send the photo as multipart/form-data with a field 'image' (got {ctype or 'none'})")
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:
        if _caused_by(exc, UploadTooLarge):
            raise UploadTooLarge from None
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, "multipart field 'image' with a photo file is required")
    data = await upload.read(max_bytes + 1)
    await form.close()
    if len(data) > max_bytes:
        raise UploadTooLarge
    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    return data


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in `exc`, its causes or (exception groups from task groups) its sub-exceptions."""
    seen: list[BaseException] = [exc]
    while seen:
        e = seen.pop()
        if isinstance(e, kind):
            return True
        seen.extend(getattr(e, "exceptions", ()))
        seen.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return False


def upright_size(data: bytes) -> ImageSize | None:
    """Width and height as the faces' boxes see them (after the EXIF rotation), from the header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
    except Exception:
        return None
    return ImageSize(width=width, height=height)


def not_an_image(exc: Exception) -> bool:
    """Whether a query-photo error means the upload is not a photo at all (415, else 400)."""
    text = str(exc)
    return "not an image" in text or "empty file" in text
