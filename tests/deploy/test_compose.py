"""docker-compose.yml, checked as data (Docker does not run here; deploy/check adds
`docker compose config` where the plugin is installed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OWN_IMAGE = "b2bscore:local"


def test_the_whole_stack_is_there() -> None:
    assert set(SERVICES) >= {
        "postgres", "redis", "migrate", "sandbox", "api", "worker", "prometheus", "grafana"
    }  # fmt: skip


def test_one_image_built_once_and_reused() -> None:
    built = [name for name, service in SERVICES.items() if "build" in service]
    assert built == ["migrate"]
    ours = [name for name, service in SERVICES.items() if service.get("image") == OWN_IMAGE]
    assert set(ours) == {"migrate", "sandbox", "api", "worker"}
    for name in ours:
        assert SERVICES[name].get("pull_policy") == "never", name


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in SERVICES.items():
        if name != "migrate":
            assert "healthcheck" in service, name
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_start_order_waits_for_health_and_for_the_migrations() -> None:
    def waits(name: str) -> dict[str, str]:
        return {dep: cond["condition"] for dep, cond in SERVICES[name]["depends_on"].items()}

    assert waits("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert waits(name) == {
            "migrate": "service_completed_successfully",
            "redis": "service_healthy",
            "sandbox": "service_healthy",
        }
    assert waits("prometheus") == {"api": "service_healthy"}
    assert waits("grafana") == {"prometheus": "service_healthy"}
    # No cycle, and every dependency is a service of the file.
    order: list[str] = []
    pending = dict.fromkeys(SERVICES)
    while pending:
        ready = [n for n in pending if set(SERVICES[n].get("depends_on", {})) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        for name in ready:
            order.append(name)
            del pending[name]


def test_the_api_readiness_is_its_health_check() -> None:
    assert any("/readyz" in part for part in SERVICES["api"]["healthcheck"]["test"])


def test_two_database_roles_owner_migrates_app_serves() -> None:
    migrate_env = SERVICES["migrate"]["environment"]
    api_env = SERVICES["api"]["environment"]
    assert "b2bscore_owner:" in migrate_env["B2BSCORE_MIGRATION_DATABASE_URL"]
    assert "b2bscore_app:" in api_env["B2BSCORE_DATABASE_URL"]
    assert "B2BSCORE_MIGRATION_DATABASE_URL" not in api_env
    assert "b2bscore db grant-app-role b2bscore_app" in " ".join(SERVICES["migrate"]["command"])
    init = (REPO / "deploy/compose/postgres-init/10-b2bscore-roles.sh").read_text()
    assert "CREATE ROLE b2bscore_owner" in init
    assert "CREATE ROLE b2bscore_app" in init
    assert "OWNER b2bscore_owner" in init


SECRET_NAMES = (
    "B2BSCORE_TOKENIZATION_KEY",
    "B2BSCORE_DATA_KEYS",
    "B2BSCORE_AUDIT_KEYS",
    "B2BSCORE_AUDIT_SIGNING_KEY",
)


def test_secrets_come_from_the_env_file_never_from_the_compose_file() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name in (*SECRET_NAMES, "B2BSCORE_APP_DB_PASSWORD", "POSTGRES_PASSWORD"):
        assert re.search(rf"\$\{{{name}:\?run deploy/compose/make-secrets\}}", text), name
    for name in SECRET_NAMES:
        assert SERVICES["api"]["environment"][name].startswith("${"), name
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_make_secrets_writes_once_and_never_overwrites(tmp_path: Path) -> None:
    script = tmp_path / "deploy/compose/make-secrets"
    script.parent.mkdir(parents=True)
    script.write_text((REPO / "deploy/compose/make-secrets").read_text())
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    env_file = tmp_path / ".env"
    first = env_file.read_text()
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line)
    for name in (*SECRET_NAMES, "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert len(values[name]) >= 20, name
    # The keys decrypt stored data: a second run keeps them.
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    assert env_file.read_text() == first


def test_data_survives_container_recreation_in_named_volumes() -> None:
    volumes = set(COMPOSE["volumes"])
    assert volumes >= {"pgdata", "checkpoints", "prometheus", "grafana"}
    mounts = {m.split(":")[0] for s in SERVICES.values() for m in s.get("volumes", [])}
    assert volumes <= mounts


def test_prometheus_loads_every_rule_file_and_grafana_its_dashboard() -> None:
    prometheus = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in prometheus
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert "/etc/prometheus/rules/*.yml" in config["rule_files"]
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert {"api:8000", "worker:9101"} <= targets
    grafana = SERVICES["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/b2bscore.json"
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana["volumes"]


def test_the_build_context_carries_only_what_the_image_needs() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"]  # everything out, then what is needed
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "models"}
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.MULTILINE))
    assert {part for line in copied for part in line.split()} <= allowed
