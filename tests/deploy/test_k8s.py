"""The Kubernetes manifests, rendered offline with `kubectl kustomize` and checked as data.

deploy/check (CI) also validates them against the Kubernetes schemas and runs checkov.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (kustomize) is not installed")


def render(overlay: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The overlay's objects, rendered from a copy with its example secret files filled in."""
    tree = tmp_path / "k8s"
    if not tree.exists():
        shutil.copytree(REPO / "deploy/k8s", tree)
        for example in tree.glob("overlays/*/*.env.example"):
            example.with_suffix("").write_text(example.read_text())
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(tree / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=["dev", "prod"])
def objects(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """Every object of one overlay (rendered once per module)."""
    return render(request.param, tmp_path_factory.mktemp(request.param))


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of that kind and name."""
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every Deployment and Job."""
    for o in objects:
        if o["kind"] in {"Deployment", "Job"}:
            yield o["metadata"]["name"], o["spec"]["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions In) selects labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_everything_lives_in_the_overlay_namespace(objects: list[dict[str, Any]]) -> None:
    namespace = find(objects, "Namespace", objects[0]["metadata"]["name"])["metadata"]["name"]
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == namespace, o["metadata"]["name"]


def test_the_api_probes_readiness_and_liveness(objects: list[dict[str, Any]]) -> None:
    api = find(objects, "Deployment", "b2bscore-api")["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"][:2] == ["b2bscore", "serve"]


def test_every_api_pod_publishes_checkpoints_to_one_shared_claim(
    objects: list[dict[str, Any]],
) -> None:
    """An emptyDir per pod would give each pod its own checkpoints, lost with the pod."""
    config = find(objects, "ConfigMap", "b2bscore-config")["data"]
    path = config["B2BSCORE_AUDIT_CHECKPOINT_PATH"]
    claim = find(objects, "PersistentVolumeClaim", "b2bscore-audit-checkpoints")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    api = find(objects, "Deployment", "b2bscore-api")["spec"]["template"]["spec"]
    [volume] = [v for v in api["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in api["containers"][0]["volumeMounts"]}
    assert mounts[volume["name"]] == path


def test_every_container_is_bounded_and_locked_down(objects: list[dict[str, Any]]) -> None:
    for name, template in pod_templates(objects):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_autoscaler_and_disruption_budget_target_the_api(objects: list[dict[str, Any]]) -> None:
    api = find(objects, "Deployment", "b2bscore-api")
    hpa = find(objects, "HorizontalPodAutoscaler", "b2bscore-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "b2bscore-api"
    assert hpa["spec"]["minReplicas"] <= api["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    pdb = find(objects, "PodDisruptionBudget", "b2bscore-api")
    assert selects(pdb["spec"]["selector"], api["spec"]["template"]["metadata"]["labels"])
    if "minAvailable" in pdb["spec"]:  # never a budget that blocks every drain
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_services_and_monitors_reach_pods_by_port_name(objects: list[dict[str, Any]]) -> None:
    templates = dict(pod_templates(objects))
    services = [o for o in objects if o["kind"] == "Service" and o["spec"].get("selector")]
    for service in services:
        chosen = [
            t
            for t in templates.values()
            if selects({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])
        ]
        assert chosen, service["metadata"]["name"]
        ports = {p["name"] for t in chosen for c in t["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]
    monitor = find(objects, "ServiceMonitor", "b2bscore")
    watched = [s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    names = {p["name"] for s in watched for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names
    assert {s["metadata"]["name"] for s in watched} == {"b2bscore-api", "b2bscore-worker-metrics"}


def test_migrations_run_as_the_owner_the_service_as_the_app_role(
    objects: list[dict[str, Any]],
) -> None:
    job = find(objects, "Job", "b2bscore-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "b2bscore-owner"} in [
        e["secretRef"] for e in job["envFrom"] if "secretRef" in e
    ]
    assert "b2bscore db upgrade" in job["command"][-1]
    assert "grant-app-role" in job["command"][-1]
    for name, template in pod_templates(objects):
        if name != "b2bscore-migrate":
            refs = [
                e.get("secretRef", {}).get("name")
                for c in template["spec"]["containers"]
                for e in c.get("envFrom", [])
            ]
            assert "b2bscore-owner" not in refs, name


def test_stores_are_external_services_named_by_configuration(objects: list[dict[str, Any]]) -> None:
    for name in ("b2bscore-postgres", "b2bscore-redis"):
        service = find(objects, "Service", name)
        assert service["spec"]["type"] == "ExternalName"
        # Each overlay names its own host; the base's placeholder never ships.
        assert service["spec"]["externalName"] not in {
            "postgres.example.internal",
            "redis.example.internal",
        }
    config = find(objects, "ConfigMap", "b2bscore-config")["data"]
    assert config["B2BSCORE_REDIS_URL"].startswith("redis://b2bscore-redis:")


def test_network_policies_deny_by_default(objects: list[dict[str, Any]]) -> None:
    deny = find(objects, "NetworkPolicy", "b2bscore-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    templates = dict(pod_templates(objects))
    for name, template in templates.items():
        assert selects(deny["podSelector"], template["metadata"]["labels"]), name


def test_production_commits_no_secret(tmp_path: Path) -> None:
    assert not [o for o in render("prod", tmp_path) if o["kind"] == "Secret"]
