"""People edits as constraints: split, move, remove, hide, reject, the log and undo; each kept through
re-clustering, a re-index (new face ids) and another detector (new ids and shifted boxes).

Synthetic Parquet as in test_people (embeddings around chosen centres, no face detection needed).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facepipe.faces.records import Face, ImageRecord
from facepipe.people import People, PeopleError, state
from facepipe.people.records import Conflict
from facepipe.stores.parquet import ParquetStore
from facepipe_tests.shared_pg import pg_dsn, pg_server  # noqa: F401
from facepipe_tests.test_people import CENTRES, RNG, Recorder, face_in_box, persons_of


@pytest.fixture(params=["sqlite", "postgres"])
def lab(tmp_path, request) -> tuple[ParquetStore, People]:
    """The edits on both state backends: the embedded SQLite file and a Postgres (FACEPIPE_PG_DSN)."""
    parquet = ParquetStore(root=str(tmp_path / "data" / "parquet"))
    db = state.postgres_db(request.getfixturevalue("pg_dsn")) if request.param == "postgres" else None
    return parquet, People(tmp_path / "data", parquet, db)


def shot(parquet: ParquetStore, key: str, *people: str, tag: str = "v1", shift: int = 0) -> list[Face]:
    """A photo of these people (left to right); `tag` changes the face ids, `shift` moves every box."""
    faces = []
    for n, who in enumerate(people):
        top, left = 10 + 50 * n + shift, 10 + 60 * n + shift
        box = (top, left + 40, top + 40, left)
        faces.append(face_in_box(key, who, box, tag))
    parquet.write(ImageRecord(key, f"sha-{tag}", "ok", faces=faces))
    return faces


def reindex(parquet: ParquetStore, photos: dict[str, list[str]], tag: str, shift: int = 0) -> None:
    for key, who in photos.items():
        shot(parquet, key, *who, tag=tag, shift=shift)


def ids_of(parquet: ParquetStore) -> dict[str, str | None]:
    """image_key -> person of its first face."""
    return {k: v[0] for k, v in persons_of(parquet).items()}


def test_split_and_move_hold_through_reclustering_reindex_and_another_detector(lab):
    parquet, people = lab
    # A and B look alike to the clustering (one centre), but a1..a3 are A and b1, b2 are B for the user.
    CENTRES["Z"] = CENTRES["A"]
    photos = {"a1.jpg": ["A"], "a2.jpg": ["A"], "a3.jpg": ["A"], "b1.jpg": ["Z"], "b2.jpg": ["Z"], "c1.jpg": ["C"]}
    reindex(parquet, photos, "v1")
    people.update()
    got = ids_of(parquet)
    a = got["a1.jpg"]
    assert {got[k] for k in ("a1.jpg", "a2.jpg", "a3.jpg", "b1.jpg", "b2.jpg")} == {a}
    assert got["c1.jpg"] is None  # seen once

    faces = {r["image_key"]: r["face_id"] for r in parquet.faces(["image_key", "face_id"]).to_pylist()}
    store = Recorder()
    b = people.split(a, [faces["b1.jpg"], faces["b2.jpg"]], [store], who="tester").person_id
    assert b != a and people.get(b).image_keys == ["b1.jpg", "b2.jpg"]
    assert store.sent == {faces["b1.jpg"]: b, faces["b2.jpg"]: b}
    people.move(faces["c1.jpg"], a, who="tester")  # a face alone joins A by hand
    assert ids_of(parquet) == {**dict.fromkeys(photos, a), "b1.jpg": b, "b2.jpg": b}

    # A new photo of the look-alike re-clusters the component: the split and the move hold.
    shot(parquet, "b3.jpg", "Z")
    people.update()
    after = ids_of(parquet)
    assert {k: after[k] for k in photos} == {**dict.fromkeys(photos, a), "b1.jpg": b, "b2.jpg": b}
    assert after["b3.jpg"] in (a, b)

    # Re-indexed with other settings (every face id new), then another detector (boxes 6 px off).
    for tag, shift in (("v2", 0), ("v3", 6)):
        reindex(parquet, {**photos, "b3.jpg": ["Z"]}, tag, shift)
        report = people.update()
        assert report.removed == 7 and report.added == 7
        now = ids_of(parquet)
        assert {k: now[k] for k in photos} == {**dict.fromkeys(photos, a), "b1.jpg": b, "b2.jpg": b}, tag
    del CENTRES["Z"]


def test_no_person_holds_two_faces_of_one_photo_even_after_edits(lab):
    parquet, people = lab
    # D's look-alikes: two faces of one photo, chained to each other through photos of D alone.
    for n in range(4):
        shot(parquet, f"d{n}.jpg", "D")
    shot(parquet, "group.jpg", "D", "D", "D")
    people.update()
    got = persons_of(parquet)
    group = got["group.jpg"]
    assigned = [p for p in group if p]
    assert len(assigned) == len(set(assigned)), group
    d = got["d0.jpg"][0]
    other = next(fid for fid, p in zip(_face_ids(parquet, "group.jpg"), group, strict=True) if p != d)
    with pytest.raises(Conflict, match=r"already has a face in group\.jpg"):
        people.move(other, d)
    # Two persons sharing a photo are not merged.
    shot(parquet, "e1.jpg", "E")
    shot(parquet, "e2.jpg", "E")
    shot(parquet, "group.jpg", "D", "E")
    people.update()
    got = persons_of(parquet)
    d, e = got["group.jpg"]
    assert d and e and d != e
    with pytest.raises(Conflict, match=r"both have a face in group\.jpg"):
        people.merge(d, e)


def _face_ids(parquet: ParquetStore, key: str) -> list[str]:
    rows = parquet.read_faces(key, ["face_id", "left"]).to_pylist()
    return [r["face_id"] for r in sorted(rows, key=lambda r: r["left"])]


def test_every_edit_is_logged_and_undone_in_order(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("b2", "B")]:
        shot(parquet, f"{key}.jpg", who)
    people.update()
    got = ids_of(parquet)
    a, b = got["a1.jpg"], got["b1.jpg"]
    start = ids_of(parquet)

    people.name(a, "Ada", who="tester")
    people.hide(b, who="tester")
    people.merge(a, b, who="tester")
    new = people.split(a, _face_ids(parquet, "a3.jpg"), who="tester").person_id
    people.move(_face_ids(parquet, "a2.jpg")[0], None, who="tester")
    log = people.log()
    assert [e["action"] for e in log] == ["move", "split", "merge", "hide", "name"]
    assert all(e["who"] == "tester" and e["at"] and e["undone_at"] is None for e in log)
    assert log[2]["detail"] == {"person_id": a, "from": [b]}
    assert ids_of(parquet) == {"a1.jpg": a, "a2.jpg": None, "a3.jpg": new, "b1.jpg": a, "b2.jpg": a}
    assert people.get(a).name == "Ada"

    # The removed face stays out of every person through re-clustering.
    shot(parquet, "a4.jpg", "A")
    people.update()
    assert ids_of(parquet)["a2.jpg"] is None and ids_of(parquet)["a4.jpg"] == a

    store = Recorder()
    undone = people.undo(2, [store])
    assert [e["action"] for e in undone] == ["move", "split"]
    now = ids_of(parquet)
    assert (now["a2.jpg"], now["a3.jpg"]) == (a, a)
    assert store.sent[_face_ids(parquet, "a3.jpg")[0]] == a
    people.update()  # the undone rules are gone: clustering does not take the faces out again
    assert ids_of(parquet)["a3.jpg"] == a

    people.undo(3)
    now = ids_of(parquet)
    assert {k: now[k] for k in start} == start
    assert people.get(a).name is None and people.get(b).hidden is False
    assert [e["undone_at"] is not None for e in people.log()] == [True] * 5
    assert people.undo(1) == []


def test_rejections_keep_persons_and_faces_apart(lab):
    parquet, people = lab
    CENTRES["Y"] = CENTRES["A"] + RNG.normal(0, 0.004, 128)  # close enough to chain with A
    for key, who in [("a1", "A"), ("a2", "A"), ("y1", "Y"), ("y2", "Y")]:
        shot(parquet, f"{key}.jpg", who)
    people.update()
    a = ids_of(parquet)["a1.jpg"]
    assert set(ids_of(parquet).values()) == {a}
    y = people.split(a, _face_ids(parquet, "y1.jpg") + _face_ids(parquet, "y2.jpg")).person_id
    with pytest.raises(PeopleError, match="not in"):
        people.split(a, _face_ids(parquet, "y1.jpg"))
    people.reject(a, y)
    shot(parquet, "a3.jpg", "A")
    people.update()
    got = ids_of(parquet)
    assert (got["a1.jpg"], got["y1.jpg"], got["y2.jpg"]) == (a, y, y) and got["a3.jpg"] in (a, y)
    # A face said not to be its person never goes back there, even re-indexed with a new id.
    (fid,) = _face_ids(parquet, "a3.jpg")
    was = got["a3.jpg"]
    people.reject_face(fid, was)
    shot(parquet, "a3.jpg", "A", tag="v2")
    people.update()
    assert ids_of(parquet)["a3.jpg"] != was
    assert [e["action"] for e in people.log()][:2] == ["review", "review"]
    del CENTRES["Y"]


def test_review_offers_close_persons_and_remembers_the_answer(lab):
    parquet, people = lab
    step = RNG.normal(0, 1, 128)
    CENTRES["W"] = CENTRES["A"] + 0.58 * step / np.linalg.norm(step)  # centroids 0.58 apart, faces ~0.66
    for key, who in [("a1", "A"), ("a2", "A"), ("w1", "W"), ("w2", "W"), ("b1", "B"), ("b2", "B")]:
        shot(parquet, f"{key}.jpg", who)
    people.update()
    got = ids_of(parquet)
    a, w = got["a1.jpg"], got["w1.jpg"]
    assert a != w
    (offer,) = [s for s in people.suggestions() if s["kind"] == "persons"]
    assert {offer["person_id"], offer["other_id"]} == {a, w} and 0.5 < offer["distance"] < 0.65
    people.decide(offer, accept=False)
    assert people.suggestions() == []
    people.update()  # nothing changed: still declined
    assert people.suggestions() == []
    people.undo()
    (again,) = people.suggestions()
    people.decide(again, accept=True)
    assert set(ids_of(parquet).values()) == {got["a1.jpg"], got["b1.jpg"]} and people.get(w).person_id in (a, w)
    assert [e["action"] for e in people.log()] == ["review", "review"]
    del CENTRES["W"]


def test_forgetting_erases_the_rules_about_a_person_and_a_photo(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("b2", "B")]:
        shot(parquet, f"{key}.jpg", who)
    people.update()
    got = ids_of(parquet)
    new = people.split(got["a1.jpg"], _face_ids(parquet, "a3.jpg")).person_id
    people.move(_face_ids(parquet, "b1.jpg")[0], None)
    people.forget(new)
    people.forget_images(["b1.jpg"])
    with people.db.reading() as db:
        assert db.execute("SELECT count(*) FROM face_rules").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM apart").fetchone() == (0,)


# -- the real photos ---------------------------------------------------------------------------------------


def test_solvay_faces_are_never_one_person_with_the_default_detector(env, shared_data, monkeypatch, capsys):
    """The Solvay conference photo (29 small monochrome faces that chain into each other) with the other
    sample group photos, through `facepipe index` with the default detector: no person holds two faces
    of one photo, in the people state, the Parquet and `facepipe people --json`."""
    from facepipe.cli import main
    from facepipe.faces.detection import DetectSettings

    monkeypatch.setenv("FACEPIPE_DETECTOR", DetectSettings().detector)
    for photo in sorted((shared_data / "cocoindex").glob("*.jpg")):
        env.add(photo, f"cocoindex/{photo.name}")
    for photo in sorted((shared_data / "face_recognition/examples/knn_examples/test").glob("*.jpg")):
        env.add(photo, f"knn/{photo.name}")
    assert main(["index", "--quiet"]) == 0
    rows = env.parquet.faces(["image_key", "person_id"]).to_pylist()
    solvay = [r for r in rows if r["image_key"].endswith("Solvay_conference_1927.jpg")]
    assert len(solvay) >= 25, "the default detector finds the Solvay faces"
    pairs = [(r["image_key"], r["person_id"]) for r in rows if r["person_id"]]
    assert len(pairs) == len(set(pairs)), "a person holds two faces of one photo"
    capsys.readouterr()
    assert main(["people", "--json"]) == 0
    people = json.loads(capsys.readouterr().out)
    assert people and all(p["faces"] == len(p["image_keys"]) for p in people), people
