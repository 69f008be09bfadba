"""HTTP API and search page (`facepipe serve`): FastAPI + uvicorn, on 127.0.0.1 unless told otherwise.

The answers come from the same functions as the CLI (facepipe.query, facepipe.people), so both
always agree. OpenAPI docs at /docs.

Modules: `app` (create_app, serve), `search`, `people`, `pictures` and `pages` (the routes),
`uploads` (size limit, multipart, what a photo is), `drawing` (outlined JPEGs), `models` (response
models), `stores` (the store held between requests), `context` (what the routes share).
"""

from facepipe.api.app import create_app, serve
from facepipe.api.uploads import MAX_UPLOAD

__all__ = ["MAX_UPLOAD", "create_app", "serve"]
