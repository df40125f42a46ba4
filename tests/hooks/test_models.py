"""Each CDS Hooks 2.0 response rule refuses a violating card (hooks/models.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from hooks.models import Action, Card, CdsResponse, FeedbackRequest
from tests.conftest import load_fixture

GOOD: dict[str, Any] = {
    "uuid": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
    "summary": "Example",
    "indicator": "warning",
    "source": {"label": "Calcinosis CDS"},
    "suggestions": [{"label": "Order PTH", "uuid": "s1", "actions": [
        {"type": "create", "description": "Order", "resource": {"resourceType": "ServiceRequest"}}]}],
    "selectionBehavior": "any",
    "overrideReasons": [{"system": "urn:x", "code": "a", "display": "Already addressed"}],
    "links": [{"label": "App", "url": "https://smart.example.com/launch", "type": "smart", "appContext": "{}"}],
}


def test_a_conformant_card_is_accepted() -> None:
    Card.model_validate(GOOD)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(("summary",), "x" * 140, id="summary-140-characters"),
        pytest.param(("indicator",), "hard-stop", id="indicator-outside-enum"),
        pytest.param(("source", "label"), None, id="source-label-missing"),
        pytest.param(("selectionBehavior",), None, id="suggestions-without-selectionBehavior"),
        pytest.param(("selectionBehavior",), "all", id="selectionBehavior-outside-enum"),
        pytest.param(("overrideReasons", 0, "display"), None, id="overrideReason-without-display"),
        pytest.param(("links", 0, "type"), "absolute", id="appContext-on-absolute-link"),
        pytest.param(("detail",), "", id="empty-string-optional"),
        pytest.param(("links",), [], id="empty-list-optional"),
        pytest.param(("extension",), {}, id="empty-object-optional"),
        pytest.param(("suggestions", 0, "actions", 0, "resource"), None, id="create-action-without-resource"),
        pytest.param(("unknownField",), "x", id="unknown-field"),
    ],
)
def test_violating_card_is_refused(path: tuple[str | int, ...], value: Any) -> None:
    card = copy.deepcopy(GOOD)
    target: Any = card
    for step in path[:-1]:
        target = target[step]
    if value is None:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    with pytest.raises(ValidationError):
        Card.model_validate(card)


def test_summary_of_139_characters_is_the_longest_accepted() -> None:
    Card.model_validate({**GOOD, "summary": "x" * 139})


def test_several_recommended_suggestions_need_selection_any() -> None:
    card = copy.deepcopy(GOOD)
    card["suggestions"] = [{"label": "a", "isRecommended": True}, {"label": "b", "isRecommended": True}]
    card["selectionBehavior"] = "at-most-one"
    with pytest.raises(ValidationError):
        Card.model_validate(card)


def test_delete_action_needs_resource_id() -> None:
    with pytest.raises(ValidationError):
        Action.model_validate({"type": "delete", "description": "Remove"})
    Action.model_validate(load_fixture("cds-hooks-examples/spec-2.0.1/action-delete.json"))


def _no_null_or_empty(node: Any, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None or (isinstance(value, str | list | dict) and len(value) == 0 and key != "cards"):
                problems.append(f"{path}.{key}")
            problems += _no_null_or_empty(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems += _no_null_or_empty(value, f"{path}[{index}]")
    return problems


def test_serialised_response_omits_every_optional_field_left_unset() -> None:
    response = CdsResponse(cards=[Card(summary="s", indicator="info", source={"label": "x"})])  # type: ignore[arg-type]
    payload = response.to_json()
    assert payload == {"cards": [{"summary": "s", "indicator": "info", "source": {"label": "x"}}]}
    assert _no_null_or_empty(payload) == []


def test_spec_and_inferno_example_cards() -> None:
    for card in load_fixture("cds-hooks-examples/inferno-crd-test-kit/valid_cards.json"):
        Card.model_validate(card)
    CdsResponse.model_validate(load_fixture("cds-hooks-examples/spec-2.0.1/response-cards-links-overrideReasons.json"))
    CdsResponse.model_validate(load_fixture("cds-hooks-examples/spec-2.0.1/response-empty-cards.json"))
    # The spec's own examples that omit REQUIRED fields are refused (card indicator; action description).
    with pytest.raises(ValidationError):
        CdsResponse.model_validate(load_fixture("cds-hooks-examples/spec-2.0.1/response-autolaunchable.json"))
    with pytest.raises(ValidationError):
        CdsResponse.model_validate(load_fixture("cds-hooks-examples/spec-2.0.1/response-systemActions.json"))


def test_feedback_model_accepts_vendor_extras() -> None:
    body = load_fixture("cds-hooks-examples/spec-2.0.1/feedback-overridden-with-reason.json")
    body["feedback"][0]["overrideReasons"] = [{"code": "x"}]  # Epic's plural field
    FeedbackRequest.model_validate(body)
