"""The deployment's front door (deploy/proxy/) keeps /metrics internal: through nginx it is a 404
OperationOutcome, on the service port Prometheus still scrapes it (docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.deploy.proxy import deployed


def test_metrics_are_not_served_through_the_proxy(tmp_path: Path) -> None:
    with deployed(tmp_path, max_conn_per_client=8) as deployment:
        outside = httpx.get(f"{deployment.url}/metrics", timeout=5)
        inside = httpx.get(f"{deployment.service_url}/metrics", timeout=5)
        calls = httpx.get(f"{deployment.url}/cds-services", timeout=5)
    assert outside.status_code == 404
    assert outside.json()["resourceType"] == "OperationOutcome"
    assert "cds_" not in outside.text
    assert inside.status_code == 200
    assert "cds_requests_total" in inside.text
    assert calls.status_code == 200  # the CDS Hooks paths still pass
