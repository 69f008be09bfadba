"""Who may call the API: edits only from the page's own origin (no cross-site request can rename or
merge people), and with FACEPIPE_API_TOKEN set, only with the token.

An ASGI middleware, so it covers every route, the ones added later included:
- an unsafe method (POST, PUT, PATCH, DELETE) whose `Sec-Fetch-Site` says another site, or whose
  `Origin` is not this host, gets 403 (browsers send both; scripts and the CLI send neither);
- with a token, an edit (every unsafe /api/ route but the two photo searches) needs
  `Authorization: Bearer <token>`; every /api/ request needs it (or the `facepipe_token` cookie the
  page sets, for its <img> requests) when the server listens beyond loopback: 401 otherwise.
The pages and /static stay open: they hold no data, and the page asks for the token on a 401.
"""

from __future__ import annotations

import hmac
from urllib.parse import unquote, urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SEARCHES = {"/api/search", "/api/person"}
"""Uploads that only read (a POST because they carry a photo)."""
COOKIE = "facepipe_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cross_site(headers: Headers) -> str | None:
    """Why this request comes from another site, or None when it comes from this one (or no browser)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null" or urlsplit(origin).netloc.lower() != (headers.get("host") or "").lower():
        return f"Origin {origin} is not this server"
    return None


def has_token(headers: Headers, token: str, cookie_ok: bool) -> bool:
    given = headers.get("authorization", "")
    if given.lower().startswith("bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        return True
    if cookie_ok:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(unquote(value).encode(), token.encode()):
                return True
    return False


class Guard:
    def __init__(self, app: ASGIApp, token: str | None, protect_reads: bool) -> None:
        self.app = app
        self.token = token
        self.protect_reads = protect_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        unsafe = method not in SAFE_METHODS
        if unsafe and (why := cross_site(headers)):
            await JSONResponse({"detail": f"cross-site request refused ({why})"}, status_code=403)(scope, receive, send)
            return
        edit = unsafe and path not in SEARCHES
        guarded = self.token and path.startswith("/api/") and (edit or self.protect_reads)
        if guarded and not has_token(headers, self.token, cookie_ok=not edit):
            await JSONResponse(
                {"detail": "this server needs its access token (FACEPIPE_API_TOKEN): send Authorization: Bearer"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)
