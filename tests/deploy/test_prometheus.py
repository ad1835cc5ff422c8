"""Alert rules and the Grafana dashboard use the metrics the code exports, as it names them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import b2bscore.kit.metrics  # noqa: F401  (registers the service's metrics)

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy/prometheus/rules"
SERVICE_RULES = RULES_DIR / "service.yml"
PROMETHEUS_RULE = REPO / "deploy/k8s/base/prometheusrule.yaml"
DASHBOARD = REPO / "deploy/grafana/dashboards/b2bscore.json"
# Exported by `b2bscore worker` (kit/jobs.py), which another branch adds; once merged, the
# set can go.
FROM_OTHER_BRANCHES = {"b2bscore_jobs_queue_depth"}
METRIC = re.compile(r"\bb2bscore_[a-z_]+\b")
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name the service's registry can expose."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("b2bscore_"):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def rule_files() -> list[Path]:
    """Every rule file Prometheus loads (rules/*.yml and *.yaml)."""
    return sorted([*RULES_DIR.glob("*.yml"), *RULES_DIR.glob("*.yaml")])


def test_every_rule_file_is_a_well_formed_group_list() -> None:
    for path in rule_files():
        groups = yaml.safe_load(path.read_text())["groups"]
        assert groups, path
        for group in groups:
            assert group["name"], path
            assert group["rules"], path
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert rule["expr"].count("(") == rule["expr"].count(")"), rule
                if "alert" in rule:
                    assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
                    assert rule["annotations"]["summary"], rule["alert"]


def test_the_service_rules_cover_what_operators_asked_for() -> None:
    alerts = {
        r["alert"] for g in yaml.safe_load(SERVICE_RULES.read_text())["groups"] for r in g["rules"]
    }
    assert alerts >= {
        "B2BScoreLatencyBudgetBreached",
        "B2BScoreHigh5xxRate",
        "B2BScoreHigh503Rate",
        "B2BScoreAuditFailures",
        "B2BScoreSourceErrorRate",
    }


def test_service_rules_use_exported_metrics_only() -> None:
    used = set(METRIC.findall(SERVICE_RULES.read_text()))
    assert used
    assert used - exported_series() == set()


def test_the_kubernetes_prometheus_rule_carries_the_same_groups() -> None:
    rule: dict[str, Any] = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(SERVICE_RULES.read_text())


def write_prometheus_rule() -> None:
    """Regenerate deploy/k8s/base/prometheusrule.yaml from the service rules."""
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "b2bscore-service", "labels": {"app.kubernetes.io/name": "b2bscore"}},
        "spec": yaml.safe_load(SERVICE_RULES.read_text()),
    }
    header = PROMETHEUS_RULE.read_text().splitlines(keepends=True)[:2]
    PROMETHEUS_RULE.write_text("".join(header) + yaml.safe_dump(doc, sort_keys=False, width=100))


def dashboard_exprs() -> dict[str, list[str]]:
    """Panel title -> its PromQL expressions."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}


def test_the_dashboard_shows_what_operators_asked_for() -> None:
    exprs = dashboard_exprs()
    joined = {title: " ".join(e) for title, e in exprs.items()}

    def panel_using(*needles: str) -> bool:
        return any(all(n in text for n in needles) for text in joined.values())

    assert panel_using("rate(b2bscore_http_request_duration_seconds_count")  # request rate
    for quantile in ("0.5", "0.95", "0.99"):  # latency percentiles
        assert panel_using(f"histogram_quantile({quantile}", "duration_seconds_bucket")
    assert panel_using("b2bscore_decisions_total", "decision")
    assert panel_using("b2bscore_score_bucket")
    assert panel_using("b2bscore_source_status_total", "source, status")
    assert panel_using("b2bscore_source_duration_seconds_bucket")
    assert panel_using('stage="audit_commit"')
    assert panel_using('status="cached"')
    assert panel_using("b2bscore_jobs_queue_depth")
    budget = next(
        json.loads(DASHBOARD.read_text())["panels"][i]
        for i, title in enumerate(exprs)
        if "500 ms" in title
    )
    steps = budget["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 0.5} in steps


def test_the_dashboard_uses_exported_metrics_only() -> None:
    used = {m for e in dashboard_exprs().values() for text in e for m in METRIC.findall(text)}
    assert used - exported_series() <= FROM_OTHER_BRANCHES


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert datasources[0]["uid"] == "prometheus"
    assert datasources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/b2bscore.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {t["datasource"]["uid"] for p in panels for t in p["targets"]} == {"prometheus"}
