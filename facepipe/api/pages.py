"""The web pages: the search page at / and the people page (their scripts and styles are under /static)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB = Path(__file__).resolve().parents[1] / "web"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
"""The pages load only their own scripts and styles."""

router = APIRouter(include_in_schema=False)


@router.get("/")
def page_search() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/people")
def page_people() -> FileResponse:
    return FileResponse(WEB / "people.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/photos/{image_key:path}")
def page_photo(image_key: str) -> FileResponse:
    """The photo viewer: the page reads the key from its own address and asks /api/photos/{image_key}."""
    return FileResponse(WEB / "photo.html", media_type="text/html", headers=PAGE_HEADERS)
