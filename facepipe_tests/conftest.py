"""Shared fixtures: the real sample photos beside the checkout, and an isolated facepipe environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facepipe import settings
from facepipe.defs.instance import ensure_dagster_home
from facepipe.library import Library
from facepipe.stores.parquet import ParquetStore

# Tests default to the fast HOG detector; CNN tests pass their settings explicitly.
os.environ.setdefault("FACEPIPE_DETECTOR", "hog")
# Store retries after 0.2, 0.4, 0.8 s instead of 2, 4, 8 s: the faults below are real, the wait is not needed.
os.environ.setdefault("FACEPIPE_RETRY_DELAY", "0.2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FR = SHARED_DATA / "face_recognition"
KNN = FR / "examples" / "knn_examples"
KNN_PEOPLE = {
    "obama/a.jpg": KNN / "train/obama/obama.jpg",
    "obama/b.jpg": KNN / "train/obama/obama2.jpg",
    "obama/c.jpg": KNN / "test/obama1.jpg",
    "biden/a.jpg": KNN / "train/biden/biden.jpg",
    "biden/b.jpg": KNN / "train/biden/biden2.jpg",
    "kit/a.jpg": KNN / "train/kit_harington/john1.jpeg",
    "kit/b.jpg": KNN / "train/kit_harington/john2.jpeg",
    "alex/a.jpg": KNN / "train/alex_lacamoire/img1.jpg",
}
"""knn photos of four people (Obama 3, Biden 2, Kit Harington 2, Alex Lacamoire 1) under short image keys,
for the people-edit tests over HTTP and in the browser."""


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Each test starts from the environment as it is: settings a test read (through the CLI, say) with
    variables it set do not outlive it."""
    settings.clear()
    yield
    settings.clear()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"sample photos not found at {SHARED_DATA}: the shared/ folder must sit beside the checkout")
    return SHARED_DATA


@dataclass
class Env:
    root: Path
    images: Path
    data: Path
    dagster_home: Path

    def add(self, source: Path, name: str | None = None) -> Path:
        """Copy a sample photo into the images folder (under `name`, which may contain folders)."""
        target = self.images / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def library(self) -> Library:
        """The library as a command started now would build it (settings read from the environment again)."""
        return Library.open(settings.reload())

    def defs(self):
        """The Definitions `facepipe index` and the UI would load for this library."""
        from facepipe.defs.build import build_definitions

        return build_definitions(self.library())

    @property
    def parquet(self) -> ParquetStore:
        return ParquetStore(self.data / "parquet")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> Env:
    """A fresh images folder, data folder and Dagster home, wired through the real variables."""
    e = Env(tmp_path, tmp_path / "images", tmp_path / "data", tmp_path / "dagster")
    for folder in (e.images, e.data, e.dagster_home):
        folder.mkdir()
    monkeypatch.setenv("FACEPIPE_IMAGES", str(e.images))
    monkeypatch.setenv("FACEPIPE_DATA", str(e.data))
    monkeypatch.setenv("DAGSTER_HOME", str(e.dagster_home))
    monkeypatch.setenv("FACEPIPE_WORKERS", "1")
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN", "FACEPIPE_STORES"):
        monkeypatch.delenv(name, raising=False)
    ensure_dagster_home(settings.reload())
    return e


_KNN: dict[str, Path] = {}


def knn_train(tmp_path_factory: pytest.TempPathFactory, mp: pytest.MonkeyPatch) -> Path:
    """knn `train/` indexed (HOG) once per test session in its own images, data and Dagster folders;
    points the environment at it. Shared read-only by test_people, test_api and the other API tests."""
    from facepipe.cli import main

    root = _KNN.get("root") or tmp_path_factory.mktemp("knn")
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN"):
        mp.delenv(name, raising=False)
    for name, value in {
        "FACEPIPE_IMAGES": root / "images",
        "FACEPIPE_DATA": root / "data",
        "DAGSTER_HOME": root / "dagster",
        "FACEPIPE_WORKERS": "1",
        "FACEPIPE_DETECTOR": "hog",
    }.items():
        mp.setenv(name, str(value))
    if "root" not in _KNN:
        shutil.copytree(KNN / "train", root / "images")
        ensure_dagster_home(settings.reload())
        assert main(["index", "--quiet"]) == 0
        _KNN["root"] = root
    return root


@pytest.fixture(scope="module")
def knn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """knn_train for a test module: the environment points at it until the module's tests are done."""
    with pytest.MonkeyPatch.context() as mp:
        yield knn_train(tmp_path_factory, mp)
