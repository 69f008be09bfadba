"""The Dagster instance facepipe runs against: `DAGSTER_HOME`, by default under the data folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from facepipe.settings import Settings, export_dagster_home

_TELEMETRY_AND_POOLS = """\
telemetry:
  enabled: false
concurrency:
  pools:
"""
_OLD_POOLS_COMMENT = (
    "    # Embedded Qdrant allows one writer: the export pools (facepipe_qdrant, facepipe_pgvector) "
    "run one step at a time.\n"
)
_EVENT_LOG = """\
# Dagster's SQLite event log, same files, without an fsync and a checkpoint per event and with a run's
# asset events written in one transaction: 130 ms less per photo (facepipe/defs/storage.py).
event_log_storage:
  module: facepipe.defs.storage
  class: FastSqliteEventLogStorage
"""

_RUNS_AND_SCHEDULES = """\
# Dagster's SQLite run and schedule storage, same files, a new database made in one pass (a fresh
# Dagster home 0.85 -> 0.62 s, facepipe/defs/storage.py).
run_storage:
  module: facepipe.defs.storage
  class: FastSqliteRunStorage
schedule_storage:
  module: facepipe.defs.storage
  class: FastSqliteScheduleStorage
"""

DAGSTER_YAML = _TELEMETRY_AND_POOLS + "    default_limit: 1\n" + _EVENT_LOG + _RUNS_AND_SCHEDULES

OLD_DAGSTER_YAMLS = (
    _TELEMETRY_AND_POOLS + _OLD_POOLS_COMMENT + "    default_limit: 1\n",
    _TELEMETRY_AND_POOLS + _OLD_POOLS_COMMENT + "    default_limit: 1\n" + _EVENT_LOG,
    _TELEMETRY_AND_POOLS + "    default_limit: 1\n" + _EVENT_LOG,
)
"""dagster.yaml files written by earlier versions: replaced by DAGSTER_YAML (same storage folders)."""

QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The progress bar and summary speak for in-process runs; Dagster's own events stay in the instance."""


def ensure_dagster_home(settings: Settings) -> Path:
    """Create (or bring up to date) the Dagster home the settings name, and point DAGSTER_HOME at it."""
    home = export_dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    fresh = not config.exists()
    if fresh or config.read_text() in OLD_DAGSTER_YAMLS:  # ours, unedited: bring it up to date
        config.write_text(DAGSTER_YAML)
    if fresh:  # create the storage now, so a webserver started next to us never races to migrate it
        with dg.DagsterInstance.get():
            pass
    return home
