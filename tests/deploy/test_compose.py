"""deploy/compose.yaml and deploy/.env.example: valid against the compose-spec JSON schema (vendored,
offline), and consistent with each other and with the settings: two profiles, every CDS_* name a real
setting, pinned images, loopback-only ports, hardened cds containers, files that exist."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from hooks.settings import Settings
from tests.deploy.container import DEPLOY, ROOT, compose, read_env_file

SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json").read_text(encoding="utf-8"))
CDS_SERVICES = {"sandbox": "cds-sandbox", "production": "cds"}


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert _errors(compose()) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(("services", "cds", "ports"), "127.0.0.1:8080:8080", id="ports-not-a-list"),
        pytest.param(("services", "cds", "enviroment"), {"A": "1"}, id="typo-in-a-key"),
        pytest.param(("services", "cds", "depends_on"), {"fhir": {"condition": "whenever"}}, id="bad-condition"),
    ],
)
def test_the_schema_check_catches_mistakes(path: tuple[str, ...], value: object) -> None:
    broken = copy.deepcopy(compose())
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _errors(broken)


def test_each_profile_has_exactly_one_cds_service() -> None:
    services = compose()["services"]
    for profile, name in CDS_SERVICES.items():
        in_profile = [n for n, s in services.items() if profile in s.get("profiles", ()) and n.startswith("cds")]
        assert in_profile == [name]
    assert all(service.get("profiles") for service in services.values()), "nothing starts without --profile"


def test_every_cds_variable_is_a_setting() -> None:
    """A misspelt variable would be silently ignored (the settings ignore unknown names)."""
    fields = {f"CDS_{name.upper()}" for name in Settings.model_fields}
    example = read_env_file(DEPLOY / ".env.example")
    assert set(example) <= fields, sorted(set(example) - fields)
    for name in CDS_SERVICES.values():
        environment = compose()["services"][name]["environment"]
        assert set(environment) <= fields, sorted(set(environment) - fields)
    # Commented-out examples too.
    commented = {line.lstrip("# ").split("=", 1)[0] for line in (DEPLOY / ".env.example").read_text().splitlines()
                 if line.startswith("# CDS_")}
    assert commented <= fields


def test_the_profiles_say_what_they_are() -> None:
    services = compose()["services"]
    sandbox, production = services["cds-sandbox"]["environment"], services["cds"]["environment"]
    assert sandbox["CDS_ENVIRONMENT"] == "test"
    assert sandbox["CDS_FHIR_ALLOW_LOOPBACK_HTTP"] == "true"
    assert sandbox["CDS_TRUST_FILE"] == "/config/trust.sandbox.yaml"
    assert production["CDS_ENVIRONMENT"] == "production"
    assert production["CDS_FHIR_ALLOW_LOOPBACK_HTTP"] == "false"
    example = read_env_file(DEPLOY / ".env.example")
    assert example["CDS_PUBLIC_BASE_URL"].startswith("https://"), "production needs the https URL"
    assert example["CDS_AUDIT_KEY"] == "", "the secret is never shipped filled in"
    assert "CDS_ENVIRONMENT" not in example, "each profile sets its own mode"


def test_images_are_pinned_and_ports_stay_on_loopback() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image, f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
        for port in service.get("ports", ()):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


@pytest.mark.parametrize("name", sorted(CDS_SERVICES.values()))
def test_cds_containers_are_hardened_and_mount_what_exists(name: str) -> None:
    service = compose()["services"][name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["tmpfs"] == ["/tmp"]  # noqa: S108 (the container's own tmpfs)
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    (env_file,) = service["env_file"]
    assert env_file == {"path": ".env", "required": True}
    assert (DEPLOY / ".env.example").is_file()
    mounts = dict(volume.split(":", 1) for volume in service["volumes"])
    assert mounts["./config"] == "/config:ro"
    assert (DEPLOY / "config").is_dir()
    data = next(source for source, target in mounts.items() if target == "/data")
    assert data in compose()["volumes"], "the audit trail lives on a named volume"


def test_the_sandbox_trust_file_is_shipped_and_loads() -> None:
    from hooks.auth.trust import load_trust_file

    path = DEPLOY / "config" / Path(compose()["services"]["cds-sandbox"]["environment"]["CDS_TRUST_FILE"]).name
    trust = load_trust_file(path, environment="test")
    assert list(trust.issuers) == ["https://sandbox.cds-hooks.org"]
