"""The error answers of the API, as the OpenAPI spec lists them (FastAPI `responses=` of each route).

Every error body is `{"detail": ...}`: a message, or for 422 on a bad query parameter FastAPI's list
of what failed validation. A route lists each status it can answer, so a client generated from the
spec (or schemathesis, in the tests) knows them all.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="what was wrong (422: the parameters that failed)")


_MEANING = {
    400: "bad input: a malformed upload, a photo that cannot be read, a key or id that is not valid",
    401: "FACEPIPE_API_TOKEN is set and the request does not carry it (Authorization: Bearer)",
    403: "a cross-site request: an edit whose Origin or Sec-Fetch-Site is another site",
    404: "no such photo, face or person",
    413: "upload over the size limit",
    409: "the edit would put two faces of one photo in one person, or merge a person with itself",
    415: "not multipart/form-data, or the upload is not an image",
    422: "a query parameter out of range, or a photo of the collection that cannot be decoded",
    503: "busy (another process holds the embedded store, or the server is at its rendering limit: see "
    "Retry-After), a store that is down, or a damaged state file (the message names it)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route answering these error statuses."""
    return {code: {"model": ErrorOut, "description": _MEANING[code]} for code in codes}
