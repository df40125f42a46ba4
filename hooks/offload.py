"""CPU-bound work of a call (parsing a large body, mapping and assessing) off the event loop, within a budget.

Issue 16 item 5: three 9.5 MiB keys took 2.2 s of event-loop time, stalling ``/healthz`` and every other call.
The work runs on the runtime's worker threads; the call waits for it at most ``budget_s`` and is then answered
503 (audited by the caller) while the worker finishes on its own. The pool's size bounds the CPU taken at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from hooks.errors import ServiceUnavailable

__all__ = ["run_off_loop"]

ResultT = TypeVar("ResultT")


async def run_off_loop(
    executor: Executor | None, budget_s: float, what: str, function: Callable[[], ResultT]
) -> ResultT:
    """``function()`` on ``executor`` (the loop's default one when None); ServiceUnavailable past ``budget_s``.

    A worker cannot be interrupted: past the budget its result is dropped (a call still queued never starts).
    """
    future = asyncio.get_running_loop().run_in_executor(executor, function)
    try:
        # asyncio.timeout, not wait_for: the same cancellation at the budget without a waiter future per call.
        async with asyncio.timeout(budget_s):
            return await future
    except TimeoutError:
        raise ServiceUnavailable(
            f"{what} did not finish within {budget_s:g} s; retry later", failure="work-budget-exceeded"
        ) from None
