"""Configuration from the environment (names are part of the contract, see README)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default).expanduser().resolve()


@dataclass(frozen=True)
class Paths:
    images: Path
    data: Path

    @property
    def parquet(self) -> Path:
        return self.data / "parquet"

    @property
    def faces_parquet(self) -> Path:
        return self.parquet / "faces"

    @property
    def images_parquet(self) -> Path:
        return self.parquet / "images"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.sqlite"

    @property
    def qdrant(self) -> Path:
        return self.data / "qdrant"

    @property
    def postgres(self) -> Path:
        return self.data / "postgres"

    @property
    def dagster_home(self) -> Path:
        return self.data / "dagster"


def paths() -> Paths:
    """Paths as the environment says now (read on each call so tests and the CLI can re-point them)."""
    return Paths(
        images=_env_path("FACEPIPE_IMAGES", "data/images"),
        data=_env_path("FACEPIPE_DATA", "data"),
    )
