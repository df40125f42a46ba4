"""deploy/k8s/: every manifest is valid for a pinned Kubernetes version (kubernetes-validate, strict, offline
schemas), and the set is consistent: selectors that select, probes on real paths, the image's user and port,
the settings production accepts, secrets by reference, only the CDS Hooks paths on the Ingress."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hooks.app import create_app
from hooks.settings import Settings
from tests.deploy.container import DEPLOY, Dockerfile

K8S_VERSION = "1.33.0"  # the oldest Kubernetes release still maintained upstream when this was written
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text(encoding="utf-8"))
    return document


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    return labels


def _container() -> dict[str, Any]:
    (container,) = _load("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_is_valid_for_the_pinned_kubernetes_version(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        pytest.param({"runAsNonroot": True}, ("spec", "template", "spec", "securityContext"), id="typo"),
        pytest.param({"replicas": "two"}, ("spec",), id="wrong-type"),
    ],
)
def test_strict_validation_catches_mistakes(change: dict[str, Any], path: tuple[str, ...]) -> None:
    broken = copy.deepcopy(_load("deployment.yaml"))
    node = broken
    for key in path:
        node = node[key]
    node.update(change)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(_load("kustomization.yaml")["resources"])
    assert listed == {p.name for p in MANIFESTS} - {"secret.example.yaml"}


def test_the_pods_are_hardened_and_run_as_the_image_user() -> None:
    pod = _load("deployment.yaml")["spec"]["template"]["spec"]
    uid, _, gid = (Dockerfile(DEPLOY / "Dockerfile").stage().last("USER") or "").partition(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = _container()["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    resources = _container()["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    # With a read-only root the service may write only into its volumes.
    assert {m["mountPath"] for m in _container()["volumeMounts"]} == {"/config", "/data", "/tmp"}  # noqa: S108


def test_probes_hit_real_endpoints_on_the_image_port() -> None:
    routes = {route.path for route in create_app(Settings(environment="development")).routes}  # type: ignore[attr-defined]
    container = _container()
    (port,) = container["ports"]
    exposed = Dockerfile(DEPLOY / "Dockerfile").stage().all("EXPOSE")
    assert [str(port["containerPort"])] == exposed
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["port"] == port["name"]
        assert http["path"] in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # ready only with the audit store
    annotations = _load("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes


def test_selectors_select_the_pods() -> None:
    labels = _pod_labels()
    deployment = _load("deployment.yaml")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _load("service.yaml")["spec"]["selector"].items() <= labels.items()
    assert _load("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _load("networkpolicy.yaml")["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    target = _load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert _load("hpa.yaml")["spec"]["minReplicas"] >= 2
    assert _load("pdb.yaml")["spec"]["minAvailable"] < _load("hpa.yaml")["spec"]["minReplicas"]


def test_the_ingress_exposes_only_the_cds_hooks_paths_over_tls() -> None:
    ingress = _load("ingress.yaml")["spec"]
    (rule,) = ingress["rules"]
    # The CDS Hooks endpoints, and the assessment page every card links to (issue 12); nothing else.
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/cds-services", "Prefix"),
                                                                           ("/assessment/", "Prefix")]
    assert ingress["tls"][0]["hosts"] == [rule["host"]]
    assert _load("configmap.yaml")["data"]["CDS_PUBLIC_BASE_URL"] == f"https://{rule['host']}"
    for path in rule["http"]["paths"]:
        assert path["backend"]["service"]["name"] == _load("service.yaml")["metadata"]["name"]


def test_the_configuration_is_what_production_accepts() -> None:
    """ConfigMap + the Secret's keys, as the pod's environment: the settings load and pass the production
    checks, PostgreSQL is the store (several replicas), and every secret is a reference."""
    data = _load("configmap.yaml")["data"]
    fields = {f"CDS_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, sorted(set(data) - fields)
    secret = _load("secret.example.yaml")
    references = {env["name"]: env["valueFrom"]["secretKeyRef"] for env in _container()["env"]}
    assert set(references) == {"CDS_AUDIT_KEY", "CDS_AUDIT_DSN"}
    for reference in references.values():
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
    assert not {"CDS_AUDIT_KEY", "CDS_AUDIT_DSN"} & set(data), "secrets never in the ConfigMap"
    (trust,) = [v for v in _load("deployment.yaml")["spec"]["template"]["spec"]["volumes"] if v["name"] == "trust"]
    assert trust["secret"]["secretName"] == secret["metadata"]["name"]
    assert data["CDS_TRUST_FILE"] == "/config/" + trust["secret"]["items"][0]["path"]
    environment = {**data, **{name: secret["stringData"][ref["key"]] for name, ref in references.items()}}
    settings = Settings(**{name.removeprefix("CDS_").lower(): value for name, value in environment.items()})
    settings.check_service()
    assert settings.environment == "production"
    assert (settings.audit_dsn or "").startswith("postgresql://")
    from hooks.auth.trust import parse_trust

    assert parse_trust(yaml.safe_load(secret["stringData"]["trust.yaml"]), environment="production").issuers
