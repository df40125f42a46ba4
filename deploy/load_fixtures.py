"""Load the project's FHIR test fixtures into any FHIR R4 server, with stable ids and current dates.

    python deploy/load_fixtures.py --base http://127.0.0.1:8081/fhir [--token T] [--as-of DATE | --keep-dates]
                                   [files...]

Default: every synthetic bundle under ``tests/fixtures/fhir-data/`` and every calcinosis fixture under
``tests/fixtures/calcinosis/``. Each transaction Bundle is rewritten from ``POST`` to ``PUT <Type>/<id>``
(the resource's own id, or the uuid of its ``urn:uuid:`` fullUrl) and its ``urn:uuid:`` references are
rewritten to ``<Type>/<id>``, as ``shared/engineering/sandbox-fhir-server.md`` §4 and
``shared/fhir-data/README.md`` describe. Loading twice creates no duplicates.

Dates: the fixtures are written relative to ``FIXTURE_DATE`` (2026-11-21). Every FHIR date, dateTime and
instant (birth dates too, so ages stay the same) is moved by the whole days between that date and the load
date, so a sandbox loaded today shows labs from last week, not from a year ago, and the service's look-back
windows see the same data whenever it is loaded. ``--as-of`` loads as of another day, ``--keep-dates``
as written.

The integration tests import :func:`load_files` from here (tests may import deploy, never the reverse).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "FIXTURE_DATE",
    "LoadedBundle",
    "days_since_fixture_date",
    "default_fixture_files",
    "load_bundle",
    "load_files",
    "main",
    "rewrite_to_put",
    "shift_dates",
]

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIRS = (ROOT / "tests" / "fixtures" / "fhir-data", ROOT / "tests" / "fixtures" / "calcinosis")
_FHIR_JSON = "application/fhir+json"
# The day the fixtures' dates are written relative to (tests/fixtures/calcinosis/README.md; the tests' clock).
FIXTURE_DATE = date(2026, 11, 21)
# FHIR date (YYYY, YYYY-MM, YYYY-MM-DD), dateTime and instant; the time and offset are kept as written.
_DATE_VALUE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")
# Elements that hold such values in R4: *Date, *DateTime, *Instant (value[x], onset[x], effective[x], ...)
# and the plain names below (Period.start/end, Observation.issued, MedicationRequest.authoredOn, ...).
_DATE_ELEMENTS = frozenset({"start", "end", "issued", "authoredOn", "date", "recorded", "lastUpdated",
                            "created", "occurrence", "dateWritten", "whenHandedOver", "whenPrepared"})


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


def _is_date_element(name: str) -> bool:
    return name in _DATE_ELEMENTS or name.endswith(("Date", "DateTime", "Instant"))


def _shift_value(value: str, days: int) -> str:
    match = _DATE_VALUE.match(value)
    if match is None:
        return value
    year, month, day, time = match.groups()
    if day is not None:
        moved = date(int(year), int(month), int(day)) + timedelta(days=days)
        return moved.isoformat() + (time or "")
    # A partial date keeps its precision: moved by the nearest whole months (or years).
    months = round(days / 30.4375)
    if month is not None:
        index = int(year) * 12 + int(month) - 1 + months
        return f"{index // 12:04d}-{index % 12 + 1:02d}"
    return f"{int(year) + round(months / 12):04d}"


def shift_dates(node: Any, days: int) -> Any:
    """A copy of ``node`` with every FHIR date, dateTime and instant element moved by ``days`` whole days.

    Only date elements are touched (by name, and only values shaped like FHIR dates): codes, ids, references
    and quantities never change, whatever they look like.
    """
    if isinstance(node, dict):
        return {
            name: _shift_value(value, days) if isinstance(value, str) and _is_date_element(name)
            else shift_dates(value, days)
            for name, value in node.items()
        }
    if isinstance(node, list):
        return [shift_dates(item, days) for item in node]
    return node


def days_since_fixture_date(as_of: date | None) -> int:
    """Whole days from ``FIXTURE_DATE`` to ``as_of``; 0 (dates as written) when ``as_of`` is None."""
    return 0 if as_of is None else (as_of - FIXTURE_DATE).days


def rewrite_to_put(bundle: dict[str, Any]) -> dict[str, Any]:
    """A copy of a transaction Bundle whose entries are ``PUT <Type>/<id>`` with references to match."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in {"transaction", "batch"}:
        raise ValueError("not a transaction or batch Bundle")
    # A Bundle is JSON: a JSON round trip copies it several times faster than deepcopy (population test).
    rewritten: dict[str, Any] = json.loads(json.dumps(bundle))
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
    base: str,
    files: Iterable[Path] | None = None,
    *,
    as_of: date | None,
    token: str | None = None,
    timeout_s: float = 120.0,
) -> list[LoadedBundle]:
    """Load bundles (default: every fixture) into the FHIR server at ``base``; one transaction per file.

    ``as_of``: the day the data should look current on (dates moved from ``FIXTURE_DATE``); None keeps them.
    """
    loaded: list[LoadedBundle] = []
    days = days_since_fixture_date(as_of)
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        for path in files if files is not None else default_fixture_files():
            bundle = rewrite_to_put(shift_dates(json.loads(Path(path).read_text(encoding="utf-8")), days))
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
    dates = parser.add_mutually_exclusive_group()
    dates.add_argument("--as-of", type=date.fromisoformat, help="make the data current as of this day "
                       "(YYYY-MM-DD; default: today, UTC)")
    dates.add_argument("--keep-dates", action="store_true", help=f"load the dates as written ({FIXTURE_DATE})")
    parser.add_argument("files", nargs="*", type=Path, help="transaction Bundles (default: all fixtures)")
    args = parser.parse_args(argv)
    files = args.files or default_fixture_files()
    if not files:
        parser.error("no fixture files found under tests/fixtures/")
    as_of = None if args.keep_dates else args.as_of or datetime.now(UTC).date()
    try:
        loaded = load_files(args.base, files, as_of=as_of, token=args.token)
    except httpx.HTTPStatusError as exc:
        print(f"load failed: HTTP {exc.response.status_code} from the FHIR server", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"load failed: {type(exc).__name__} (is the server up at {args.base}?)", file=sys.stderr)
        return 1
    print(f"dates moved by {days_since_fixture_date(as_of)} day(s) from {FIXTURE_DATE} (current as of "
          f"{as_of or FIXTURE_DATE})")
    for item in loaded:
        print(f"{item.status} {item.path.name}: Patient/{', Patient/'.join(item.patient_ids) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
