"""`facepipe ...` with timing spans around facepipe's own work and Dagster's, for extract_bench's breakdown.

    python benchmarks/index_spans.py OUT.json index --json

Runs `facepipe.cli.main(argv)` in this process after wrapping, by attribute, the functions that do
facepipe's work (extraction and Parquet, exports, people, compaction, folder sync, healing,
store clients, the embedded Postgres) and the Dagster entry points (the first import of `facepipe.defs.indexer`,
which pulls in Dagster, and `JobDefinition.execute_in_process`). Each span's time counts once: a
facepipe span inside another facepipe span is recorded under `nested` only, and facepipe work inside
a Dagster run is taken off the run. What is left of a run is Dagster's (run record, planned events,
step launch, materialization events and metadata, the run's end). Writes the spans as JSON at exit.

`facepipe index` imports Dagster and opens its instance on a thread of its own while the main thread
starts the workers and the embedded Postgres (facepipe.warmup): spans on that thread are recorded
under `background` (Dagster's time that overlapped facepipe's, shown but not counted), and the main
thread's wait for it (`warmup.wait`) is Dagster's, even while the workers extract the first photos
meanwhile (recorded under `overlap`). Other threads' spans are not counted either.

Nothing here changes what the command does: the wrappers call the originals and only read a clock.
"""

from __future__ import annotations

import atexit
import builtins
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

ORIGIN = time.time()  # as close to the interpreter's start as this module gets; the process start is below

outer: dict[str, float] = {}  # facepipe work not inside other facepipe work, by span
nested: dict[str, float] = {}  # facepipe work inside other facepipe work (already counted in `outer`)
calls: dict[str, int] = {}
dagster: dict[str, float] = {}  # Dagster spans minus the facepipe work inside them
background: dict[str, float] = {}  # spans on other threads (Dagster loading beside facepipe's warm-up)
background_cpu: dict[str, float] = {}  # the CPU time of those spans (their thread's)
overlap: dict[str, float] = {}  # parts of Dagster spans during which facepipe's workers were busy (shown only)
_frames = threading.local()  # per thread: [kind, name, started, facepipe seconds inside]
marks: dict[str, float] = {}
IMPORT = "import dagster + facepipe.defs"


def _thread_stack() -> list[list]:
    if not hasattr(_frames, "stack"):
        _frames.stack = []
    return _frames.stack


def _span(kind: str, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                background[name] = background.get(name, 0.0) + time.perf_counter() - started
                background_cpu[name] = background_cpu.get(name, 0.0) + time.thread_time() - cpu
        _stack = _thread_stack()
        in_facepipe = any(frame[0] == "facepipe" for frame in _stack)
        frame = [kind, name, time.perf_counter(), 0.0]
        _stack.append(frame)
        try:
            return fn(*args, **kwargs)
        finally:
            _stack.pop()
            seconds = time.perf_counter() - frame[2]
            calls[name] = calls.get(name, 0) + 1
            if kind == "facepipe":
                if in_facepipe:
                    nested[name] = nested.get(name, 0.0) + seconds
                else:
                    outer[name] = outer.get(name, 0.0) + seconds
                    if _stack:  # inside a Dagster span: not Dagster's time
                        _stack[-1][3] += seconds
            else:
                dagster[name] = dagster.get(name, 0.0) + seconds - frame[3]
                if _stack:
                    _stack[-1][3] += seconds  # counted here already: not the enclosing span's own time

    return wrapper


def _patch(owner, attribute: str, kind: str, name: str) -> None:
    setattr(owner, attribute, _span(kind, name, getattr(owner, attribute)))


def install() -> None:
    """Wrap the work functions before anything binds them by name (facepipe.defs imports them later)."""
    from facepipe import cli, exports, heal, indexing, library, manifest, sync
    from facepipe.compaction import Compactor
    from facepipe.people.library import People
    from facepipe.stores import embedded_pg
    from facepipe.stores.parquet import ParquetStore

    _patch(indexing, "index_batch", "facepipe", "extraction + Parquet + manifest (index_batch)")
    _patch(exports, "export_images", "facepipe", "exports to the stores (export_images)")
    _patch(People, "update", "facepipe", "people clustering (People.update)")
    _patch(People, "is_stale", "facepipe", "people staleness check")
    _patch(Compactor, "run", "facepipe", "compaction (Compactor.run)")
    _patch(Compactor, "is_stale", "facepipe", "compaction staleness check")
    _patch(sync, "plan", "facepipe", "folder sync (plan, commit, up-to-date check)")
    _patch(sync, "commit", "facepipe", "folder sync (plan, commit, up-to-date check)")
    _patch(cli, "_up_to_date", "facepipe", "folder sync (plan, commit, up-to-date check)")
    _patch(library.Library, "stores", "facepipe", "store clients open/close")
    _patch(library.Library, "close", "facepipe", "store clients open/close")
    _patch(embedded_pg, "embedded_postgres", "facepipe", "embedded Postgres start")
    _patch(embedded_pg.EmbeddedPostgres, "attach", "facepipe", "embedded Postgres start")
    _patch(embedded_pg.EmbeddedPostgres, "detach", "facepipe", "embedded Postgres stop")
    _patch(People, "list", "facepipe", "people count")
    _patch(ParquetStore, "sweep_temp_files", "facepipe", "folder sync (plan, commit, up-to-date check)")
    _patch(manifest.Manifest, "keys", "facepipe", "folder sync (plan, commit, up-to-date check)")
    _patch(heal, "heal", "facepipe", "healing check (Parquet footers, store counts)")
    _patch(heal, "check_parquet", "facepipe", "healing check (Parquet footers, store counts)")

    try:  # index_ab.py runs this file against older revisions too, which load Dagster on the main thread
        from facepipe import warmup
    except ImportError:
        pass
    else:
        warmup.wait = _wait_for_dagster(warmup.wait)
        from facepipe.faces import batch

        if hasattr(batch, "extract_early"):  # older revisions start no photos early
            batch.extract_early = _track_early(batch.extract_early)
    original_import = builtins.__import__

    def timed_import(name, *args, **kwargs):
        if name == "facepipe.defs.indexer" and name not in sys.modules:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return original_import(name, *args, **kwargs)
            finally:
                on_main = threading.current_thread() is threading.main_thread()
                (dagster if on_main else background)[IMPORT] = time.perf_counter() - started
                if not on_main:
                    background_cpu[IMPORT] = time.thread_time() - cpu
                _wrap_dagster()
        return original_import(name, *args, **kwargs)

    builtins.__import__ = timed_import


WAIT = "waiting for Dagster to load (import, home, instance) beside the warm-up"
EARLY = "of which the workers were extracting the first photos (extract_early)"


_early_busy_until: list[float | None] = [0.0]
"""perf_counter() when fewer photos started early were left than workers; None while not; 0.0: none began."""


def _track_early(fn):
    """`faces.batch.extract_early`, noting when its photos stopped keeping every worker busy."""

    @functools.wraps(fn)
    def wrapper(jobs, settings, workers=None):
        count = fn(jobs, settings, workers)
        from facepipe.faces import batch

        futures = [future for future, _, _ in batch._early._futures.values()]
        _early_busy_until[0] = None if futures else 0.0
        left, lock, busy = [len(futures)], threading.Lock(), workers or os.cpu_count() or 1

        def one_done(_future) -> None:
            with lock:
                left[0] -= 1
                if left[0] < busy and _early_busy_until[0] is None:
                    _early_busy_until[0] = time.perf_counter()

        for future in futures:
            future.add_done_callback(one_done)
        return count

    return wrapper


def _wait_for_dagster(fn):
    """The main thread's wait for the Dagster thread, all of it Dagster's. How much of it every worker
    was still extracting photos the run takes next (facepipe.faces.batch.extract_early) is recorded
    under `overlap`, not taken off: on 2 cores the Dagster thread takes its CPU from those workers, so
    the wait is what Dagster costs there (index_ab.py's no-Dagster runs measure that by difference)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            ended = time.perf_counter()
            busy = _early_busy_until[0]
            dagster[WAIT] = dagster.get(WAIT, 0.0) + ended - started
            overlap[EARLY] = (ended if busy is None else min(max(busy, started), ended)) - started

    return wrapper


def _wrap_dagster() -> None:
    import dagster as dg

    from facepipe.defs import indexer

    if getattr(dg.JobDefinition.execute_in_process, "__wrapped__", None) is None:
        _patch(dg.JobDefinition, "execute_in_process", "dagster", "runs (execute_in_process)")
    _patch(indexer, "run_index", "dagster", "run_index, the rest (instance, dynamic partitions, progress)")
    _patch(indexer, "ensure_dagster_home", "dagster", "Dagster home: dagster.yaml, storage created or migrated")
    _patch(indexer, "build_definitions", "dagster", "Definitions built (assets, checks, jobs, sensors)")


def process_start() -> float:
    """The process's start (from /proc), so interpreter start-up before this module is counted too."""
    import os

    ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    started = process_start()
    marks["before_main"] = time.time() - started

    def write() -> None:
        marks["until_exit"] = time.time() - started
        doc = {"outer": outer, "nested": nested, "dagster": dagster, "background": background, "calls": calls}
        doc["background_cpu"], doc["overlap"] = background_cpu, overlap
        doc["marks"] = marks
        out.write_text(json.dumps(doc))

    atexit.register(write)  # registered first, so it runs after the others (pool and server shutdown)
    install()
    from facepipe import cli

    t0 = time.time()
    code = cli.main(argv)
    marks["main"] = time.time() - t0
    marks["after_main_start"] = time.time() - started
    return code


if __name__ == "__main__":
    sys.exit(main())
