"""FACEPIPE_STORES: export to the named vector stores only (a user with only Postgres leaves Qdrant out)."""

from __future__ import annotations

import json

import pytest

from facepipe.cli import main
from facepipe.settings import Settings, SettingsError
from facepipe.stores import registry
from facepipe_tests.conftest import KNN


def test_the_setting_selects_registered_stores_in_registry_order() -> None:
    assert Settings.from_env({}).stores is None
    assert registry.names(Settings.from_env({})) == registry.names(Settings.from_env({"FACEPIPE_STORES": " "}))
    chosen = Settings.from_env({"FACEPIPE_STORES": "pgvector, qdrant,pgvector"})
    assert chosen.stores == ("pgvector", "qdrant")
    assert registry.names(chosen) == [n for n in registry.names(Settings.from_env({})) if n in chosen.stores]
    with pytest.raises(SettingsError, match=r"FACEPIPE_STORES names unknown store.*nosuch"):
        registry.names(Settings.from_env({"FACEPIPE_STORES": "pgvector,nosuch"}))
    with pytest.raises(SettingsError, match="names no store"):
        Settings.from_env({"FACEPIPE_STORES": ",,"})


def test_index_with_pgvector_only_never_touches_qdrant(env, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("FACEPIPE_STORES", "pgvector")
    monkeypatch.setenv("FACEPIPE_DETECTOR", "hog")
    for photo in sorted((KNN / "train" / "obama").iterdir())[:2]:
        env.add(photo)
    defs = env.defs()
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "pgvector_faces" in keys and "qdrant_faces" not in keys
    assert main(["index", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "qdrant" not in doc and doc["pgvector"]["faces"] == doc["parquet"]["faces"] > 0
    assert not (env.data / "qdrant").exists()  # the embedded Qdrant was never opened
    assert main(["search", str(sorted((KNN / "train" / "obama").iterdir())[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)  # searches go to the first store in use: pgvector
    monkeypatch.setenv("FACEPIPE_STORES", "qdrant-typo")
    assert main(["status"]) == 2
    assert "FACEPIPE_STORES names unknown store" in capsys.readouterr().err


def test_index_with_qdrant_only_never_starts_the_embedded_postgres(
    env, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`facepipe index` starts the embedded Postgres early (beside Dagster's loading) only when pgvector
    is a store: with Qdrant alone no server is started and no Postgres folder made."""
    monkeypatch.setenv("FACEPIPE_STORES", "qdrant")
    monkeypatch.setenv("FACEPIPE_DETECTOR", "hog")
    monkeypatch.setenv("FACEPIPE_WORKERS", "2")  # the worker pool is warmed too
    for photo in sorted((KNN / "train" / "obama").iterdir())[:2]:
        env.add(photo)
    assert main(["index", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["processed"] == 2 and report["faces"] >= 2 and not report["failed_runs"]
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "pgvector" not in doc and doc["qdrant"]["faces"] == doc["parquet"]["faces"] == report["faces"]
    assert not (env.data / "postgres").exists()
