"""Shared fixtures: the real sample photos beside the checkout, and an isolated facepipe environment."""

from __future__ import annotations

import os
import shutil
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
