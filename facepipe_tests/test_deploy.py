"""docker-compose.yml and the README agree with the variables the code reads (no Docker engine here)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = {"FACEPIPE_IMAGES", "FACEPIPE_DATA", "QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN", "DAGSTER_HOME"}


def variables_read_by_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "facepipe").rglob("*.py"):
        names |= set(re.findall(r"\b(FACEPIPE_[A-Z_]+|QDRANT_URL|QDRANT_API_KEY|DAGSTER_HOME)\b", path.read_text()))
    return names


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_code_reads_the_contract_variables_and_readme_documents_all():
    read = variables_read_by_code()
    assert read >= CONTRACT
    readme = (ROOT / "README.md").read_text()
    undocumented = {name for name in read if f"`{name}`" not in readme}
    assert not undocumented, f"variables read by the code but not in the README: {sorted(undocumented)}"


def test_compose_services_ports_and_volumes():
    spec = compose()
    services = spec["services"]
    assert set(services) >= {"qdrant", "postgres", "dagster-webserver", "dagster-daemon"}
    client = version("qdrant-client").split(".")[:2]
    tag = services["qdrant"]["image"].split(":")[1].lstrip("v").split(".")[:2]
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:") and tag == client
    pg_image = services["postgres"]["image"]
    assert re.fullmatch(r"pgvector/pgvector:[0-9.]+-pg1[78]", pg_image)
    if pg_image.endswith("pg18"):  # PG18 images keep data in a versioned folder under /var/lib/postgresql
        assert any(v.endswith(":/var/lib/postgresql") for v in services["postgres"]["volumes"])
    for name, port in (("qdrant", 6333), ("postgres", 5432), ("dagster-webserver", 3000)):
        assert f"127.0.0.1:{port}:{port}" in services[name]["ports"], "servers listen on loopback only"
    for name in ("dagster-webserver", "dagster-daemon"):
        # "source:target[:mode]", where the source may be "${VAR:-default}"
        mounts = {re.sub(r"^\$\{[^}]*\}|^[^:]*", "", v).split(":")[1] for v in services[name]["volumes"]}
        assert {"/images", "/data"} <= mounts
    assert set(spec["volumes"]) >= {"qdrant-storage", "postgres-data", "facepipe-data"}


def test_compose_environment_uses_the_code_names_and_no_literal_secrets():
    spec = compose()
    read = variables_read_by_code()
    for name in ("dagster-webserver", "dagster-daemon"):
        env = spec["services"][name]["environment"]
        assert set(env) >= CONTRACT
        facepipe_names = {k for k in env if k.startswith(("FACEPIPE_", "QDRANT_"))}
        assert facepipe_names <= read, f"compose sets variables the code never reads: {facepipe_names - read}"
        assert env["FACEPIPE_IMAGES"] == "/images" and env["FACEPIPE_DATA"] == "/data"
        assert env["QDRANT_URL"] == "http://qdrant:6333"
        assert "@postgres:5432/" in env["FACEPIPE_PG_DSN"]
        # Secrets come from the user's environment, never from the file.
        assert "${POSTGRES_PASSWORD" in env["FACEPIPE_PG_DSN"] and env["QDRANT_API_KEY"].startswith("${")
    dagster_yaml = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
    assert dagster_yaml["storage"]["postgres"]["postgres_db"]["password"] == {"env": "POSTGRES_PASSWORD"}
