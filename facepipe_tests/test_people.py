"""People: clustering, stable ids, names, merges; then the same on the real knn photos through
`facepipe index`, the stores and `facepipe people / person`, and search accuracy on knn `test/`.

The first half runs facepipe.people on synthetic Parquet (embeddings around chosen centres, on
dlib's scale: a person's faces ~0.3 apart, people ~1.6 apart), so it needs no face detection.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

from facepipe import settings
from facepipe.cli import main
from facepipe.faces.records import Face, ImageRecord
from facepipe.library import Library
from facepipe.people import People, PeopleError, state
from facepipe.stores.parquet import ParquetStore
from facepipe_tests.conftest import KNN
from facepipe_tests.shared_pg import pg_dsn, pg_server  # noqa: F401
from facepipe_tests.store_fixtures import synthetic_face

# -- synthetic -------------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)
CENTRES = {name: RNG.normal(0, 0.1, 128) for name in "ABCDEFG"}


def face(key: str, who: str, n: int = 0, tag: str = "v1", noise: float = 0.02) -> Face:
    return face_in_box(key, who, (10 + 50 * n, 50 + 50 * n, 50 + 50 * n, 10 + 50 * n), tag, noise)


def face_in_box(key: str, who: str, box: tuple[int, int, int, int], tag: str = "v1", noise: float = 0.02) -> Face:
    """A synthetic face of `who` (its embedding near the person's centre) at `box` (top, right, bottom, left)."""
    return synthetic_face(key, box, (CENTRES[who] + RNG.normal(0, noise, 128)).astype(np.float32), tag=tag)


class Recorder:
    """A store that records the person ids it is sent."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str | None]] = []

    def set_person_ids(self, mapping) -> None:
        self.calls.append(dict(mapping))

    @property
    def sent(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for call in self.calls:
            out.update(call)
        return out


@pytest.fixture(params=["sqlite", "postgres"])
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ParquetStore, People]]:
    """Synthetic Parquet and its people, with the state in SQLite and again in Postgres (FACEPIPE_PG_DSN)."""
    parquet = ParquetStore(root=str(tmp_path / "data" / "parquet"))
    db = None
    if request.param == "postgres":
        db = state.postgres_db(request.getfixturevalue("pg_dsn"))
    yield parquet, People(tmp_path / "data", parquet, db)


def write(parquet: ParquetStore, key: str, *people: str, tag: str = "v1") -> list[Face]:
    faces = [face(key, who, n, tag) for n, who in enumerate(people)]
    parquet.write(ImageRecord(key, f"sha-{tag}", "ok", faces=faces))
    return faces


def persons_of(parquet: ParquetStore) -> dict[str, list[str | None]]:
    """image_key -> person ids of its faces (left to right), as the Parquet holds them."""
    rows = parquet.faces(["image_key", "left", "person_id"]).to_pylist()
    out: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: (r["image_key"], r["left"])):
        out.setdefault(r["image_key"], []).append(r["person_id"])
    return out


def mtimes(parquet: ParquetStore) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in parquet.iter_face_files()}


def test_clusters_leave_singletons_and_same_photo_faces_unassigned(lab):
    parquet, people = lab
    write(parquet, "a.jpg", "A")
    write(parquet, "b.jpg", "A", "B")
    write(parquet, "c.jpg", "B")
    write(parquet, "d.jpg", "C")  # seen once
    write(parquet, "e.jpg", "D", "D")  # two look-alikes in one photo are two people
    report = people.update()
    assert (report.faces, report.assigned, report.persons) == (7, 4, 2)
    got = persons_of(parquet)
    a, b = got["a.jpg"][0], got["c.jpg"][0]
    assert a and b and a != b
    assert got == {"a.jpg": [a], "b.jpg": [a, b], "c.jpg": [b], "d.jpg": [None], "e.jpg": [None, None]}
    assert [(p.person_id, p.faces, p.image_keys) for p in people.list()] == [
        (a, 2, ["a.jpg", "b.jpg"]),
        (b, 2, ["b.jpg", "c.jpg"]),
    ]


def test_ids_and_names_survive_new_photos_and_new_face_ids(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]:
        write(parquet, f"{key}.jpg", who)
    people.update()
    before = persons_of(parquet)
    a, b = before["a1.jpg"][0], before["b1.jpg"][0]
    people.name(a, "  Ada   Lovelace ")
    assert people.get(a).name == "Ada Lovelace"

    # More photos: a third of A, and a new person C. Existing ids do not move.
    write(parquet, "a3.jpg", "A")
    write(parquet, "c1.jpg", "C")
    write(parquet, "c2.jpg", "C")
    report = people.update()
    now = persons_of(parquet)
    assert {k: v for k, v in now.items() if k in before} == before
    assert now["a3.jpg"] == [a] and now["c1.jpg"] == now["c2.jpg"] and now["c1.jpg"][0] not in (a, b)
    assert report.new_persons == [now["c1.jpg"][0]]

    # Every photo processed again with other settings: all face ids change. Ids and names stay.
    for key in now:
        who = {"a": "A", "b": "B", "c": "C"}[key[0]]
        write(parquet, key, who, tag="v2")
    report = people.update()
    assert (report.added, report.removed, report.new_persons) == (7, 7, [])
    assert persons_of(parquet) == now
    assert people.get(a).name == "Ada Lovelace"


def test_only_changed_files_are_rewritten_and_sent_to_the_stores(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]:
        write(parquet, f"{key}.jpg", who)
    store = Recorder()
    people.update([store])
    assert len(store.sent) == 4
    a = persons_of(parquet)["a1.jpg"][0]
    assert not people.is_stale()

    # Nothing changed: nothing read, written or sent.
    before, store.calls = mtimes(parquet), []
    report = people.update([store])
    assert (report.files_read, report.files_rewritten, report.changed, store.sent) == (0, 0, 0, {})

    # One new photo of A: only its file gets a person id, only its face goes to the stores.
    (new,) = write(parquet, "a3.jpg", "A")
    assert people.is_stale()
    report = people.update([store])
    after = mtimes(parquet)
    assert {k for k in after if after[k] != before.get(k)} == {"a3.jpg.parquet"}
    assert store.sent == {new.face_id: a}

    # The faces asset rewrites a photo (same faces, person_id null) and exports it like that:
    # the next update puts the id back in that file and in the stores.
    store.calls = []
    faces = write(parquet, "a1.jpg", "A")
    assert persons_of(parquet)["a1.jpg"] == [None]
    report = people.update([store])
    assert persons_of(parquet)["a1.jpg"] == [a]
    assert store.sent == {faces[0].face_id: a} and report.files_rewritten == 1


def test_merge_holds_through_reclustering_and_deletions(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]:
        write(parquet, f"{key}.jpg", who)
    people.update()
    got = persons_of(parquet)
    a, b = got["a1.jpg"][0], got["b1.jpg"][0]
    people.name(b, "Bea")
    store = Recorder()
    person, moved = people.merge(a, b, [store])
    assert (person.person_id, person.name, person.faces, moved) == (a, "Bea", 4, 2)
    assert all(v == [a] for v in persons_of(parquet).values())
    assert set(store.sent.values()) == {a} and len(store.sent) == 2
    assert [p.person_id for p in people.list()] == [a]
    assert people.get(b).person_id == a  # the old id answers as the person it joined
    with pytest.raises(PeopleError, match="already the same person"):
        people.merge(b, a)
    with pytest.raises(PeopleError, match="no person"):
        people.merge(a, "p999")

    # B's cluster grows: still A.
    write(parquet, "b3.jpg", "B")
    people.update()
    assert persons_of(parquet)["b3.jpg"] == [a]

    # All of B's photos leave, then come back (new face ids): back into A, not a new person.
    for key in ("b1", "b2", "b3"):
        parquet.delete(f"{key}.jpg")
    people.update()
    assert [(p.person_id, p.faces) for p in people.list()] == [(a, 2)]
    write(parquet, "b4.jpg", "B", tag="v2")
    write(parquet, "b5.jpg", "B", tag="v2")
    report = people.update()
    assert report.new_persons == []
    assert persons_of(parquet)["b4.jpg"] == [a] and people.get(a).faces == 4


def test_forgetting_a_person_erases_it_for_good(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C"), ("c2", "C")]:
        write(parquet, f"{key}.jpg", who)
    people.update()
    got = persons_of(parquet)
    a, b, c = got["a1.jpg"][0], got["b1.jpg"][0], got["c1.jpg"][0]
    people.name(a, "Ada")
    people.merge(a, c)  # C was folded into A: the same person, forgotten with it
    assert people.forget(a) == sorted([a, c], key=lambda p: int(p[1:]))
    # What `facepipe forget --person` does next: the faces leave the Parquet and the stores, then update.
    for key in ("a1", "a2", "c1", "c2"):
        parquet.delete(f"{key}.jpg")
    people.update()
    assert [(p.person_id, p.faces) for p in people.list()] == [(b, 2)]
    with pytest.raises(PeopleError):
        people.get(a)
    with state.reading(people.db) as st:  # no name, centroid or embedding of theirs is left
        assert st.db.execute("SELECT count(*) FROM persons WHERE person_id IN (?, ?)", (a, c)).fetchone()[0] == 0
        assert st.db.execute("SELECT count(*) FROM faces").fetchone()[0] == 2
    # Photos of them arriving later make a new person: nothing to reclaim the old id from.
    write(parquet, "a3.jpg", "A")
    write(parquet, "a4.jpg", "A")
    report = people.update()
    assert len(report.new_persons) == 1 and report.new_persons[0] not in (a, b, c)


def test_state_is_readable_for_analytics(lab):
    parquet, people = lab
    for key, who in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]:
        write(parquet, f"{key}.jpg", who)
    people.update()
    pid = persons_of(parquet)["a1.jpg"][0]
    people.name(pid, "Ada")
    rows = duckdb.sql(f"SELECT person_id, name, faces, images FROM '{people.snapshot_path}' ORDER BY 1").fetchall()
    assert sorted(rows) == sorted([(pid, "Ada", 2, 2), (persons_of(parquet)["b1.jpg"][0], None, 2, 2)])
    with state.reading(people.db) as st:  # the `people` view, in SQLite or Postgres
        assert tuple(st.db.execute("SELECT name, faces FROM people WHERE person_id = ?", (pid,)).fetchone()) == (
            "Ada",
            2,
        )


# -- the real photos ---------------------------------------------------------------------------------------

TEST_LABELS = {  # knn test/ photo -> train/ folder of each face, left to right (None: nobody in train/)
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "johnsnow_test1.jpg": ["kit_harington"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama1.jpg": ["obama"],
    "obama_and_biden.jpg": ["biden", "obama", None],  # the girl at the right edge
}


def cli_json(capsys, *args: str):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_each_train_folder_is_one_person(knn, capsys):
    people = cli_json(capsys, "people")
    by_folder: dict[str, set[str]] = {}
    for p in people:
        assert p["faces"] == len(p["image_keys"]) and p["name"] is None
        for key in p["image_keys"]:
            by_folder.setdefault(key.split("/")[0], set()).add(p["person_id"])
    folders = {d.name: len(list(d.iterdir())) for d in (KNN / "train").iterdir()}
    # alex_lacamoire has one photo in train/: a face seen once stays unassigned, so no person yet.
    assert set(by_folder) == {f for f, n in folders.items() if n > 1}
    assert all(len(ids) == 1 for ids in by_folder.values()), by_folder
    assert len({next(iter(ids)) for ids in by_folder.values()}) == len(by_folder)
    assert len(people) == 4

    # Parquet and both stores carry the same person ids.
    library = Library.open(settings.reload())
    parquet = library.parquet
    expected = {r["face_id"]: r["person_id"] for r in parquet.faces(["face_id", "person_id"]).to_pylist()}
    assert sum(v is None for v in expected.values()) == 1
    keys = sorted(parquet.image_keys())
    for name in ("qdrant", "pgvector"):
        store = library.store(name)
        try:
            got = {m.face_id: m.person_id for ms in store.faces_of_images(keys).values() for m in ms}
        finally:
            store.close()
        assert got == expected, name


def test_every_test_face_finds_its_own_person_first(knn):
    """knn `test/`, in both stores: each face's nearest train face is its person's, within 0.6, and every
    other person is farther than 0.6; the girl in obama_and_biden (nobody in train/) has no one within 0.6."""
    from facepipe import query

    stores = Library.open(settings.reload()).stores()
    try:
        for name, labels in TEST_LABELS.items():
            faces = sorted(query.faces_in((KNN / "test" / name).read_bytes()), key=lambda f: f.left)
            assert len(faces) == len(labels), name
            for store_name, store in stores.items():
                results = store.search_many([f.embedding for f in faces], top_k=10)
                for matches, label in zip(results, labels, strict=True):
                    first, where = matches[0], (store_name, name, label)
                    if label is None:
                        assert first.distance > query.SAME_PERSON, (where, first)
                        continue
                    assert first.image_key.split("/")[0] == label, (where, first)
                    assert first.distance < query.SAME_PERSON, (where, first)
                    others = [m for m in matches if m.image_key.split("/")[0] != label]
                    assert others[0].distance > query.SAME_PERSON, (where, others[0])
    finally:
        for store in stores.values():
            store.close()


def test_person_goes_through_the_cluster_or_by_distance(knn, capsys):
    photos = cli_json(capsys, "person", str(KNN / "test/obama1.jpg"))
    assert [p["image_key"] for p in photos] == ["obama/obama.jpg", "obama/obama2.jpg"]
    assert main(["person", str(KNN / "test/obama1.jpg")]) == 0
    assert "2 photos of person p" in capsys.readouterr().out
    # alex_lacamoire is a singleton in train/: found by distance, not through a cluster.
    photos = cli_json(capsys, "person", str(KNN / "test/alex_lacamoire1.jpg"), "--store", "pgvector")
    assert [p["image_key"] for p in photos] == ["alex_lacamoire/img1.jpg"]
    assert main(["person", str(KNN / "test/alex_lacamoire1.jpg")]) == 0
    assert "in no person cluster" in capsys.readouterr().out


def test_cli_names_merges_and_new_photos(env, capsys):
    """Through `facepipe index` and `facepipe people`: a name and a merge survive more photos, and
    alex_lacamoire becomes a person once a second photo of him arrives."""
    for folder in ("obama", "biden", "alex_lacamoire"):
        for photo in (KNN / "train" / folder).iterdir():
            env.add(photo, f"{folder}/{photo.name}")
    assert cli_json(capsys, "index", "--quiet")["people"] == {"persons": 2}
    ids = {p["image_keys"][0].split("/")[0]: p["person_id"] for p in cli_json(capsys, "people")}
    assert set(ids) == {"obama", "biden"}
    assert main(["people", "name", ids["obama"], "Barack Obama"]) == 0
    assert main(["people", "name", "p999", "Nobody"]) == 2
    assert "no person 'p999'" in capsys.readouterr().err

    # New photos: obama1 joins Obama; alex's second photo makes him a person.
    env.add(KNN / "test/obama1.jpg", "new/obama1.jpg")
    env.add(KNN / "test/alex_lacamoire1.jpg", "new/alex.jpg")
    cli_json(capsys, "index", "--quiet")
    people = {p["person_id"]: p for p in cli_json(capsys, "people")}
    obama = people[ids["obama"]]
    assert obama["name"] == "Barack Obama" and "new/obama1.jpg" in obama["image_keys"]
    assert people[ids["biden"]]["image_keys"] == ["biden/biden.jpg", "biden/biden2.jpg"]
    (alex,) = [p for p in people.values() if p["person_id"] not in ids.values()]
    assert alex["image_keys"] == ["alex_lacamoire/img1.jpg", "new/alex.jpg"] and alex["name"] is None

    # Merge alex into biden (wrongly, on purpose): kept across a re-index that re-clusters.
    assert main(["people", "merge", ids["biden"], alex["person_id"]]) == 0
    assert "folded into" in capsys.readouterr().out
    env.add(KNN / "test/alex_lacamoire1.jpg", "new/alex again.jpg")
    cli_json(capsys, "index", "--quiet")
    people = {p["person_id"]: p for p in cli_json(capsys, "people")}
    assert set(people) == {ids["obama"], ids["biden"]}
    assert "new/alex again.jpg" in people[ids["biden"]]["image_keys"]
    rows = env.parquet.faces(["image_key", "person_id"]).to_pylist()
    assert {r["person_id"] for r in rows if r["image_key"].startswith(("alex", "new/alex"))} == {ids["biden"]}

    # A deleted photo leaves its person (no run needed: `facepipe index` re-clusters).
    os.remove(env.images / "new/obama1.jpg")
    cli_json(capsys, "index", "--quiet")
    people = {p["person_id"]: p for p in cli_json(capsys, "people")}
    assert people[ids["obama"]]["image_keys"] == ["obama/obama.jpg", "obama/obama2.jpg"]


# -- automation ----------------------------------------------------------------------------------------------


def test_eager_waits_for_every_photo_then_asks_once(env):
    """`people` is requested once every partition's faces and exports are in, not per batch."""
    import dagster as dg

    defs = env.defs()
    selection = dg.AssetSelection.assets("people")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("images", ["a.jpg", "b.jpg"])

        def evaluate(cursor=None):
            return dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=selection, cursor=cursor
            )

        def done(asset: str, partition: str | None = None) -> None:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))

        result = evaluate()
        assert result.total_requested == 0
        for asset in ("faces", "qdrant_faces", "pgvector_faces"):
            done(asset, "a.jpg")
        result = evaluate(result.cursor)
        assert result.total_requested == 0, "b.jpg is still missing"
        for asset in ("faces", "qdrant_faces", "pgvector_faces"):
            done(asset, "b.jpg")
        result = evaluate(result.cursor)
        assert result.total_requested == 1
        done("people")
        assert evaluate(result.cursor).total_requested == 0


def test_people_sensor_asks_for_a_run_only_when_the_parquet_moved(env):
    import dagster as dg

    defs = env.defs()
    people_sensor = defs.resolve_sensor_def("people_sensor")

    def tick() -> dg.SensorResult:
        with (
            dg.DagsterInstance.get() as instance,
            dg.build_sensor_context(instance=instance, resources=defs.resources) as context,
        ):
            return people_sensor(context)

    assert not tick().run_requests
    parquet = env.parquet
    write(parquet, "a.jpg", "A")
    assert len(tick().run_requests) == 1
    People(env.data, parquet).update()
    assert not tick().run_requests
    parquet.delete("a.jpg")  # what the images sensor does for a deleted photo
    assert len(tick().run_requests) == 1
