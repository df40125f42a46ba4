"""Issue 15: the knowledge browser lists the order checks with their citations, in both languages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hooks.engine.order_knowledge import load_order_checks


async def test_the_browser_lists_every_order_check_with_its_citation(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        english = (await client.get("/knowledge?lang=en")).text
        french = (await client.get("/knowledge?lang=fr")).text
    assert "Order checks (order-select, order-sign)" in english
    assert "Contrôles à la prescription" in french
    for check in load_order_checks().checks:
        assert f"<code>{check.id}</code>" in english, check.id
    assert "addendum S28 (a) [R26]" in english  # the neonatal check's basis
    assert "Problems raised by the use of tetracyclines" in english  # a citation only the order checks use
