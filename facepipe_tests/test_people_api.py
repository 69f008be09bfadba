"""The people edits over HTTP (FastAPI's TestClient, real stores) on real photos indexed with HOG:
rename, hide, merge, split, move a face, the review queue, the log and undo; what the CLI, the Parquet
and the store then say; the edits kept through a re-index with another detector (every face id new);
and the guard: cross-site requests refused, FACEPIPE_API_TOKEN required when set."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from facepipe.api import create_app
from facepipe.cli import main
from facepipe_tests.conftest import KNN, KNN_PEOPLE


def people_json(capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["people", "--json"]) == 0
    return {p["image_keys"][0].split("/")[0]: p for p in json.loads(capsys.readouterr().out)}


def people_by_id(capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["people", "--json"]) == 0
    return {p["person_id"]: p for p in json.loads(capsys.readouterr().out)}


def face_of(env, key: str) -> str:
    (row,) = env.parquet.read_faces(key, ["face_id"]).to_pylist()
    return row["face_id"]


@pytest.fixture
def indexed(env, capsys) -> Iterator:
    for key, source in KNN_PEOPLE.items():
        env.add(source, key)
    assert main(["index", "--quiet"]) == 0
    yield env


def test_edits_through_http_show_in_the_cli_parquet_and_store_and_survive_another_detector(
    indexed, capsys, monkeypatch
):
    env = indexed
    before = people_json(capsys)
    assert set(before) == {"obama", "biden", "kit"}  # alex has one photo: no person
    obama, biden, kit = (before[k]["person_id"] for k in ("obama", "biden", "kit"))
    library = env.library()
    with TestClient(create_app("qdrant", library=library)) as http:
        r = http.patch(f"/api/people/{obama}", json={"name": " Barack  Obama "})
        assert r.status_code == 200 and r.json()["name"] == "Barack Obama", r.text
        assert http.patch(f"/api/people/{kit}", json={"hidden": True}).json()["hidden"] is True
        assert http.patch("/api/people/p999", json={"name": "x"}).status_code == 404
        assert http.patch(f"/api/people/{obama}", json={}).status_code == 422

        # Split obama1 off Obama (answers the new person), then merge it back.
        r = http.post(f"/api/people/{obama}/split", json={"face_ids": [face_of(env, "obama/c.jpg")]})
        assert r.status_code == 201, r.text
        new = r.json()
        assert new["person_id"] not in (obama, biden, kit) and new["image_keys"] == ["obama/c.jpg"]
        assert (
            http.post(f"/api/people/{obama}/split", json={"face_ids": [face_of(env, "biden/a.jpg")]}).status_code == 409
        )
        r = http.post(f"/api/people/{obama}/merge", json={"from": [new["person_id"]]})
        assert r.status_code == 200 and r.json()["faces"] == 3, r.text
        assert http.post(f"/api/people/{obama}/merge", json={"from": [obama]}).status_code == 409

        # Move Biden's second face to no person: it waits in the unassigned view and the review queue.
        biden_b = face_of(env, "biden/b.jpg")
        r = http.put(f"/api/faces/{biden_b}/person", json={"person_id": None})
        assert r.status_code == 200 and r.json() == {"face_id": biden_b, "person_id": None, "name": None}
        assert biden_b in {f["face_id"] for f in http.get("/api/faces/unassigned").json()}
        queue = http.get("/api/review").json()
        # biden/b was taken out by hand: it is not suggested back.
        assert biden_b not in {s.get("face_id") for s in queue}
        # A face moved into Biden (by hand) instead.
        r = http.put(f"/api/faces/{biden_b}/person", json={"person_id": biden})
        assert r.json()["person_id"] == biden

        # The CLI, the Parquet and the store agree with the page.
        now = people_json(capsys)
        assert now["obama"]["name"] == "Barack Obama" and now["obama"]["faces"] == 3
        assert set(now) == {"obama", "biden", "kit"}
        rows = {r["image_key"]: r["person_id"] for r in env.parquet.faces(["image_key", "person_id"]).to_pylist()}
        assert rows["obama/c.jpg"] == obama and rows["biden/b.jpg"] == biden
        store = library.store("pgvector")
        try:
            held = {key: m.person_id for key, ms in store.faces_of_images(list(rows)).items() for m in ms}
        finally:
            store.close()
        assert held == rows

        log = http.get("/api/people/log").json()
        assert [e["action"] for e in log] == ["move", "move", "merge", "split", "hide", "name"]
        assert all(e["who"].startswith("api ") for e in log)

        # Undo the last two (both moves): Biden's face is back where clustering put it.
        undone = http.post("/api/people/undo", json={"n": 2}).json()
        assert [e["action"] for e in undone] == ["move", "move"]
        assert people_json(capsys)["biden"]["faces"] == 2

    # Another detector: every face found again with a new id and a slightly different box. The name,
    # the hidden flag and the merge hold; the split and the merge are recorded by photo and box.
    monkeypatch.setenv("FACEPIPE_DETECTOR", "yunet")
    assert main(["index", "--quiet"]) == 0
    ids = {r["face_id"] for r in env.parquet.faces(["face_id"]).to_pylist()}
    assert face_of(env, "obama/c.jpg") in ids and biden_b not in ids
    after = people_json(capsys)
    assert after["obama"]["person_id"] == obama and after["obama"]["name"] == "Barack Obama"
    assert after["obama"]["image_keys"] == ["obama/a.jpg", "obama/b.jpg", "obama/c.jpg"]
    assert after["kit"]["person_id"] == kit and library.people.get(kit).hidden
    pairs = [(r["image_key"], r["person_id"]) for r in env.parquet.faces(["image_key", "person_id"]).to_pylist()]
    assert len([p for p in pairs if p[1]]) == len({p for p in pairs if p[1]})


def test_review_accept_and_reject_are_remembered(indexed, capsys):
    """Alex's third photo (a PNG portrait) is 0.52 from each of his other two faces, so clustering leaves
    it out, but 0.49 from their centroid: the queue offers it to him."""
    env = indexed
    env.add(KNN / "test/alex_lacamoire1.jpg", "alex/c.jpg")
    env.add(KNN.parents[0] / "alex-lacamoire.png", "alex/b.png")
    assert main(["index", "--quiet"]) == 0
    alex = people_json(capsys)["alex"]
    assert alex["image_keys"] == ["alex/a.jpg", "alex/c.jpg"]
    png = face_of(env, "alex/b.png")
    with TestClient(create_app("qdrant", library=env.library())) as http:
        queue = http.get("/api/review").json()
        (offer,) = [s for s in queue if s.get("face_id") == png]
        assert offer["kind"] == "face" and offer["person_id"] == alex["person_id"] and offer["distance"] < 0.6
        assert offer["face_ids"][0] == png and offer["face_ids"][1] in {face_of(env, k) for k in alex["image_keys"]}
        decision = {"kind": "face", "person_id": alex["person_id"], "face_id": png}
        r = http.post("/api/review/decision", json={**decision, "accept": False})
        assert r.status_code == 200, r.text
        assert png not in {s.get("face_id") for s in r.json()}
        half = {"kind": "persons", "person_id": alex["person_id"], "accept": True}
        assert http.post("/api/review/decision", json=half).status_code == 422
        # The rejection holds through a re-index of that photo (a new face id).
        assert png not in {s.get("face_id") for s in http.get("/api/review").json()}
        # Undo the rejection: offered again; accept puts the face in Alex.
        assert [e["action"] for e in http.post("/api/people/undo").json()] == ["review"]
        assert png in {s.get("face_id") for s in http.get("/api/review").json()}
        r = http.post("/api/review/decision", json={**decision, "accept": True})
        assert r.status_code == 200 and png not in {s.get("face_id") for s in r.json()}
    after = people_json(capsys)["alex"]
    assert after["person_id"] == alex["person_id"] and after["image_keys"] == ["alex/a.jpg", "alex/b.png", "alex/c.jpg"]
    assert main(["people", "log"]) == 0
    out = capsys.readouterr().out
    assert out.count("review") == 2 and "(undone" in out


def test_cli_people_commands_use_the_same_edits(indexed, capsys):
    env = indexed
    ids = {k: p["person_id"] for k, p in people_json(capsys).items()}
    face = face_of(env, "obama/c.jpg")
    assert main(["people", "split", ids["obama"], face]) == 0
    now = people_by_id(capsys)
    assert now[ids["obama"]]["faces"] == 2 and len(now) == 4
    assert main(["people", "move", face, ids["obama"]]) == 0
    assert main(["people", "hide", ids["kit"]]) == 0
    assert main(["people", "move", face_of(env, "biden/a.jpg"), ids["obama"]]) == 0
    assert main(["people", "move", "nope", ids["obama"]]) == 2
    assert "no face 'nope'" in capsys.readouterr().err
    assert main(["people", "merge", ids["obama"], ids["obama"]]) == 2
    assert "already the same person" in capsys.readouterr().err
    assert main(["people", "undo", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("undid") == 4
    assert {k: p["faces"] for k, p in people_json(capsys).items()} == {"obama": 3, "biden": 2, "kit": 2}
    capsys.readouterr()
    assert main(["people", "log", "--json"]) == 0
    log = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in log] == ["move", "hide", "move", "split"] and all(e["undone_at"] for e in log)
    assert log[0]["who"].startswith("cli ")


def test_people_evaluate_scores_the_named_persons(indexed, capsys):
    ids = {k: p["person_id"] for k, p in people_json(capsys).items()}
    assert main(["people", "evaluate"]) == 2
    assert "name at least one person" in capsys.readouterr().err
    for key, name in (("obama", "Obama"), ("biden", "Biden"), ("kit", "Kit")):
        assert main(["people", "name", ids[key], name]) == 0
    capsys.readouterr()
    assert main(["people", "evaluate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["faces"], report["names"]) == (7, 3)
    assert report["current"]["threshold"] == 0.5 and report["current"]["pairs"] == 3 + 1 + 1
    assert report["best"]["f1"] >= report["current"]["f1"] and report["best"]["f1"] == 1.0
    assert [r["threshold"] for r in report["sweep"]] == sorted(r["threshold"] for r in report["sweep"])
    assert main(["people", "evaluate"]) == 0
    assert "<- best" in capsys.readouterr().out


def test_edits_are_refused_cross_site_and_without_the_token(indexed, capsys, monkeypatch):
    env = indexed
    obama = people_json(capsys)["obama"]["person_id"]
    with TestClient(create_app("qdrant", library=env.library()), base_url="http://testserver") as http:
        cross = http.patch(f"/api/people/{obama}", json={"name": "X"}, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and "cross-site" in cross.json()["detail"]
        site = http.patch(f"/api/people/{obama}", json={"name": "X"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert site.status_code == 403
        same = http.patch(
            f"/api/people/{obama}",
            json={"name": "Same Origin"},
            headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        )
        assert same.status_code == 200, same.text
    assert people_json(capsys)["obama"]["name"] == "Same Origin"

    monkeypatch.setenv("FACEPIPE_API_TOKEN", "s3cret-token")
    library = env.library()
    assert "s3cret" not in repr(library.settings)
    with TestClient(create_app("qdrant", library=library)) as http:
        assert http.patch(f"/api/people/{obama}", json={"name": "X"}).status_code == 401
        bad = {"Authorization": "Bearer wrong"}
        assert http.patch(f"/api/people/{obama}", json={"name": "X"}, headers=bad).status_code == 401
        http.cookies.set("facepipe_token", "s3cret-token")  # a cookie is for reads only
        assert http.patch(f"/api/people/{obama}", json={"name": "X"}).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert http.patch(f"/api/people/{obama}", json={"name": "Token"}, headers=good).status_code == 200
        assert http.get("/api/people").status_code == 200  # reads stay open on loopback
    with TestClient(create_app("qdrant", library=library, protect_reads=True)) as http:
        assert http.get("/api/people").status_code == 401
        assert http.get("/api/people", headers=good).status_code == 200
        http.cookies.set("facepipe_token", "s3cret-token")
        assert http.get("/api/people").status_code == 200
        assert http.get("/people").status_code == 200  # the page itself holds no data
    assert people_json(capsys)["obama"]["name"] == "Token"
