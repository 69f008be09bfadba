"""HTTP API and search page (`facepipe serve`): FastAPI + uvicorn, on 127.0.0.1 unless told otherwise.

The answers come from the same functions as the CLI (facepipe.query, facepipe.people), so both
always agree. OpenAPI docs at /docs.

Holding the store. A server process wants its store open between requests (opening the embedded
Qdrant engine costs up to ~0.4 s at 1M faces), but embedded Qdrant is one process at a time: while the
server holds the folder, `facepipe index` and Dagster runs wait for it (and give up after their
lock timeout). So the server keeps the store open while requests come in and closes it after
`idle_close` seconds (10) without one; a search that finds the folder taken by an index run
waits up to `lock_timeout` (15 s), then answers 503 with Retry-After. With QDRANT_URL (a Qdrant
server) or `--store pgvector` there is no such lock and the store stays open until shutdown.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facepipe import query
from facepipe.faces.loading import ImageLoadError, load_rgb
from facepipe.keys import UnsafeKeyError, path_for_key
from facepipe.library import Library
from facepipe.people import PeopleError
from facepipe.stores.base import FaceStore, StoreError
from facepipe.stores.parquet import ParquetStore

WEB = Path(__file__).resolve().parent / "web"
MAX_UPLOAD = 20 * 1024 * 1024
"""Bytes per upload (413 above): a 50-megapixel JPEG fits, a video or an archive does not."""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
"""The pages load only their own scripts and styles (/docs is left alone: Swagger UI comes from a CDN)."""
SEARCHES_AT_ONCE = 2
"""Face extraction is CPU- and memory-heavy: more concurrent uploads wait instead of piling up."""


# -- response models (the OpenAPI schema at /docs) -------------------------------------------------------


class MatchOut(BaseModel):
    image_key: str
    face_id: str
    box: list[int] = Field(description="top, right, bottom, left in pixels of the upright photo")
    distance: float = Field(description="Euclidean; the same person is usually under 0.6")
    person_id: str | None
    name: str | None


class FaceOut(BaseModel):
    box: list[int]
    matches: list[MatchOut]


class ImageSize(BaseModel):
    width: int
    height: int


class SearchOut(BaseModel):
    faces: list[FaceOut]
    image: ImageSize | None = Field(None, description="size of the upright query photo, for drawing the boxes")


class PersonOut(BaseModel):
    person_id: str
    name: str | None
    faces: int
    image_keys: list[str]
    cover_face_id: str | None


class PhotoFace(BaseModel):
    face_id: str
    box: list[int]


class PersonPhotoOut(BaseModel):
    image_key: str
    faces: list[PhotoFace] = Field(description="this person's faces in the photo")


class PersonDetailOut(PersonOut):
    photos: list[PersonPhotoOut]


class PersonSearchOut(BaseModel):
    person_id: str | None
    name: str | None
    photos: list[dict[str, Any]] = Field(description="[{image_key, distance}], nearest first")


_UPLOAD_BODY = {
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


# -- the store, held between requests --------------------------------------------------------------------


class HeldStore:
    """A store kept open across requests and closed after `idle` seconds without one (0: kept until close)."""

    def __init__(self, store: FaceStore, idle: float) -> None:
        self.store = store
        self.idle = idle
        self._lock = threading.Lock()
        self._busy = 0
        self._timer: threading.Timer | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[FaceStore]:
        with self._lock:
            self._busy += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        try:
            yield self.store
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0 and self.idle > 0:
                    self._timer = threading.Timer(self.idle, self._release)
                    self._timer.daemon = True
                    self._timer.start()

    def _release(self) -> None:
        with self._lock:
            if self._busy == 0:
                self.store.close()
                self._timer = None

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.store.close()


def open_store(
    library: Library, name: str, keep_open: bool = True, lock_timeout: float = 15.0
) -> tuple[FaceStore, bool]:
    """The library's store `name`; True when it is embedded Qdrant (one process at a time)."""
    from facepipe.stores import QdrantStore

    store = library.store(name)
    if not isinstance(store, QdrantStore):
        return store, False
    store.close()
    held = store.with_options(keep_open=keep_open, lock_timeout=lock_timeout)
    return held, held.is_local


# -- upload limits ---------------------------------------------------------------------------------------


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
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes + 64 * 1024:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes + 64 * 1024:  # the multipart framing around the file is small
                    raise UploadTooLarge
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> JSONResponse:
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


# -- the app ---------------------------------------------------------------------------------------------


def create_app(
    store: str = "qdrant",
    *,
    library: Library | None = None,
    max_upload: int = MAX_UPLOAD,
    idle_close: float = 10.0,
    lock_timeout: float = 15.0,
    face_store: FaceStore | None = None,
) -> FastAPI:
    """The API over the store named `store` (or `face_store` as given), the Parquet and the people state."""
    library = library or Library.open()
    if face_store is None:
        face_store, single_process = open_store(library, store, lock_timeout=lock_timeout)
    else:
        single_process = False
    held = HeldStore(face_store, idle_close if single_process else 0)
    parquet = library.parquet
    people = library.people
    searches = threading.BoundedSemaphore(SEARCHES_AT_ONCE)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        held.close()

    app = FastAPI(
        title="facepipe",
        description="Search a photo collection by face: similar faces, photos of a person, the people found.",
        version="1",
        lifespan=lifespan,
    )
    app.state.store = held

    @app.exception_handler(UploadTooLarge)
    async def _upload_too_large(request: Request, exc: UploadTooLarge) -> JSONResponse:
        return _too_large(max_upload)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    app.add_middleware(LimitUploads, max_bytes=max_upload)

    # pages ----------------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page_search() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/people", include_in_schema=False)
    def page_people() -> FileResponse:
        return FileResponse(WEB / "people.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    # searches -------------------------------------------------------------------------------------------

    def names() -> dict[str, tuple[str, str | None]]:
        return people.names()

    def run_search(data: bytes, top_k: int, max_distance: float | None) -> SearchOut:
        with searches, held.use() as store:
            try:
                results = query.search(data, store, top_k, max_distance, library.settings.extract)
            except query.QueryImageError as exc:
                raise HTTPException(415 if _not_an_image(exc) else 400, f"cannot read the photo: {exc}") from None
        known = names()
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

    @app.post("/api/search", response_model=SearchOut, openapi_extra=_UPLOAD_BODY, tags=["search"])
    async def api_search(
        request: Request,
        top_k: int = Query(10, ge=1, le=100, description="matches per face"),
        max_distance: float | None = Query(None, ge=0, description="drop matches farther than this"),
    ) -> SearchOut:
        """Every face in the uploaded photo (field `image`), largest first, with its nearest stored faces."""
        data = await read_upload(request, max_upload)
        return await run_in_threadpool(run_search, data, top_k, max_distance)

    def run_person(data: bytes, max_distance: float) -> PersonSearchOut:
        with searches, held.use() as store:
            try:
                person_id, photos = query.person(data, store, parquet, max_distance, library.settings.extract)
            except query.QueryImageError as exc:
                raise HTTPException(415 if _not_an_image(exc) else 400, f"cannot read the photo: {exc}") from None
        pid, name = names().get(person_id, (person_id, None)) if person_id else (None, None)
        return PersonSearchOut(
            person_id=pid,
            name=name,
            photos=[{"image_key": p.image_key, "distance": round(p.distance, 6)} for p in photos],
        )

    @app.post("/api/person", response_model=PersonSearchOut, openapi_extra=_UPLOAD_BODY, tags=["search"])
    async def api_person(
        request: Request, max_distance: float = Query(query.SAME_PERSON, ge=0, le=2)
    ) -> PersonSearchOut:
        """Photos of the person whose face is largest in the upload: through their cluster, else by distance."""
        data = await read_upload(request, max_upload)
        return await run_in_threadpool(run_person, data, max_distance)

    # people ---------------------------------------------------------------------------------------------

    @app.get("/api/people", response_model=list[PersonOut], tags=["people"])
    def api_people() -> list[dict]:
        """Every person with at least one face, largest first."""
        return [p.as_json() for p in people.list()]

    @app.get("/api/people/{person_id}", response_model=PersonDetailOut, tags=["people"])
    def api_person_detail(person_id: str) -> dict:
        """One person and their photos (a merged id answers as the person it was merged into)."""
        try:
            person = people.get(person_id)
        except PeopleError as exc:
            raise HTTPException(404, str(exc)) from None
        photos = []
        for key in person.image_keys:
            table = parquet.read_faces(key, ["face_id", "top", "right", "bottom", "left", "person_id"])
            faces = [
                PhotoFace(face_id=r["face_id"], box=[r["top"], r["right"], r["bottom"], r["left"]])
                for r in table.to_pylist()
                if r["person_id"] == person.person_id
            ]
            photos.append(PersonPhotoOut(image_key=key, faces=faces))
        return {**person.as_json(), "photos": photos}

    # pictures -------------------------------------------------------------------------------------------

    @app.get(
        "/api/faces/{face_id}/crop",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        tags=["pictures"],
    )
    def api_crop(face_id: str, image_key: str | None = Query(None, description="where to look first")) -> Response:
        """The face's crop as stored in the Parquet (a small JPEG)."""
        try:
            face_id = str(uuid.UUID(face_id))
        except ValueError:
            raise HTTPException(400, "a face id is a UUID") from None
        crop = _find_crop(parquet, face_id, [image_key, people.image_of_face(face_id)])
        if crop is None:
            raise HTTPException(404, f"no face {face_id}")
        media = "image/png" if crop.startswith(b"\x89PNG") else "image/jpeg"
        return Response(crop, media_type=media, headers={"Cache-Control": "public, max-age=86400"})

    @app.get(
        "/api/images/{image_key:path}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        tags=["pictures"],
    )
    def api_image(
        image_key: str,
        face_id: str | None = Query(None, description="outline this face in yellow"),
        max_side: int = Query(1280, ge=64, le=4096),
        boxes: bool = Query(True, description="outline every face"),
    ) -> Response:
        """A photo of the collection, shrunk to `max_side`, with its faces outlined."""
        try:
            path = path_for_key(image_key, library.root)
        except UnsafeKeyError as exc:
            raise HTTPException(400, str(exc)) from None
        if not path.is_file():
            raise HTTPException(404, f"no photo {image_key!r}")
        try:
            rgb = load_rgb(path.read_bytes())
        except ImageLoadError as exc:
            raise HTTPException(422, f"{image_key}: {exc}") from None
        faces = parquet.read_faces(image_key, ["face_id", "top", "right", "bottom", "left"]).to_pylist()
        return Response(
            outlined_jpeg(rgb, faces if boxes else [], face_id, max_side),
            media_type="image/jpeg",
            headers={"Cache-Control": "no-cache"},
        )

    return app


def _not_an_image(exc: Exception) -> bool:
    text = str(exc)
    return "not an image" in text or "empty file" in text


def _find_crop(parquet: ParquetStore, face_id: str, hints: list[str | None]) -> bytes | None:
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


def outlined_jpeg(rgb: np.ndarray, faces: list[dict], highlight: str | None, max_side: int) -> bytes:
    image = Image.fromarray(rgb)
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for face in faces:
        box = [face["left"] * scale, face["top"] * scale, face["right"] * scale, face["bottom"] * scale]
        chosen = face["face_id"] == highlight
        draw.rectangle(box, outline=(255, 214, 0) if chosen else (0, 200, 255), width=width * (2 if chosen else 1))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()


def serve(library: Library, host: str = "127.0.0.1", port: int = 8000, store: str = "qdrant") -> None:
    """`facepipe serve`: the API and the pages until Ctrl-C."""
    import sys

    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"facepipe: listening on {host}: the API has no authentication, anyone who can reach it can search.",
            file=sys.stderr,
        )
    print(
        f"facepipe: search page on http://{'[' + host + ']' if ':' in host else host}:{port}/ "
        f"(store: {store}; {library.banner()})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_app(store, library=library), host=host, port=port, log_level="info")
