"""A third vector store is one class plus one registry entry: exported, checked, erased, searched."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar

import dagster as dg
import numpy as np
import pytest

from facepipe.cli import main
from facepipe.faces.records import Face
from facepipe.stores import registry
from facepipe.stores.base import Match, as_vector, within
from facepipe_tests.conftest import FR, KNN


class MemoryStore:
    """A minimal FaceStore: exact search over a dict, alive as long as the process."""

    held: ClassVar[dict[str, Face]] = {}

    def ensure_schema(self) -> None:
        pass

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None:
        keys = set(faces_by_image)
        for fid in [fid for fid, face in self.held.items() if face.image_key in keys]:
            del self.held[fid]
        for faces in faces_by_image.values():
            self.held.update({face.face_id: face for face in faces})

    def delete_images(self, image_keys: Iterable[str]) -> None:
        keys = set(image_keys)
        for fid in [fid for fid, face in self.held.items() if face.image_key in keys]:
            del self.held[fid]

    def delete_faces(self, face_ids: Iterable[str]) -> None:
        for fid in face_ids:
            self.held.pop(fid, None)

    def search(self, embedding: np.ndarray, top_k: int = 10, max_distance: float | None = None) -> list[Match]:
        return self.search_many([embedding], top_k, max_distance)[0]

    def search_many(self, embeddings, top_k: int = 10, max_distance: float | None = None) -> list[list[Match]]:
        faces = list(self.held.values())
        results = []
        for embedding in embeddings:
            query = as_vector(embedding)
            scored = sorted((float(np.linalg.norm(f.embedding - query)), f.face_id) for f in faces)[:top_k]
            matches = [self._match(self.held[fid], distance) for distance, fid in scored]
            results.append(within(matches, max_distance))
        return results

    @staticmethod
    def _match(face: Face, distance: float = 0.0) -> Match:
        return Match(face.face_id, face.image_key, face.box, distance, face.person_id)

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        wanted = None if image_keys is None else set(image_keys)
        out: dict[str, set[str]] = {}
        for face in self.held.values():
            if wanted is None or face.image_key in wanted:
                out.setdefault(face.image_key, set()).add(face.face_id)
        return out

    def faces_of_images(self, image_keys: Iterable[str]) -> dict[str, list[Match]]:
        wanted = set(image_keys)
        out: dict[str, list[Match]] = {}
        for face in self.held.values():
            if face.image_key in wanted:
                out.setdefault(face.image_key, []).append(self._match(face))
        return out

    def images_of_person(self, person_id: str) -> list[str]:
        return sorted({f.image_key for f in self.held.values() if f.person_id == person_id})

    def count(self) -> int:
        return len(self.held)

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None:
        for fid, pid in mapping.items():
            if fid in self.held:
                self.held[fid] = replace(self.held[fid], person_id=pid)

    def close(self) -> None:
        pass


@pytest.fixture
def memory_store():
    MemoryStore.held = {}
    registry.register(
        registry.StoreSpec(
            name="memory", build=lambda settings: MemoryStore(), describe=lambda settings: "this process's memory"
        )
    )
    yield MemoryStore
    registry.unregister("memory")


def cli(capsys, *args: str):
    code = main(list(args))
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


def test_a_registered_store_is_exported_checked_erased_and_searched(env, capsys, memory_store):
    env.add(KNN / "train/obama/obama.jpg", "obama.jpg")
    env.add(KNN / "train/biden/biden.jpg", "biden.jpg")
    env.add(FR / "examples/two_people.jpg", "two.jpg")
    cli(capsys, "index", "--json", "--quiet")

    # Exported: its own asset, materialized per partition, holding the Parquet's faces.
    parquet_ids = env.parquet.face_ids_by_image()
    assert MemoryStore().face_ids_by_image() == parquet_ids and len(memory_store.held) == 4
    with dg.DagsterInstance.get() as instance:
        assert set(instance.get_materialized_partitions(dg.AssetKey("memory_faces"))) == set(parquet_ids)
    assert cli(capsys, "status", "--json")["memory"] == {"faces": 4}

    # Searched: `--store memory` is a choice, and its answer matches pgvector's.
    ours = cli(capsys, "search", str(KNN / "test/obama1.jpg"), "--store", "memory", "--json")
    theirs = cli(capsys, "search", str(KNN / "test/obama1.jpg"), "--store", "pgvector", "--json")
    assert [m["face_id"] for m in ours[0]] == [m["face_id"] for m in theirs[0]]
    assert ours[0][0]["image_key"] in {"obama.jpg", "two.jpg"} and ours[0][0]["distance"] < 0.6  # both show Obama

    # Checked: the consistency check covers it and names the image it lost behind facepipe's back.
    defs = env.defs()
    check = defs.resolve_job_def("check_stores")
    with dg.DagsterInstance.get() as instance:
        assert all(e.passed for e in check.execute_in_process(instance=instance).get_asset_check_evaluations())
        MemoryStore().delete_images(["biden.jpg"])
        result = check.execute_in_process(instance=instance, raise_on_error=False)
    by_asset = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert not by_asset["memory_faces"].passed and by_asset["memory_faces"].metadata["images"].value == "biden.jpg"
    assert by_asset["qdrant_faces"].passed and by_asset["pgvector_faces"].passed
    assert cli(capsys, "index", "--json", "--quiet", "--repair")["repaired"] == ["biden.jpg"]
    assert MemoryStore().face_ids_by_image() == parquet_ids

    # Erased: a deleted photo leaves it with the others; `forget` too.
    (env.images / "two.jpg").unlink()
    cli(capsys, "index", "--json", "--quiet")
    assert set(MemoryStore().face_ids_by_image()) == {"obama.jpg", "biden.jpg"}
    assert main(["forget", "biden.jpg"]) == 0
    assert set(MemoryStore().face_ids_by_image()) == {"obama.jpg"}
