"""Store passwords with every character a pattern trips on, through a real index, status and search
(a Postgres role that has such a password) and a store that is down: none of their forms reaches
stdout, stderr or any file under the data folder and the Dagster home (run databases, compute logs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from facepipe.secrets import describe_dsn, misread_password, passwords, redact
from facepipe.stores.embedded_pg import embedded_postgres
from facepipe_tests.conftest import KNN

PASSWORD = "Pw#1?a/b c@d%41'e\"f=g&h\\i"
"""Every character that ends a password for some pattern: # ? / space @ a %-escape, quotes, = & and a backslash."""
QDRANT_KEY = "Key#2?x/y z@w"
ROLE = "facepipe_hostile"


def forms(secret: str) -> set[str]:
    """What a leak of `secret` looks like: as is, %-encoded (URL and form style)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        (f"postgresql://u:{quote(PASSWORD, safe='')}@db.example:5432/faces?sslmode=disable", PASSWORD),
        (f"postgresql://u:{PASSWORD}@db.example:5432/faces", PASSWORD),  # unescaped, as a hurried user writes it
        (f"postgresql://db.example/faces?user=u&password={quote(PASSWORD, safe='')}", PASSWORD),
        (make_conninfo(host="db.example", user="u", password=PASSWORD, dbname="faces"), PASSWORD),
        ("host=db.example password='Pw#1?a/b c@d", "Pw#1?a/b c@d"),  # an unclosed quote: libpq cannot parse it
        ("http://admin:S3cr%2Ft@qdrant.example:6333", "S3cr/t"),
    ],
)
def test_a_dsn_is_shown_without_any_form_of_its_password(dsn, secret):
    shown = describe_dsn(dsn)
    assert "example" in shown or "cannot be parsed" in shown
    assert passwords(dsn)
    for form in forms(secret):
        assert form not in shown, shown
        message = f"connection to {dsn} failed: password {form} rejected; host {form[2:]}"
        cleaned = redact(message, dsn)
        assert form not in cleaned and form[2:] not in cleaned, cleaned
        assert "connection to" in cleaned and "rejected" in cleaned  # the rest of the message stays


@pytest.mark.parametrize(
    ("dsn", "refused"),
    [
        ("postgresql://postgres:@/postgres?host=/run/pg", False),  # the embedded server's own form
        ("postgresql://u:pw@h/db?application_name=me@home", False),  # an `@` in a query value
        (f"postgresql://u:{quote(PASSWORD, safe='')}@h/db", False),
        ("postgresql://u:p#s?x@h/db", False),  # libpq reads `p#s?x`, as meant
        ("postgresql://u:p@ss@h/db", True),  # libpq would log in with `p` at host `ss@h`
        ("postgresql://u:p/ss@h/db", True),
    ],
)
def test_only_a_url_libpq_would_misread_is_refused(dsn, refused):
    assert misread_password(dsn) is refused


@pytest.fixture
def hostile_role(tmp_path: Path) -> Iterator[str]:
    """A real Postgres (its folder outside the data folder searched below) with a role that has PASSWORD.

    Returns the socket folder; the embedded server trusts local sockets, so the password travels with
    every DSN but is not what lets the role in."""
    server = embedded_postgres(tmp_path / "pg-server")

    def keep() -> None:
        pass

    uri = server.attach(keep)
    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            role = sql.Identifier(ROLE)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(role, sql.Literal(PASSWORD)))
            conn.execute(sql.SQL("CREATE DATABASE faces_kv OWNER {}").format(role))
        yield str(server.pgdata)
    finally:
        server.detach(keep)


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facepipe.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_hostile_passwords_never_reach_output_logs_or_files(env, hostile_role, tmp_path):
    env.add(KNN / "train/obama/obama.jpg", "a.jpg")
    env.add(KNN / "train/biden/biden.jpg", "b.jpg")
    socket = hostile_role
    url_dsn = f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@/postgres?host={quote(socket, safe='')}"
    kv_dsn = make_conninfo(host=socket, user=ROLE, password=PASSWORD, dbname="faces_kv")
    second = {"FACEPIPE_DATA": str(tmp_path / "data-kv"), "DAGSTER_HOME": str(tmp_path / "dagster-kv")}
    outputs: list[str] = []

    def cli(args: list[str], **extra: str) -> subprocess.CompletedProcess:
        done = run_cli(args, {**os.environ, **extra})
        outputs.append(done.stdout + done.stderr)
        return done

    # Working stores, URL form and key=value form (another library: a fresh export through Dagster).
    for dsn, where in ((url_dsn, {}), (kv_dsn, second)):
        done = cli(["index", "--json", "--quiet"], FACEPIPE_PG_DSN=dsn, **where)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["faces"] == 2
        status = cli(["status", "--json"], FACEPIPE_PG_DSN=dsn, **where)
        assert json.loads(status.stdout)["pgvector"]["faces"] == 2, status.stdout
        assert cli(["status"], FACEPIPE_PG_DSN=dsn, **where).returncode == 0
        search = cli(["search", str(KNN / "test/obama1.jpg"), "--store", "pgvector"], FACEPIPE_PG_DSN=dsn, **where)
        assert "a.jpg" in search.stdout, search.stderr[-2000:]

    # Stores that are down, in each form (a new photo, so the index has work to export), then a Qdrant server.
    env.add(KNN / "train/biden/biden.jpg", "c.jpg")
    down = {
        "url": f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@127.0.0.1:9/faces?connect_timeout=2",
        "raw": f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:9/faces?connect_timeout=2",
        "kv": make_conninfo(host="127.0.0.1", port="9", user=ROLE, password=PASSWORD, connect_timeout="2"),
    }
    for name, dsn in down.items():
        # The manifest is in that Postgres too: the index stops before any run, one line naming it.
        done = cli(["index", "--json", "--quiet"], FACEPIPE_PG_DSN=dsn)
        assert done.returncode == 1, (name, done.stderr[-2000:])
        failed = done.stderr.strip()
        assert "cannot use the Postgres at" in failed and "127.0.0.1" in failed, (name, failed)
        status = json.loads(cli(["status", "--json"], FACEPIPE_PG_DSN=dsn).stdout)
        assert status["pgvector"]["faces"] is None and status["pgvector"]["error"], name
        if name == "raw":
            assert "%-encoded" in status["pgvector"]["error"]  # refused before libpq misreads it
    qdrant = {"QDRANT_URL": "http://127.0.0.1:9", "QDRANT_API_KEY": QDRANT_KEY, "FACEPIPE_PG_DSN": down["kv"]}
    done = cli(["index", "--json", "--quiet"], **qdrant)
    failed = done.stderr.strip() or json.loads(done.stdout)["failed_runs"][0]
    assert "cannot reach the Qdrant at http://127.0.0.1:9" in failed or "Postgres at" in failed, failed
    # A run whose export reaches the down Qdrant server (Postgres embedded: the state reachable).
    embedded = {k: v for k, v in qdrant.items() if k != "FACEPIPE_PG_DSN"}
    (failed,) = json.loads(cli(["index", "--json", "--quiet"], **embedded).stdout)["failed_runs"]
    assert "cannot reach the Qdrant at http://127.0.0.1:9" in failed, failed
    assert json.loads(cli(["status", "--json"], **qdrant).stdout)["qdrant"]["faces"] is None

    needles = forms(PASSWORD) | forms(QDRANT_KEY)
    for text in outputs:
        for needle in needles:
            assert needle not in text, f"{needle!r} printed: ...{text[max(0, text.find(needle) - 200) :][:400]}"
    for folder in (env.data, env.dagster_home, tmp_path / "data-kv", tmp_path / "dagster-kv"):
        assert any(folder.rglob("*.db")) or any(folder.rglob("*.sqlite")), f"nothing written under {folder}?"
        args = ["grep", "-rlaF", *(arg for needle in needles for arg in ("-e", needle)), str(folder)]
        found = subprocess.run(args, capture_output=True)
        assert found.stdout == b"", f"a password written to {found.stdout.decode()}"
