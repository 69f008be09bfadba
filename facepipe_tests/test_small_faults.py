"""The smaller findings of a hostile pass, each for real: damaged state files, stores that are down,
`facepipe ui` outside an activated venv, worker processes that outlive a killed `index`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from facepipe.cli import main
from facepipe_tests.conftest import FR, KNN


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def damage(path: Path) -> None:
    """Overwrite the SQLite header, as a disk error or a copy cut short would; drop its WAL files."""
    data = bytearray(path.read_bytes())
    data[:100] = b"\x00damaged" * 12 + b"\x00" * 4
    path.write_bytes(bytes(data))
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)


@pytest.fixture
def indexed(env, capsys):
    env.add(FR / "examples/two_people.jpg")
    env.add(FR / "tests/test_images/obama.jpg")
    assert main(["index", "--quiet"]) == 0
    capsys.readouterr()
    return env


@pytest.mark.parametrize("name", ["manifest.sqlite", "people.sqlite"])
def test_a_damaged_state_file_is_named_with_the_way_out(indexed, capsys, name):
    path = indexed.data / name
    damage(path)
    commands = [["index", "--quiet"], ["people"], ["search", str(FR / "tests/test_images/obama.jpg")]]
    if name == "manifest.sqlite":
        commands = commands[:1]  # the query commands never read the manifest
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"{path} is damaged" in err and "move it aside" in err and "facepipe index" in err, err

    # The way out works: moved aside, the next index rebuilds it and everything answers again.
    path.rename(path.with_name(name + ".damaged"))
    assert main(["index", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "--json", str(FR / "tests/test_images/obama.jpg")]) == 0
    best = json.loads(capsys.readouterr().out)[0][0]
    assert best["image_key"] == "obama.jpg" and best["distance"] < 0.1
    assert main(["people", "--json"]) == 0
    assert json.loads(capsys.readouterr().out), "people clustered again"


def _down_env(which: str) -> dict[str, str]:
    """The environment with the named store(s) pointed at a closed loopback port."""
    port, env = closed_port(), dict(os.environ)
    if which in ("qdrant", "both"):
        env["QDRANT_URL"] = f"http://127.0.0.1:{port}"
    if which in ("pgvector", "both"):
        env["FACEPIPE_PG_DSN"] = f"postgresql://facepipe:Pw-7x@127.0.0.1:{port}/facepipe?connect_timeout=5"
    return env


def _one_clean_line(which: str, *argv: str) -> str:
    """Run the real command; it must fail with exit 1 and one line naming the store, nothing else."""
    done = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", *argv], env=_down_env(which), capture_output=True, text=True, timeout=600
    )
    err = done.stderr.strip()
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("facepipe: "), err
    assert ("Qdrant at" if which == "qdrant" else "Postgres at") in err or which == "both", err
    assert "Pw-7x" not in done.stdout + done.stderr
    return err


QUERY = str(FR / "tests/test_images/obama.jpg")


@pytest.mark.parametrize(
    ("which", "argv"),
    [
        ("qdrant", ["search", QUERY]),
        ("pgvector", ["search", "--store", "pgvector", QUERY]),
        ("qdrant", ["person", QUERY]),
        ("pgvector", ["person", "--store", "pgvector", "--json", QUERY]),
    ],
)
def test_a_store_that_is_down_gives_one_clean_line(env, which, argv):
    _one_clean_line(which, *argv)


def test_forget_with_the_stores_down_gives_one_clean_line(indexed):
    err = _one_clean_line("both", "forget", "obama.jpg")
    assert "Qdrant at" in err or "Postgres at" in err, err


def test_ui_runs_the_dagster_beside_its_own_interpreter(env, monkeypatch, tmp_path):
    """A venv's `facepipe ui` works without the venv activated (its bin folder not on PATH)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no dagster anywhere on PATH
    started: list[tuple[str, list[str]]] = []
    # The one fake: exec would replace the test process with the Dagster webserver.
    monkeypatch.setattr(os, "execvp", lambda program, args: started.append((program, args)))
    assert main(["ui", "--port", "3999"]) == 0
    ((program, args),) = started
    assert Path(program) == Path(sys.executable).parent / "dagster" and Path(program).is_file()
    assert args[1:3] == ["dev", "-w"] and args[-2:] == ["-p", "3999"]


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead, waiting to be reaped by whoever adopted it
    except psutil.NoSuchProcess:
        return True


def test_workers_and_the_resource_tracker_exit_when_index_is_killed(env):
    photos = sorted((KNN / "train").glob("*/*")) + sorted((FR / "tests/test_images").glob("*.jpg"))
    for photo in photos:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    index = subprocess.Popen(
        [sys.executable, "-m", "facepipe.cli", "index", "--quiet"],
        env={**os.environ, "FACEPIPE_WORKERS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    parent = psutil.Process(index.pid)
    helpers: list[psutil.Process] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert index.poll() is None, index.communicate()[1]
        kids = []
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "multiprocessing" in " ".join(child.cmdline()):
                    kids.append(child)
        if sum("spawn_main" in " ".join(k.cmdline()) for k in kids) >= 2:
            helpers = kids
            break
        time.sleep(0.2)
    assert helpers, "the index run started its extraction workers"
    assert any("resource_tracker" in " ".join(k.cmdline()) for k in helpers), [k.cmdline() for k in helpers]

    index.send_signal(signal.SIGKILL)
    index.wait()
    deadline = time.monotonic() + 120  # generous: a worker notices between two photos at worst
    while time.monotonic() < deadline and not all(_gone(k) for k in helpers):
        time.sleep(0.2)
    alive = [k.pid for k in helpers if not _gone(k)]
    for k in helpers:  # never leave them behind, even when the assertion fails
        with contextlib.suppress(psutil.Error):
            k.kill()
    assert not alive, f"outlived the killed index: {alive}"


_SEARCH_LOOP = """
import sys, time
import numpy as np
from facepipe.stores import QdrantStore
store = QdrantStore(path=sys.argv[1], keep_open=True, lock_timeout=300)  # as the HTTP server holds it
while True:
    store.search(np.zeros(128, dtype=np.float32), top_k=3)
    print(store.count(), flush=True)
    time.sleep(1.0)
"""


def test_a_loop_of_searches_does_not_starve_a_writer(tmp_path):
    """A process searching every second keeps embedded Qdrant open between searches (as `serve` does);
    a writer (an index run's export) still gets the folder after at most one search, and the searcher
    gets it back afterwards."""
    from facepipe.stores import QdrantStore
    from facepipe.stores.locks import lock_is_free
    from facepipe.stores.qdrant_edge import LOCK_FILE
    from facepipe_tests.store_fixtures import centers_for, clustered_faces

    folder = tmp_path / "qdrant"
    rng = np.random.default_rng(15)
    centers = centers_for(rng, 2)
    writer = QdrantStore(path=folder, lock_timeout=90)
    writer.replace_images(clustered_faces(rng, ["first.jpg"], 3, centers))
    searcher = subprocess.Popen([sys.executable, "-c", _SEARCH_LOOP, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert searcher.stdout.readline().strip() == "3" and searcher.stdout.readline().strip() == "3"
        assert not lock_is_free(folder / LOCK_FILE), "the searcher holds the folder between its searches"
        started = time.monotonic()
        writer.replace_images(clustered_faces(rng, ["second.jpg"], 2, centers))  # waits at most lock_timeout
        waited = time.monotonic() - started
        assert writer.count() == 5
        seen = [searcher.stdout.readline().strip() for _ in range(3)]
        assert "5" in seen, seen  # and the searcher carries on with the folder back
    finally:
        searcher.kill()
        searcher.wait()
        writer.close()
    assert waited < 60, waited  # generous: one search and one engine open, on a busy machine
