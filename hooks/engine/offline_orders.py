"""``calcinosis-cds assess BUNDLE --hook order-sign --draft-orders FILE``: the order checks offline (issue 15).

``BUNDLE`` is the patient's record as for patient-view; ``FILE`` is the ``draftOrders`` Bundle (or a whole
CDS Hooks request or ``context`` holding one). For ``--hook order-select``, ``--selections`` lists the
``Type/id`` of the selected drafts (default: every draft). The cards are printed exactly as the service
would return them, before the links the service adds.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from hooks.engine.offline import bundle_patient, parse_now
from hooks.engine.order_service import assess_orders, read_orders
from hooks.errors import CdsError
from hooks.models import CdsResponse

__all__ = ["assess_orders_file"]


def _draft_orders(document: Any) -> Any:
    """The Bundle itself, or the ``draftOrders`` of a request or of its ``context``."""
    if isinstance(document, dict) and document.get("resourceType") != "Bundle":
        context = document.get("context", document)
        if isinstance(context, dict) and "draftOrders" in context:
            return context["draftOrders"]
    return document


def assess_orders_file(path: str, draft_orders: str, *, hook: str, selections: list[str] | None, now: str | None,
                       locale: str, out: TextIO) -> int:
    raw = Path(path).read_bytes()
    drafts_raw = Path(draft_orders).read_bytes()
    try:
        when = parse_now(now)
        patient_id, resources, aliases = bundle_patient(orjson.loads(raw))
        bundle = _draft_orders(orjson.loads(drafts_raw))
    except (orjson.JSONDecodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        print("error: --draft-orders is not a FHIR Bundle (nor a request holding context.draftOrders)",
              file=sys.stderr)
        return 2
    try:
        to_check, every = read_orders(hook, {"patientId": patient_id, "draftOrders": bundle,
                                             "selections": selections or []}, ("en", "fr"))
        if hook == "order-select" and not selections:
            to_check = every
        cards, _ = assess_orders(resources, patient_id=patient_id, to_check=to_check, all_drafts=every, now=when,
                                 locale=locale, seed=hashlib.sha256(raw + b"\0" + drafts_raw).hexdigest(),
                                 patient_aliases=aliases)
    except CdsError as exc:
        print(f"error: {exc.diagnostics}", file=sys.stderr)
        return 2
    out.write(orjson.dumps(CdsResponse(cards=cards).to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
