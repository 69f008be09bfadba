"""Settings: the one place that reads the environment (variable names are a contract, see README).

Read once per process (`current()`), or again on an explicit `reload()`: the CLI reloads at the start
of every command, so a test or a shell that changed a variable is seen; everything below receives a
`Settings` (or what it needs of it) as an argument and never looks at `os.environ` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from facepipe.faces.extract import ExtractSettings

DEFAULT_IMAGES = "data/images"
DEFAULT_DATA = "data"
DEFAULT_BATCH = 256
DEFAULT_MAX_DELETE_SHARE = 0.5
DEFAULT_RENDERS = 2


class SettingsError(ValueError):
    """A variable holds a value facepipe cannot use (the message names it)."""


def _path(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _number(env: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number") from None


@dataclass(frozen=True)
class Settings:
    """Everything facepipe is configured with. Secrets are kept out of `repr` (they never reach a log)."""

    data: Path
    images: Path | None = None
    """FACEPIPE_IMAGES when set; None: the folder the library recorded, else `data/images`."""
    dagster_home: Path | None = None
    """DAGSTER_HOME when set; None: `<data>/dagster`."""
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    pg_dsn: str | None = field(default=None, repr=False)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    workers: int = 0
    """Extraction processes; 0: one per core."""
    batch: int = DEFAULT_BATCH
    """Photos per Dagster run."""
    retry_delay: float = 2.0
    """Seconds before the first retry of a store that is unreachable (then doubling, 3 retries)."""
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE
    """A sync that would erase more than this share of the library (or all of it) stops and asks."""
    renders: int = DEFAULT_RENDERS
    """Photos the HTTP API decodes and draws at once (FACEPIPE_RENDERS): a 100 MP photo takes ~1 GB while drawn."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        share = _number(env, "FACEPIPE_MAX_DELETE_SHARE", DEFAULT_MAX_DELETE_SHARE, float)
        if not 0 <= share <= 1:
            raise SettingsError(f"FACEPIPE_MAX_DELETE_SHARE={share} must be between 0 and 1")
        try:
            extract = ExtractSettings.from_env(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(
            data=_path(env.get("FACEPIPE_DATA") or DEFAULT_DATA),
            images=_path(env["FACEPIPE_IMAGES"]) if env.get("FACEPIPE_IMAGES") else None,
            dagster_home=_path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else None,
            qdrant_url=env.get("QDRANT_URL") or None,
            qdrant_api_key=env.get("QDRANT_API_KEY") or None,
            pg_dsn=env.get("FACEPIPE_PG_DSN") or None,
            extract=extract,
            workers=max(0, int(_number(env, "FACEPIPE_WORKERS", 0))),
            batch=max(1, int(_number(env, "FACEPIPE_BATCH", DEFAULT_BATCH))),
            retry_delay=max(0.0, float(_number(env, "FACEPIPE_RETRY_DELAY", 2.0, float))),
            max_delete_share=share,
            renders=max(1, int(_number(env, "FACEPIPE_RENDERS", DEFAULT_RENDERS))),
        )

    def with_images(self, images: Path | str | None) -> Settings:
        return self if images is None else replace(self, images=_path(str(images)))

    @property
    def default_images(self) -> Path:
        return _path(DEFAULT_IMAGES)

    @property
    def dagster_home_path(self) -> Path:
        return self.dagster_home or self.data / "dagster"

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


_current: Settings | None = None


def current() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def reload() -> Settings:
    """Read the environment again (the CLI does at the start of each command)."""
    global _current
    _current = Settings.from_env()
    return _current


def export_dagster_home(settings: Settings) -> Path:
    """Dagster finds its instance through DAGSTER_HOME only: point it where the settings say."""
    home = settings.dagster_home_path
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def export_default(name: str, value: str) -> None:
    """Set a variable a library reads from the environment (Dagster's event batching), unless the user did."""
    os.environ.setdefault(name, value)
