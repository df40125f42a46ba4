"""Load the project's FHIR test fixtures into any FHIR R4 server, with stable ids.

    python deploy/load_fixtures.py --base http://127.0.0.1:8081/fhir [--token T] [files...]

Default: every synthetic bundle under ``tests/fixtures/fhir-data/`` and every calcinosis fixture under
``tests/fixtures/calcinosis/``. Each transaction Bundle is rewritten from ``POST`` to ``PUT <Type>/<id>``
(the resource's own id, or the uuid of its ``urn:uuid:`` fullUrl) and its ``urn:uuid:`` references are
rewritten to ``<Type>/<id>``, as ``shared/engineering/sandbox-fhir-server.md`` §4 and
``shared/fhir-data/README.md`` describe. Loading twice creates no duplicates.

The integration tests import :func:`load_files` from here (tests may import deploy, never the reverse).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["LoadedBundle", "default_fixture_files", "load_bundle", "load_files", "main", "rewrite_to_put"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIRS = (ROOT / "tests" / "fixtures" / "fhir-data", ROOT / "tests" / "fixtures" / "calcinosis")
_FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class LoadedBundle:
    path: Path
    # The transaction Bundle as sent (PUT form): also what a test builds its full prefetch from.
    bundle: dict[str, Any]
    patient_ids: tuple[str, ...]
    status: int


def default_fixture_files() -> list[Path]:
    """Every fixture bundle, synthetic data first, in a stable order."""
    return [path for folder in FIXTURE_DIRS if folder.is_dir() for path in sorted(folder.rglob("*.json"))]


def rewrite_to_put(bundle: dict[str, Any]) -> dict[str, Any]:
    """A copy of a transaction Bundle whose entries are ``PUT <Type>/<id>`` with references to match."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in {"transaction", "batch"}:
        raise ValueError("not a transaction or batch Bundle")
    rewritten = copy.deepcopy(bundle)
    targets: dict[str, str] = {}
    for entry in rewritten.get("entry") or ():
        resource = entry.get("resource") or {}
        kind = resource.get("resourceType")
        full_url = str(entry.get("fullUrl") or "")
        ident = resource.get("id") or (full_url.removeprefix("urn:uuid:") if full_url.startswith("urn:uuid:") else None)
        if not kind or not ident:
            raise ValueError(f"entry {full_url or '?'} has neither an id nor a urn:uuid fullUrl")
        resource["id"] = ident
        entry["request"] = {"method": "PUT", "url": f"{kind}/{ident}"}
        if full_url:
            targets[full_url] = f"{kind}/{ident}"
    _rewrite_references(rewritten, targets)
    return rewritten


def _rewrite_references(node: Any, targets: dict[str, str]) -> None:
    # References by urn:uuid resolve only inside a transaction; Type/id ones resolve on any server.
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "reference" and isinstance(value, str) and value in targets:
                node[name] = targets[value]
            else:
                _rewrite_references(value, targets)
    elif isinstance(node, list):
        for item in node:
            _rewrite_references(item, targets)


def load_bundle(client: httpx.Client, base: str, bundle: dict[str, Any], *, token: str | None = None) -> int:
    """POST one transaction Bundle to the server base; raises ``httpx.HTTPStatusError`` unless 2xx."""
    headers = {"Content-Type": _FHIR_JSON, "Accept": _FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = client.post(base.rstrip("/"), content=json.dumps(bundle).encode(), headers=headers)
    response.raise_for_status()
    return response.status_code


def load_files(
    base: str, files: Iterable[Path] | None = None, *, token: str | None = None, timeout_s: float = 120.0
) -> list[LoadedBundle]:
    """Load bundles (default: every fixture) into the FHIR server at ``base``; one transaction per file."""
    loaded: list[LoadedBundle] = []
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        for path in files if files is not None else default_fixture_files():
            bundle = rewrite_to_put(json.loads(Path(path).read_text(encoding="utf-8")))
            status = load_bundle(client, base, bundle, token=token)
            patients = tuple(
                entry["resource"]["id"]
                for entry in bundle.get("entry") or ()
                if entry["resource"].get("resourceType") == "Patient"
            )
            loaded.append(LoadedBundle(Path(path), bundle, patients, status))
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8081/fhir")
    parser.add_argument("--token", help="bearer token, when the server requires one")
    parser.add_argument("files", nargs="*", type=Path, help="transaction Bundles (default: all fixtures)")
    args = parser.parse_args(argv)
    files = args.files or default_fixture_files()
    if not files:
        parser.error("no fixture files found under tests/fixtures/")
    try:
        loaded = load_files(args.base, files, token=args.token)
    except httpx.HTTPStatusError as exc:
        print(f"load failed: HTTP {exc.response.status_code} from the FHIR server", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"load failed: {type(exc).__name__} (is the server up at {args.base}?)", file=sys.stderr)
        return 1
    for item in loaded:
        print(f"{item.status} {item.path.name}: Patient/{', Patient/'.join(item.patient_ids) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
