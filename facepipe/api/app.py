"""The FastAPI app (`create_app`) and `facepipe serve`: assembly, error handlers, the upload limit, lifespan."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from facepipe.api import pages, people, photos, pictures, search
from facepipe.api.context import ApiContext
from facepipe.api.docs import add_docs
from facepipe.api.guard import LOOPBACK, Guard
from facepipe.api.stores import HeldStore, open_store
from facepipe.api.uploads import MAX_UPLOAD, LimitUploads, UploadTooLarge, too_large
from facepipe.library import Library
from facepipe.statefiles import StateFileError
from facepipe.stores.base import FaceStore, StoreError
from facepipe.stores.parquet import DamagedParquet

SEARCHES_AT_ONCE = 2
"""Face extraction is CPU- and memory-heavy: more concurrent uploads wait instead of piling up."""


def create_app(
    store: str = "qdrant",
    *,
    library: Library | None = None,
    max_upload: int = MAX_UPLOAD,
    idle_close: float = 10.0,
    lock_timeout: float = 15.0,
    face_store: FaceStore | None = None,
    render_wait: float = 60.0,
    protect_reads: bool = False,
) -> FastAPI:
    """The API over the library's store named `store` (or `face_store` as given), its Parquet and its
    people state; photos are served from the library's images folder. With FACEPIPE_API_TOKEN set,
    edits need the token, and reads too when `protect_reads` (a server beyond loopback)."""
    library = library or Library.open()
    others = [n for n in library.store_names if n != store] if face_store is None else []
    if face_store is None:
        face_store, single_process = open_store(library, store, lock_timeout=lock_timeout)
    else:
        single_process = False
    held = HeldStore(face_store, idle_close if single_process else 0)

    @contextlib.contextmanager
    def sinks():
        """People edits send person ids to every store: the held one and the others, opened for the edit."""
        with held.use() as mine, contextlib.ExitStack() as stack:
            opened = [library.store(n) for n in others]
            for s in opened:
                stack.callback(s.close)
            yield [mine, *opened]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        held.close()

    app = FastAPI(
        title="facepipe",
        description="Search a photo collection by face: similar faces, photos of a person, the people found.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by facepipe.api.docs from local files, not a CDN
        redoc_url=None,
    )
    app.state.store = held
    app.state.context = ApiContext(
        held=held,
        parquet=library.parquet,
        people=library.people,
        images_root=library.images,
        extract=library.settings.extract,
        max_upload=max_upload,
        searches=threading.BoundedSemaphore(SEARCHES_AT_ONCE),
        renders=threading.BoundedSemaphore(library.settings.renders),
        render_wait=render_wait,
        sinks=sinks,
    )

    @app.exception_handler(UploadTooLarge)
    async def _upload_too_large(request: Request, exc: UploadTooLarge) -> JSONResponse:
        return too_large(max_upload)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StateFileError)
    async def _state_file_error(request: Request, exc: StateFileError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(DamagedParquet)
    async def _damaged(request: Request, exc: DamagedParquet) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "60"})

    app.add_middleware(LimitUploads, max_bytes=max_upload)
    app.add_middleware(Guard, token=library.settings.api_token, protect_reads=protect_reads)
    app.include_router(pages.router)
    add_docs(app)
    app.mount("/static", StaticFiles(directory=pages.WEB), name="static")
    for routes in (search, people, pictures, photos):
        app.include_router(routes.router)
    return app


class PortInUse(OSError):
    """The port is taken (by another `facepipe serve`, say): said in one line, exit code 1."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow starts, so a taken port fails at once and plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is free
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use: stop what holds it or pick another --port"
            ) from None
        raise
    return sock


def serve(library: Library, host: str = "127.0.0.1", port: int = 8000, store: str = "qdrant") -> None:
    """`facepipe serve`: the API and the pages of `library` until Ctrl-C."""
    import sys

    import uvicorn

    sock = bind(host, port)
    beyond = host not in LOOPBACK
    if beyond and not library.settings.api_token:
        print(
            f"facepipe: listening on {host} without FACEPIPE_API_TOKEN: anyone who can reach it can search "
            "and edit people.",
            file=sys.stderr,
        )
    print(
        f"facepipe: search page on http://{'[' + host + ']' if ':' in host else host}:{port}/ "
        f"(store: {store}; {library.banner()})",
        file=sys.stderr,
        flush=True,
    )
    app = create_app(store, library=library, protect_reads=beyond)
    config = uvicorn.Config(app, host=host, port=port, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])
