"""Static checks of the container deployment (no Docker engine here: what can be read is checked)."""

from __future__ import annotations

import re

import yaml

from tests.support import REPO

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY)", re.IGNORECASE)


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_compose_declares_the_stack_with_healthchecks() -> None:
    services = _compose()["services"]
    assert {"postgres", "seaweedfs", "strata-init"} <= set(services)
    for name in ("postgres", "seaweedfs"):
        assert services[name]["healthcheck"]["test"], name
    init = services["strata-init"]
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
        if SECRET_NAME.search(leaf) and isinstance(value, str):
            checked += 1
            assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", value), f"{path} = {value!r}"
    assert checked >= 5
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    example = (REPO / ".env.example").read_text()
    assert "STRATA_PG_PASSWORD=" in example and "POSTGRES_PASSWORD=" in example


def test_dockerfile_installs_the_pinned_requirements() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "COPY requirements.txt" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE)
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", line), line
