"""Helpers for the UI tests: an isolated facepipe environment, the Dagster webserver and daemon as
real processes on loopback, their GraphQL API, and headless Chromium driven by Selenium.

Every process started here runs in its own session and is ended by process group, then any
descendant that escaped the group (recognised by the unique DAGSTER_HOME or Chromium profile
it carries) is ended by pid. Nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"
BIN = Path(sys.executable).parent
EXAMPLES = REPO.parent / "shared" / "data" / "face_recognition" / "examples"

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "run `sudo scripts/install-chromium.sh` (CI does) to install the Debian chromium and chromium-driver"

SMALL_PHOTOS = [
    "obama-240p.jpg",
    "obama_small.jpg",
    "obama-480p.jpg",
    "obama2.jpg",
    "biden.jpg",
    "alex-lacamoire.png",
]
"""Small sample photos with faces (HOG takes well under a second on each)."""


# ---------------------------------------------------------------------------------------------
# environment


@dataclass
class UiEnv:
    """A temporary images folder, data folder and Dagster home, as environment variables."""

    root: Path
    images: Path
    data: Path
    dagster_home: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def vars(self) -> dict[str, str]:
        # Never a real user's servers: the stores fall back to their embedded defaults under data/.
        env = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN")}
        # A parent pytest may have pointed these elsewhere; the servers must see only ours.
        env.update(
            {
                "FACEPIPE_IMAGES": str(self.images),
                "FACEPIPE_DATA": str(self.data),
                "DAGSTER_HOME": str(self.dagster_home),
                "FACEPIPE_DETECTOR": "hog",
                "FACEPIPE_WORKERS": "1",
                "PYTHONUNBUFFERED": "1",
                **self.extra,
            }
        )
        return env

    def add_photos(self, names: list[str]) -> list[str]:
        """Copy sample photos into the images folder; returns their partition keys (file names)."""
        if not EXAMPLES.is_dir():
            pytest.fail(f"sample photos not found at {EXAMPLES}: the shared/ folder must sit beside the checkout")
        for name in names:
            shutil.copyfile(EXAMPLES / name, self.images / name)
        return sorted(names)


DAGSTER_YAML = "telemetry:\n  enabled: false\n"
"""A minimal dagster.yaml (facepipe.defs.instance writes its own into a new DAGSTER_HOME)."""


def make_env(tmp_path: Path, **extra: str) -> UiEnv:
    """Folders under tmp_path, and a Dagster instance whose storage already exists.

    Creating the storage up front lets the webserver start while another process prepares the
    partitions: two processes initialising a fresh SQLite instance at once can race in alembic
    ("Version table 'alembic_version' has more than one head present").
    """
    env = UiEnv(tmp_path, tmp_path / "images", tmp_path / "data", tmp_path / "dagster_home", dict(extra))
    for folder in (env.images, env.data, env.dagster_home):
        folder.mkdir()
    (env.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(env.dagster_home)):
        pass
    return env


_PREPARE = """
import json, sys
import dagster as dg
from facepipe import settings, sync
from facepipe.defs.instance import ensure_dagster_home
from facepipe.library import Library

ensure_dagster_home(settings.current())  # keeps the test's dagster.yaml (telemetry off)
library = Library.open(settings.current())
if sys.argv[1] == "index":
    from facepipe.defs.indexer import run_index

    report = run_index(library, show_progress=False)
    assert not report.failed_runs, report.failed_runs
else:  # what the images sensor does on its first tick, without launching the runs
    instance = dg.DagsterInstance.get()
    outcome = sync.plan(library, instance.get_dynamic_partitions("images"))
    instance.add_dynamic_partitions("images", outcome.add_partitions)
    sync.commit(library, outcome, pending=False)
print(json.dumps(dg.DagsterInstance.get().get_dynamic_partitions("images")))
"""


def prepare(env: UiEnv, *, materialize: bool, timeout: float = 90) -> list[str]:
    """Add one partition per photo, in a fresh interpreter with the test's environment.

    materialize=True runs `facepipe index` (facepipe.defs.indexer.run_index): partitions plus faces.
    materialize=False only syncs the partitions and the manifest (what the sensor would add),
    leaving every partition unmaterialized for a backfill. Returns the partition keys.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _PREPARE, "index" if materialize else "sync"],
        env=env.vars,
        cwd=env.root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"preparing partitions failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_carrying(marker: str) -> list[int]:
    """Pids of live processes whose environment or command line mentions `marker`."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("environ", "cmdline"):
            with contextlib.suppress(OSError):
                if needle in (entry / part).read_bytes():
                    found.append(int(entry.name))
                    break
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def end_stragglers(marker: str, grace: float = 5) -> list[int]:
    """Terminate, then kill, every process still carrying `marker` (ours: the marker is a tmp path)."""
    pids = _pids_carrying(marker)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pids_carrying(marker):
        time.sleep(0.2)
    for pid in _pids_carrying(marker):
        _signal(pid, signal.SIGKILL)
    return pids


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ({self.log}) ---\n{text[-chars:]}"

    def check_alive(self) -> None:
        code = self.popen.poll()
        assert code is None, f"{self.name} exited early with code {code}\n{self.tail()}"

    def stop(self, grace: float = 10) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # Children (code servers, run workers) share the group; make sure none outlives us.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


class Processes:
    """Processes started by a test; `close()` ends all of them (and their descendants)."""

    def __init__(self, env: UiEnv):
        self.env = env
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str]) -> Proc:
        log = self.env.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                env=self.env.vars,
                cwd=self.env.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def webserver(self, port: int) -> Proc:
        return self.start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)],
        )

    def daemon(self) -> Proc:
        return self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)])

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        # Anything that left the process group still carries our unique DAGSTER_HOME.
        end_stragglers(str(self.env.dagster_home))


@contextlib.contextmanager
def processes(env: UiEnv) -> Iterator[Processes]:
    procs = Processes(env)
    try:
        yield procs
    finally:
        procs.close()


def wait_for(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    interval: float = 0.5,
    alive: Callable[[], None] | None = None,
    context: Callable[[], str] | None = None,
) -> Any:
    """Call `probe` until it returns something truthy; fail with `what` (and context) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    extra = f"\n{context()}" if context else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{extra}")


def facepipe_cli(env: UiEnv, *args: str) -> str:
    """`facepipe ARGS` in a separate process with the test's environment; its stdout (it must succeed)."""
    proc = subprocess.run(
        [str(BIN / "facepipe"), *args], env=env.vars, cwd=env.root, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"facepipe {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def serve(procs: Processes, timeout: float = 30) -> tuple[Proc, str]:
    """`facepipe serve` on a free loopback port, once it answers /api/people: the process and its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = procs.start("serve", [str(BIN / "facepipe"), "serve", "--port", str(port)])
    wait_for(
        "facepipe serve to answer /api/people",
        lambda: httpx.get(f"{base}/api/people", timeout=5).status_code == 200,
        timeout,
        alive=server.check_alive,
        context=server.tail,
    )
    return server, base


def wait_for_webserver(base: str, proc: Proc, timeout: float = 60) -> dict:
    def probe() -> dict | None:
        r = httpx.get(f"{base}/server_info", timeout=5)
        return r.json() if r.status_code == 200 else None

    return wait_for("the webserver's /server_info", probe, timeout, alive=proc.check_alive, context=proc.tail)


# ---------------------------------------------------------------------------------------------
# GraphQL


class GraphQLError(AssertionError):
    pass


def graphql(base: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    r = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout)
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise GraphQLError(json.dumps(body["errors"], indent=1))
    return body["data"]


SENSORS_QUERY = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } sensors { id name sensorState { id status } } }
    }
    ... on PythonError { message }
  }
}
"""


def sensors(base: str) -> dict[str, dict]:
    """name -> {id, name, sensorState, repository, location} for every sensor the webserver loaded."""
    data = graphql(base, SENSORS_QUERY)["repositoriesOrError"]
    assert data["__typename"] == "RepositoryConnection", data
    found = {}
    for repo in data["nodes"]:
        for sensor in repo["sensors"]:
            found[sensor["name"]] = {**sensor, "repository": repo["name"], "location": repo["location"]["name"]}
    return found


# ---------------------------------------------------------------------------------------------
# Chromium


def require_chromium() -> None:
    """Fail (not skip: CI installs Chromium) when the Debian chromium or its driver is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL_HINT}", pytrace=False)


CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
]


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium session on the system binaries (Selenium Manager downloads nothing)."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    service = Service(
        executable_path=str(CHROMEDRIVER),
        port=free_port(),
        log_output=str(tmp_path / "chromedriver.log"),
    )
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        with contextlib.suppress(Exception):
            service.stop()
        # Chromium's helpers (zygote, crashpad) all carry the unique profile path.
        end_stragglers(str(profile))


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except Exception:  # the page may be mid-render
        return ""


def page_and_log(driver: Any, proc: Proc, chars: int = 2000) -> Callable[[], str]:
    """A wait_for context: the start of what the page shows, then the end of the server's log."""
    return lambda: f"{page_text(driver)[:chars]}\n{proc.tail()}"
