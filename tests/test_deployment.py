"""Static checks of the container deployment (no Docker engine here: what can be read is checked)."""

from __future__ import annotations

import re

import yaml

from tests.support import REPO

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY)", re.IGNORECASE)
# a secret is only ever a reference to .env: ${VAR}, ${VAR:?message} or ${VAR:-} (empty default)
SECRET_REFERENCE = re.compile(r"\$\{[A-Z0-9_]+(:\?[^}]*|:-)?\}")
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_compose_declares_the_stack_with_healthchecks() -> None:
    services = _compose()["services"]
    assert {"postgres", "seaweedfs", "strata-init"} <= set(services)
    for name in ("postgres", "seaweedfs"):
        assert services[name]["healthcheck"]["test"], name
    init = services["strata-init"]
    assert init["environment"]["STRATA_PG_ADMIN_DSN"].startswith("postgresql://postgres@")
    assert init["build"]["dockerfile"] == "docker/Dockerfile"
    assert init["command"] == ["init"]
    for dependency in ("postgres", "seaweedfs"):
        assert init["depends_on"][dependency]["condition"] == "service_healthy"


def test_compose_has_no_secret_literals() -> None:
    def walk(node, path=""):  # type: ignore[no-untyped-def]
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")
        else:
            yield path, node

    checked = 0
    for path, value in walk(_compose()):
        leaf = path.rsplit(".", 1)[-1]
        if not isinstance(value, str):
            continue
        # no password inside a URL either (user:password@host)
        assert not re.search(r"://[^/:@\s]+:(?!\$\{)[^@\s]+@", value), f"{path} = {value!r}"
        if SECRET_NAME.search(leaf) and leaf.endswith("_FILE"):
            assert value.startswith("/"), f"{path} = {value!r}"  # a path, not a secret
        elif SECRET_NAME.search(leaf):
            checked += 1
            assert SECRET_REFERENCE.fullmatch(value), f"{path} = {value!r}"
    assert checked >= 10
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    example = (REPO / ".env.example").read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", (REPO / "docker-compose.yaml").read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert referenced <= documented, referenced - documented


def test_compose_runs_airflow_on_postgres_with_healthchecks() -> None:
    services = _compose()["services"]
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    strata_home = re.search(r"STRATA_HOME=(\S+)", dockerfile).group(1)
    # created in the image, owned by its user, so the new volume is writable by the tasks
    assert re.search(
        rf"install -d -o strata [^\n]*(\\\n[^\n]*)*{re.escape(strata_home)}", dockerfile
    )
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert service["entrypoint"] == ["airflow"], name
        assert service["healthcheck"]["test"], name
        env = service["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["STRATA_PG_DSN"].startswith("postgresql://strata_pipeline@postgres:")
        # run logs and reports outlive the container
        assert f"strata-home:{strata_home}" in service["volumes"], name
        # the superuser only where the governance task runs (the LocalExecutor's scheduler)
        admin = env.get("STRATA_PG_ADMIN_DSN", "")
        assert bool(admin) == (name == "airflow-scheduler"), name
        assert not admin or admin.startswith("postgresql://postgres@postgres:")
        for dependency in ("airflow-init", "strata-init"):
            assert (
                service["depends_on"][dependency]["condition"] == "service_completed_successfully"
            )
    commands = {name: services[name]["command"][0] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    assert "airflow db migrate" in services["airflow-init"]["command"][0]
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # every Airflow component signs the same tokens: one shared secret, from .env
    secrets = {
        services[n]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for n in AIRFLOW_SERVICES
    }
    assert len(secrets) == 1
    init_sql = (REPO / "docker" / "init-databases.sh").read_text()
    assert "create database airflow owner airflow" in init_sql
    assert ":'airflow_password'" in init_sql  # quoted by psql, not pasted into the SQL


def test_dockerfile_installs_the_pinned_requirements() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "COPY requirements.txt" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE)
    assert "COPY dags ./dags" in dockerfile
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/strata/dags" in dockerfile
    pinned = (REPO / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("apache-airflow==3.") for line in pinned)
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", line), line
