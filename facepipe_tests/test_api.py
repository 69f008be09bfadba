"""The HTTP API in-process (FastAPI's TestClient) over knn `train/` indexed with HOG: the DESIGN's
search contract, people, crops, photos with boxes, upload limits and validation, path safety, and
how the server holds (and lets go of) the embedded Qdrant folder."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facepipe import settings
from facepipe.api import MAX_UPLOAD, create_app
from facepipe.library import Library
from facepipe_tests.conftest import KNN

OBAMA1 = KNN / "test/obama1.jpg"


@pytest.fixture(scope="module")
def client(knn) -> Iterator[TestClient]:
    with TestClient(create_app("qdrant", library=Library.open(settings.reload()))) as c:
        yield c


def upload(path: Path, name: str | None = None, ctype: str = "image/jpeg") -> dict:
    return {"image": (name or path.name, path.read_bytes(), ctype)}


def folder(key: str) -> str:
    return key.split("/")[0]


def test_search_answers_the_design_contract(client):
    obama = next(p for p in Library.open(settings.reload()).people.list() if folder(p.image_keys[0]) == "obama")
    Library.open(settings.reload()).people.name(obama.person_id, "Barack Obama")
    try:
        r = client.post("/api/search", files=upload(OBAMA1))
    finally:
        Library.open(settings.reload()).people.name(obama.person_id, None)
    assert r.status_code == 200, r.text
    body = r.json()
    (face,) = body["faces"]
    assert len(face["box"]) == 4 and body["image"] == {"width": 1480, "height": 832}
    first = face["matches"][0]
    assert set(first) == {"image_key", "face_id", "box", "distance", "person_id", "name"}
    assert folder(first["image_key"]) == "obama" and first["distance"] < 0.6
    assert (first["person_id"], first["name"]) == (obama.person_id, "Barack Obama")
    assert [m["distance"] for m in face["matches"]] == sorted(m["distance"] for m in face["matches"])
    # alex_lacamoire's lone train photo is in no person: person_id and name are null.
    alex = next(m for m in face["matches"] if folder(m["image_key"]) == "alex_lacamoire")
    assert (alex["person_id"], alex["name"]) == (None, None)


def test_search_finds_both_people_of_a_group_photo(client):
    r = client.post("/api/search?top_k=3&max_distance=0.6", files=upload(KNN / "test/kit_with_rose.jpg"))
    faces = sorted(r.json()["faces"], key=lambda f: f["box"][3])
    assert [folder(f["matches"][0]["image_key"]) for f in faces] == ["rose_leslie", "kit_harington"]
    assert all(m["distance"] <= 0.6 for f in faces for m in f["matches"])


def test_person_photos_through_the_cluster(client):
    r = client.post("/api/person", files=upload(OBAMA1))
    body = r.json()
    assert body["person_id"] and [p["image_key"] for p in body["photos"]] == ["obama/obama.jpg", "obama/obama2.jpg"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": {"image": ("notes.txt", b"hello, not a photo", "text/plain")}}, 415, "not an image"),
        ({"json": {"image": "obama1.jpg"}}, 415, "multipart/form-data"),
        ({"files": {"photo": ("obama1.jpg", b"\xff\xd8", "image/jpeg")}}, 400, "field 'image'"),
        ({"files": {"image": ("empty.jpg", b"", "image/jpeg")}}, 400, "empty"),
        ({"files": {"image": ("cut.jpg", OBAMA1.read_bytes()[:5000], "image/jpeg")}}, 400, "cannot read the photo"),
    ],
)
def test_bad_uploads_get_a_clear_status_and_message(client, kwargs, status, message):
    r = client.post("/api/search", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_uploads_over_the_limit_are_refused(knn, client):
    r = client.post("/api/search", files={"image": ("big.jpg", bytes(MAX_UPLOAD + 1), "image/jpeg")})
    assert r.status_code == 413 and "20 MB" in r.json()["detail"]
    with TestClient(create_app("qdrant", library=Library.open(settings.reload()), max_upload=10_000)) as small:
        # Declared length: refused before the body is read. Chunked (no length): cut off while counted.
        r = small.post("/api/search", files=upload(OBAMA1))
        assert r.status_code == 413
        head = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        chunks = iter([head, *(b"x" * 8192 for _ in range(40)), b"\r\n--xyz--\r\n"])
        r = small.post("/api/search", content=chunks, headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413


def test_people_and_a_person(client):
    people = client.get("/api/people").json()
    assert sorted(folder(p["image_keys"][0]) for p in people) == ["biden", "kit_harington", "obama", "rose_leslie"]
    p = next(p for p in people if folder(p["image_keys"][0]) == "biden")
    detail = client.get(f"/api/people/{p['person_id']}").json()
    assert [ph["image_key"] for ph in detail["photos"]] == ["biden/biden.jpg", "biden/biden2.jpg"]
    assert all(len(ph["faces"]) == 1 for ph in detail["photos"])
    assert p["cover_face_id"] in {ph["faces"][0]["face_id"] for ph in detail["photos"]}
    r = client.get("/api/people/p999")
    assert r.status_code == 404 and "no person" in r.json()["detail"]


def test_face_crops(client):
    face = client.get("/api/people").json()[0]["cover_face_id"]
    r = client.get(f"/api/faces/{face}/crop")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"
    # A face in no person (alex_lacamoire) is found too, with or without the image_key hint.
    match = client.post("/api/search", files=upload(KNN / "test/alex_lacamoire1.jpg")).json()["faces"][0]["matches"][0]
    assert match["person_id"] is None
    assert client.get(f"/api/faces/{match['face_id']}/crop").status_code == 200
    assert client.get(f"/api/faces/{match['face_id']}/crop?image_key={match['image_key']}").status_code == 200
    assert client.get("/api/faces/not-a-uuid/crop").status_code == 400
    assert client.get("/api/faces/00000000-0000-0000-0000-000000000000/crop").status_code == 404


def test_photos_with_boxes_and_nothing_outside_the_images_root(knn, client):
    r = client.get("/api/images/obama/obama.jpg?max_side=300")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 300
    assert client.get("/api/images/obama/missing.jpg").status_code == 404
    for key in ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "obama/..%2F..%2Fdata%2Fpeople.sqlite"]:
        r = client.get(f"/api/images/{key}")
        assert r.status_code == 400, (key, r.status_code)
    link = knn / "images" / "escape.jpg"
    link.symlink_to(KNN / "test/obama1.jpg")  # a link out of the root, e.g. planted by someone
    try:
        r = client.get("/api/images/escape.jpg")
        assert r.status_code == 400 and "outside the images root" in r.json()["detail"]
    finally:
        link.unlink()


def test_pages_and_docs(client):
    page = client.get("/")
    assert (
        page.status_code == 200
        and 'id="file"' in page.text
        and "default-src 'self'" in page.headers["content-security-policy"]
    )
    assert 'id="people"' in client.get("/people").text
    assert client.get("/static/search.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/people", "/api/people/{person_id}", "/api/faces/{face_id}/crop"} <= set(paths)
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]


_HOLD = """
import sys, time
from facepipe.stores import QdrantStore
store = QdrantStore(path=sys.argv[1], keep_open=True)
store.count()  # opens the engine and keeps the folder until exit
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_the_server_lets_go_of_embedded_qdrant_and_says_when_it_is_busy(knn, client):
    from facepipe.stores.locks import lock_is_free
    from facepipe.stores.qdrant_edge import LOCK_FILE

    folder_ = knn / "data" / "qdrant"

    def _lock_is_free(folder: Path) -> bool:
        return lock_is_free(folder / LOCK_FILE)

    client.app.state.store.close()  # the module's app holds it too (one client per folder per process)
    with TestClient(create_app("qdrant", library=Library.open(settings.reload()), idle_close=0.3, lock_timeout=1)) as c:
        assert c.post("/api/search", files=upload(OBAMA1)).status_code == 200
        assert not _lock_is_free(folder_), "held between requests"
        time.sleep(0.8)
        assert _lock_is_free(folder_), "released after idle_close, so `facepipe index` can write"

        # Another process (an index run) holds the folder: the search says so instead of hanging.
        holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder_), "30"], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            r = c.post("/api/search", files=upload(OBAMA1))
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert "in use by another process" in r.json()["detail"]
        finally:
            holder.kill()
            holder.wait()
        assert c.post("/api/search", files=upload(OBAMA1)).status_code == 200
