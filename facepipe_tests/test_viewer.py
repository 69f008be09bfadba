"""The photo viewer's API and pages in-process (FastAPI's TestClient) over knn `train/` indexed with
HOG: a photo's faces with their persons, pagination of people and of a person's photos, every face
of a person highlighted, and /docs working offline (no CDN)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facepipe import settings
from facepipe.api import create_app
from facepipe.api.drawing import HIGHLIGHT, OUTLINE, outlined_jpeg
from facepipe.library import Library
from facepipe_tests.conftest import knn_train


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        knn_train(tmp_path_factory, mp)
        with TestClient(create_app("qdrant", library=Library.open(settings.reload()))) as c:
            yield c


def library() -> Library:
    return Library.open(settings.reload())


def test_docs_load_nothing_from_outside(client):
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200, page
        html = r.text
        assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), f"{page} names another host"
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: ?'([^']+)'", html)
        assert any(a.endswith(".js") for a in assets), html
        for asset in assets:
            got = client.get(asset)
            assert got.status_code == 200 and got.content, asset
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")


def test_photo_api_lists_every_face_with_its_person(client):
    lib = library()
    people = lib.people.list()
    person = people[0]
    lib.people.name(person.person_id, "Somebody Named")
    try:
        key = person.image_keys[0]
        body = client.get(f"/api/photos/{key}").json()
    finally:
        lib.people.name(person.person_id, None)
    stored = lib.parquet.read_faces(key, ["face_id", "person_id"]).to_pylist()
    assert {f["face_id"] for f in body["faces"]} == {f["face_id"] for f in stored}
    row = lib.parquet.read_image(key)
    assert (body["width"], body["height"], body["status"]) == (row["width"], row["height"], "ok")
    mine = [f for f in body["faces"] if f["person_id"] == person.person_id]
    assert mine and all(f["name"] == "Somebody Named" for f in mine)
    assert client.get("/api/photos/no/such.jpg").status_code == 404
    for key in ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "obama/..%2F..%2Fdata%2Fpeople.sqlite"]:
        assert client.get(f"/api/photos/{key}").status_code == 400, key


def test_people_are_paged_with_a_total(client):
    everyone = client.get("/api/people")
    assert everyone.status_code == 200
    total = int(everyone.headers["X-Total-Count"])
    assert total == len(everyone.json()) == len(library().people.list()) and total >= 3
    pages = []
    for offset in range(0, total, 2):
        r = client.get(f"/api/people?offset={offset}&limit=2")
        assert int(r.headers["X-Total-Count"]) == total and len(r.json()) <= 2
        pages += r.json()
    assert pages == everyone.json()
    assert client.get(f"/api/people?offset={total}").json() == []
    assert client.get("/api/people?limit=0").status_code == 422


def test_a_persons_photos_are_paged_and_carry_all_their_faces(client):
    lib = library()
    person = max(lib.people.list(), key=lambda p: len(p.image_keys))
    full = client.get(f"/api/people/{person.person_id}").json()
    assert full["photos_total"] == len(person.image_keys) == len(full["photos"]) >= 2
    first = client.get(f"/api/people/{person.person_id}?offset=0&limit=1").json()
    rest = client.get(f"/api/people/{person.person_id}?offset=1").json()
    assert first["photos"] + rest["photos"] == full["photos"] and first["photos_total"] == full["photos_total"]
    for photo in full["photos"]:
        stored = lib.parquet.read_faces(photo["image_key"], ["face_id", "person_id"]).to_pylist()
        assert {f["face_id"] for f in photo["faces"]} == {
            f["face_id"] for f in stored if f["person_id"] == person.person_id
        }
    r = client.get(f"/api/people/{person.person_id}x")
    assert r.status_code == 404 and "`" not in r.json()["detail"]


def test_every_highlighted_face_is_drawn_in_yellow():
    rgb = np.full((200, 400, 3), 90, np.uint8)
    faces = [
        {"face_id": "a", "top": 40, "right": 120, "bottom": 120, "left": 40},
        {"face_id": "b", "top": 40, "right": 260, "bottom": 120, "left": 180},
        {"face_id": "c", "top": 40, "right": 380, "bottom": 120, "left": 300},
    ]
    drawn = np.asarray(Image.open(io.BytesIO(outlined_jpeg(rgb, faces, {"a", "b"}, 400))).convert("RGB"), int)

    def edge_colour(face: dict) -> np.ndarray:
        return drawn[face["top"] + 1, (face["left"] + face["right"]) // 2]

    def nearer(face: dict) -> tuple:  # of the two outline colours (JPEG blurs both a little)
        seen = edge_colour(face)
        return min((HIGHLIGHT, OUTLINE), key=lambda c: np.abs(seen - np.array(c)).sum())

    assert [nearer(f) for f in faces] == [HIGHLIGHT, HIGHLIGHT, OUTLINE]


def test_photo_endpoint_takes_several_faces_to_highlight(client):
    lib = library()
    key = lib.people.list()[0].image_keys[0]
    ids = [f["face_id"] for f in lib.parquet.read_faces(key, ["face_id"]).to_pylist()]
    one = client.get(f"/api/images/{key}", params={"face_id": ids[0]})
    several = client.get(f"/api/images/{key}", params=[("face_id", i) for i in ids])
    assert one.status_code == several.status_code == 200
    assert several.headers["content-type"] == "image/jpeg"


def test_the_viewer_page_is_served_with_its_script(client):
    key = library().people.list()[0].image_keys[0]
    r = client.get(f"/photos/{key}")
    assert r.status_code == 200 and "/static/photo.js" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/photo.js").status_code == 200
    for page in ("/", "/people", f"/photos/{key}"):
        assert "facepipe people" not in client.get(page).text  # no command-line wording on the pages
    for script in ("search.js", "people.js", "photo.js", "common.js"):
        assert "facepipe index" not in (Path(__file__).parents[1] / "facepipe/web" / script).read_text()
