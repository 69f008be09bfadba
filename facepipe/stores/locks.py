"""One process at a time on an embedded store's folder, shared by every thread and store object inside it.

An embedded engine that keeps its files open (the in-process Qdrant engine locks its write-ahead log, and
a second open fails even in the same process) can have one owner per folder. So:

* Between processes: an exclusive `flock` on a lock file in the folder, taken before the engine is
  opened and dropped after it is closed. A process that finds it taken waits with backoff up to its
  timeout, then fails with a message naming the holder (from /proc/locks).
* Inside a process: one `SharedSlot` per folder holds the open engine. Every store object on that folder
  uses it (no second open), one thread at a time (an RLock), and it is opened for the outermost `use()`
  block and closed when that block ends, so other processes get their turn. `pin()` keeps it open
  between blocks (a server answering many searches) until `unpin()`.
* Fairness: a process that finds the folder taken says so while it waits (a shared `flock` on the
  `.waiting` file beside the lock file). Newcomers defer to it, and a holder that keeps the engine
  pinned between blocks (the HTTP server) lets go at the end of its current block when someone waits.
  So a loop of searches cannot starve an `index` run of the folder: it gets its turn after one search.
  Both locks die with their process, so a killed waiter leaves nothing stale behind.
* Fork: a child inherits the parent's open engine and lock (the same open file description). Using or
  closing them would unlock the parent's folder, so the child drops its slots, keeps the inherited ones
  referenced and never touches them, and waits for the lock like any other process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from facepipe.stores.base import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


def lock_holders(lock_file: Path) -> list[int]:
    """Pids holding a flock on `lock_file`, from /proc/locks (Linux; best effort, for the error message)."""
    try:
        inode = lock_file.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(parts[4]))
    return pids


def lock_is_free(lock_file: Path) -> bool:
    """Whether another open file description holds `lock_file` (probe only: takes and drops the lock)."""
    try:
        with open(lock_file, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True
    except FileNotFoundError:
        return True


def waiting_file(lock_file: Path) -> Path:
    """Where waiting processes announce themselves (see the module)."""
    return lock_file.with_name(lock_file.name + ".waiting")


def someone_waits(lock_file: Path) -> bool:
    """Whether another process is waiting for `lock_file` (probe: takes and drops the waiting file's lock)."""
    return not lock_is_free(waiting_file(lock_file))


def acquire(lock_file: Path, timeout: float, what: str, hint: str) -> IO[bytes]:
    """Take the exclusive lock, waiting up to `timeout` seconds; the open file holds it until closed.

    First come, first served between processes: while another process waits, a newcomer does not even
    try; once it has to wait itself it announces it (so holders and newcomers let it in next).
    `what` names the store in messages ("the embedded Qdrant at ..."), `hint` says what else to do.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_file, "a+b")  # noqa: SIM115 - returned to the caller, who closes it to unlock
    announced: IO[bytes] | None = None
    deadline = time.monotonic() + max(0.0, timeout)
    delay, told = 0.05, False
    try:
        while True:
            if announced is not None or not someone_waits(lock_file):
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fh
                except BlockingIOError:
                    pass
                if announced is None:
                    announced = open(waiting_file(lock_file), "a+b")  # noqa: SIM115 - closed below
                    fcntl.flock(announced, fcntl.LOCK_SH)  # blocks only for another's momentary probe
            remaining = deadline - time.monotonic()
            holders = lock_holders(lock_file)
            who = f"pid {', '.join(map(str, holders))}" if holders else "pid unknown"
            if remaining <= 0:
                fh.close()
                raise StoreError(
                    f"{what} is in use by another process ({who}); waited {timeout:g} s for it to finish. "
                    f"Stop that process or wait for it{hint}."
                )
            if not told:
                log.info("%s is locked by %s; waiting up to %g s", what, who, timeout)
                told = True
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
    finally:
        if announced is not None:
            announced.close()  # got in or gave up: no longer waiting


class SharedSlot(Generic[T]):
    """The one open engine for one folder in this process (get it from `slot()`)."""

    def __init__(self, lock_file: Path, what: str, hint: str) -> None:
        self.lock_file = lock_file
        self.what = what
        self.hint = hint
        self.lock = threading.RLock()
        self.handle: T | None = None
        self._closer: Callable[[T], None] | None = None
        self._file: IO[bytes] | None = None
        self.depth = 0
        self.pins = 0

    @contextlib.contextmanager
    def use(self, timeout: float, opener: Callable[[], T], closer: Callable[[T], None]) -> Iterator[T]:
        """The open engine for the block, opening it (lock first) if nobody in this process has it open."""
        if not self.lock.acquire(timeout=max(0.0, timeout)):
            raise StoreError(
                f"{self.what} stayed busy in this process (pid {os.getpid()}) for {timeout:g} s{self.hint}"
            )
        try:
            if self.handle is None:
                self._file = acquire(self.lock_file, timeout, self.what, self.hint)
                try:
                    self.handle = opener()
                except BaseException:
                    self._file.close()
                    self._file = None
                    raise
                self._closer = closer
            self.depth += 1
            try:
                yield self.handle
            finally:
                self.depth -= 1
                if self.depth == 0 and (self.pins == 0 or someone_waits(self.lock_file)):
                    self.shut()  # pinned or not: another process waiting gets its turn now
        finally:
            self.lock.release()

    def pin(self) -> None:
        with self.lock:
            self.pins += 1

    def unpin(self) -> None:
        with self.lock:
            self.pins = max(0, self.pins - 1)
            if self.pins == 0 and self.depth == 0:
                self.shut()

    def shut(self) -> None:
        """Close the engine, then let other processes in."""
        with self.lock:
            handle, closer, fh = self.handle, self._closer, self._file
            self.handle, self._closer, self._file = None, None, None
            try:
                if handle is not None and closer is not None:
                    closer(handle)
            finally:
                if fh is not None:
                    fh.close()  # closing the only descriptor drops the flock

    @property
    def is_open(self) -> bool:
        return self.handle is not None


_slots: dict[Path, SharedSlot[Any]] = {}
_slots_lock = threading.Lock()
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    # The parent's engines and lock files share its open file descriptions: closing them here would unlock
    # the parent's folder. Keep them referenced, never use or close them.
    global _slots_lock
    _inherited.extend(_slots.values())
    _slots.clear()
    _slots_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def slot(lock_file: Path, what: str, hint: str = "") -> SharedSlot[Any]:
    """The slot for the folder of `lock_file` in this process (created on first use)."""
    key = lock_file.resolve()
    with _slots_lock:
        found = _slots.get(key)
        if found is None:
            found = _slots[key] = SharedSlot(key, what, hint)
        return found
