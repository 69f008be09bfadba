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
from facepipe.objects import S3Config, bucket_path, is_url

DEFAULT_IMAGES = "data/images"
DEFAULT_DATA = "data"
DEFAULT_BATCH = 256
DEFAULT_MAX_DELETE_SHARE = 0.5
DEFAULT_RENDERS = 2


class SettingsError(ValueError):
    """A variable holds a value facepipe cannot use (the message names it)."""


def _path(value: str) -> Path:
    return Path(value).expanduser().resolve()


def location(value: str) -> Path | str:
    """A local folder (resolved), or an `s3://bucket/prefix` URL kept as text (checked here, once)."""
    if is_url(value):
        try:
            return "s3://" + bucket_path(value)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return _path(value)


def _work_folder(env: Mapping[str, str], data_url: str | None) -> Path:
    """Where a library whose Parquet is in a bucket keeps what must stay local (FACEPIPE_WORK)."""
    if env.get("FACEPIPE_WORK"):
        return _path(env["FACEPIPE_WORK"])
    assert data_url is not None
    return _path("~/.cache/facepipe") / bucket_path(data_url)


def _number(env: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number") from None


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    raw = env.get(name) or ""
    if not raw.strip():
        return None
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not names:
        raise SettingsError(f"{name}={raw!r} names no store")
    return names


@dataclass(frozen=True)
class Settings:
    """Everything facepipe is configured with. Secrets are kept out of `repr` (they never reach a log)."""

    data: Path
    """The local data folder; with FACEPIPE_DATA in a bucket, the local work folder (FACEPIPE_WORK) that
    holds what cannot live in object storage (embedded stores, the Dagster home, the library record)."""
    images: Path | str | None = None
    """FACEPIPE_IMAGES when set (a folder, or an s3:// URL); None: what the library recorded, else `data/images`."""
    data_url: str | None = None
    """FACEPIPE_DATA when it is an s3://bucket/prefix: the Parquet lives there."""
    s3: S3Config = field(default_factory=S3Config)
    dagster_home: Path | None = None
    """DAGSTER_HOME when set; None: `<data>/dagster`."""
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    pg_dsn: str | None = field(default=None, repr=False)
    pg_shared_buffers: str | None = None
    """FACEPIPE_PG_SHARED_BUFFERS: the embedded Postgres's shared buffers (e.g. 2GB); None: an eighth of
    the machine's memory, 128 MB to 4 GB (facepipe.stores.embedded_pg)."""
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
    """Photos the HTTP API decodes and draws at once (FACEPIPE_RENDERS): a 100 MP PNG takes ~1 GB while drawn."""
    stores: tuple[str, ...] | None = None
    """FACEPIPE_STORES: the vector stores to export to, by registered name (None: all of them)."""
    api_token: str | None = field(default=None, repr=False)
    """FACEPIPE_API_TOKEN: when set, every edit through the HTTP API (and every read when the server
    listens beyond loopback) must carry it (`Authorization: Bearer ...`)."""

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
        data = location(env.get("FACEPIPE_DATA") or DEFAULT_DATA)
        data_url = data if isinstance(data, str) else None
        return cls(
            data=_work_folder(env, data_url) if data_url else data,
            data_url=data_url,
            images=location(env["FACEPIPE_IMAGES"]) if env.get("FACEPIPE_IMAGES") else None,
            s3=S3Config(
                endpoint=env.get("FACEPIPE_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or None,
                region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
                access_key=env.get("AWS_ACCESS_KEY_ID") or None,
                secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                session_token=env.get("AWS_SESSION_TOKEN") or None,
            ),
            dagster_home=_path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else None,
            qdrant_url=env.get("QDRANT_URL") or None,
            qdrant_api_key=env.get("QDRANT_API_KEY") or None,
            pg_dsn=env.get("FACEPIPE_PG_DSN") or None,
            pg_shared_buffers=(env.get("FACEPIPE_PG_SHARED_BUFFERS") or "").strip() or None,
            extract=extract,
            workers=max(0, int(_number(env, "FACEPIPE_WORKERS", 0))),
            batch=max(1, int(_number(env, "FACEPIPE_BATCH", DEFAULT_BATCH))),
            retry_delay=max(0.0, float(_number(env, "FACEPIPE_RETRY_DELAY", 2.0, float))),
            max_delete_share=share,
            renders=max(1, int(_number(env, "FACEPIPE_RENDERS", DEFAULT_RENDERS))),
            stores=_names(env, "FACEPIPE_STORES"),
            api_token=env.get("FACEPIPE_API_TOKEN") or None,
        )

    def with_images(self, images: Path | str | None) -> Settings:
        return self if images is None else replace(self, images=location(str(images)))

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


def clear() -> None:
    """Forget the settings read: the next `current()` reads the environment again (tests that change it)."""
    global _current
    _current = None


def reload() -> Settings:
    """Read the environment again (the CLI does at the start of each command)."""
    global _current
    _current = Settings.from_env()
    return _current


DAGSTER_EVENT_BATCH_SIZE = 1000
"""Events Dagster may buffer before writing a batch (a run's planned events, a step's materializations);
facepipe's event log storage writes a batch in one transaction (facepipe/defs/storage.py)."""


def export_dagster_home(settings: Settings) -> Path:
    """Dagster finds its instance through DAGSTER_HOME only: point it where the settings say.

    Also sets Dagster's event batching unless the user did. Called on the main thread before Dagster
    loads on another (`facepipe index`): the environment is then only read while processes start."""
    home = settings.dagster_home_path
    if os.environ.get("DAGSTER_HOME") != str(home):
        os.environ["DAGSTER_HOME"] = str(home)
    export_default("DAGSTER_EVENT_BATCH_SIZE", str(DAGSTER_EVENT_BATCH_SIZE))
    return home


def export_default(name: str, value: str) -> None:
    """Set a variable a library reads from the environment (Dagster's event batching), unless the user did."""
    os.environ.setdefault(name, value)
