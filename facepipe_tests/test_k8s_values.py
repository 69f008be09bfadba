"""deploy/k8s/values.yaml and docker-compose.prod.yml: parsed and checked against Dagster's own config schemas.

The Helm chart turns `runLauncher.config.k8sRunLauncher` and `dagsterDaemon.runCoordinator` into the
instance's `run_launcher` and `run_coordinator` config (its templates/helpers/instance/*.tpl); `rendered_*`
below does the same for the keys used here, and dagster-k8s's `K8sRunLauncher.config_type()` and
Dagster's `QueuedRunCoordinator.config_type()` validate the result. No cluster and no Docker engine here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.run_coordinator import QueuedRunCoordinator

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
PROD = ROOT / "docker-compose.prod.yml"
SECRET_NAMES = ("FACEPIPE_PG_DSN", "QDRANT_API_KEY", "POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")

K8S_KEYS = {  # chart value -> dagster-k8s config field
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "imagePullPolicy": "image_pull_policy",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "runK8sConfig": "run_k8s_config",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
RUN_K8S_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def check(config_type, config: dict) -> None:
    result = validate_config(config_type, config)
    assert result.success, "\n".join(error.message for error in result.errors)


def rendered_run_launcher(v: dict) -> dict:
    """dagster.yaml's run_launcher config, as the chart's template writes it from these values."""
    k8s = v["runLauncher"]["config"]["k8sRunLauncher"]
    unknown = set(k8s) - set(K8S_KEYS) - {"envConfigMaps", "envSecrets", "image"}
    assert not unknown, f"keys the chart does not map into the run launcher: {unknown}"
    config = {K8S_KEYS[k]: value for k, value in k8s.items() if k in K8S_KEYS}
    if "run_k8s_config" in config:
        config["run_k8s_config"] = {RUN_K8S_KEYS[k]: value for k, value in config["run_k8s_config"].items()}
    config.setdefault("job_namespace", "facepipe")  # the release namespace
    config.update(
        service_account_name="facepipe-dagster",
        dagster_home={"env": "DAGSTER_HOME"},
        instance_config_map={"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        postgres_password_secret={"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        env_config_maps=[{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}]
        + [m["name"] for m in k8s.get("envConfigMaps", [])],
    )
    if k8s.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in k8s["envSecrets"]]
    return config


def test_values_use_the_k8s_run_launcher_with_a_valid_config():
    # dagster-k8s belongs in the dev dependency group (0.29.x, matching dagster 1.13).
    K8sRunLauncher = pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed").K8sRunLauncher

    v = values()
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    config = rendered_run_launcher(v)
    check(K8sRunLauncher.config_type(), config)
    assert "facepipe-secrets" in config["env_secrets"]
    mounts = {m["mountPath"] for m in config["volume_mounts"]}
    assert mounts == {"/work"}  # scratch only: the library is in Postgres and object storage


def test_values_queue_runs_with_limits():
    coordinator = values()["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    q = coordinator["config"]["queuedRunCoordinator"]
    config = {"max_concurrent_runs": q["maxConcurrentRuns"], "tag_concurrency_limits": q["tagConcurrencyLimits"]}
    check(QueuedRunCoordinator.config_type(), config)
    assert 0 < config["max_concurrent_runs"] <= 64


def test_values_point_at_servers_batch_runs_and_keep_secrets_out():
    v = values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "facepipe.definitions"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["QDRANT_URL"].startswith("http") and env["FACEPIPE_DATA"].startswith("s3://")
    assert env["FACEPIPE_IMAGES"].startswith("s3://") and env["FACEPIPE_WORK"] == "/work"
    assert int(env["FACEPIPE_BATCH"]) >= 64, "a run pod should cover a batch of photos"
    assert {s["name"] for s in deployment["envSecrets"]} == {"facepipe-secrets"}
    run_env = dict(e.split("=", 1) for e in v["runLauncher"]["config"]["k8sRunLauncher"]["envVars"])
    for name in ("FACEPIPE_BATCH", "QDRANT_URL", "FACEPIPE_IMAGES", "FACEPIPE_DATA", "FACEPIPE_WORK"):
        assert run_env[name] == env[name], name
    assert v["postgresql"]["enabled"] is False and "postgresqlPassword" not in v["postgresql"]
    for name in SECRET_NAMES:  # only ever from the Secret
        assert name not in env and name not in run_env
    assert not re.search(r"password\s*[:=]\s*\S", VALUES.read_text().split("\nglobal:")[1], re.I)


# -- docker-compose.prod.yml ------------------------------------------------------------------------


def prod() -> dict:
    return yaml.safe_load(PROD.read_text())


@pytest.fixture(scope="module")
def prod_instance_yaml() -> dict:
    spec = prod()
    mounts = [v for s in spec["services"].values() for v in s.get("volumes", []) if "dagster.yaml" in str(v)]
    (source,) = {m.split(":")[0] for m in mounts}
    return yaml.safe_load((ROOT / source).read_text())


def test_prod_compose_runs_user_code_apart_from_the_webserver(prod_instance_yaml):
    services = prod()["services"]
    code = services["facepipe-code"]
    assert code["command"][:3] == ["dagster", "code-server", "start"]
    for name in ("dagster-webserver", "dagster-daemon"):
        command = services[name]["command"]
        assert "--grpc-host" in command and "facepipe-code" in command, f"{name} must load code over gRPC"
    assert prod_instance_yaml["run_coordinator"]["class"] == "QueuedRunCoordinator"
    check(QueuedRunCoordinator.config_type(), prod_instance_yaml["run_coordinator"]["config"])
    assert "postgres" in prod_instance_yaml["storage"]


def test_prod_compose_keeps_secrets_in_the_environment():
    lines = PROD.read_text().splitlines()
    found = 0
    for name in SECRET_NAMES:
        for line in lines:
            match = re.match(rf"\s*{name}\s*:\s*(.*)$", line)
            if not match:
                continue
            found += 1
            literal = re.sub(r"\$\{[^}]*\}", "", match.group(1)).strip().strip('"')  # ${VAR...} come from outside
            password = re.search(r"://[^:@/]*:([^@]*)@", literal)  # a DSN: its password part
            assert (password.group(1) if password else literal) == "" or ("://" in literal and not password), (
                f"{name} must come from the environment: {line.strip()}"
            )
    assert found >= 3
