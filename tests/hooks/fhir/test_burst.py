"""Issue 16 item 1: a burst against a FHIR server that never answers must not break the fallback for later calls.

Real sockets on loopback (no mocks): one server accepts connections and never answers, another answers at once.
64 callers, each naming a different ``fhirServer`` path under the allowed prefix, hammer the hanging server
with four concurrent queries per call (a patient-view fallback) for a bounded time; afterwards a healthy
server answers at once, and the hanging origin, once healthy again, does too (no leaked pool slot).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hooks.fhir_client import HttpxFhirFetcher
from tests.conftest import test_settings as settings_for
from tests.support.loopback_fhir import LoopbackFhir

BURST_S = 2.5
CALLERS = 64


async def _call(fetcher: HttpxFhirFetcher, base: str, deadline_s: float) -> list[bool]:
    deadline = time.monotonic() + deadline_s
    results = await asyncio.gather(*(
        fetcher.fetch(key=f"k{n}", fhir_server=base, query="Patient/p1", access_token=None,
                      deadline=deadline, allowed_bases=tuple(fetcher.settings.fhir_allowed_bases))
        for n in range(4)
    ))
    return [r.resources is not None for r in results]


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_fallback_survives_a_burst_against_a_hanging_server() -> None:
    async with LoopbackFhir().running() as hanging, LoopbackFhir(hang=False).running() as healthy:
        hanging_prefix = f"http://127.0.0.1:{hanging.port}/fhir"
        healthy_base = f"http://127.0.0.1:{healthy.port}/fhir"
        settings = settings_for(
            fhir_allowed_bases=[hanging_prefix, healthy_base], fhir_allow_loopback_http=True,
            fhir_search_count=0, fhir_deadline_s=0.3, fhir_request_timeout_s=0.25, fhir_breaker_reset_s=0.5,
        )
        fetcher = HttpxFhirFetcher(settings)
        try:
            stop_at = time.monotonic() + BURST_S
            counter = iter(range(10**9))

            async def caller() -> None:
                while time.monotonic() < stop_at:
                    # A different path under the allowed prefix on every call.
                    await _call(fetcher, f"{hanging_prefix}/tenant-{next(counter)}", 0.3)

            await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(CALLERS))), BURST_S + 5)

            started = time.monotonic()
            assert await _call(fetcher, f"{healthy_base}", 1.0) == [True] * 4
            assert time.monotonic() - started < 0.5

            # The hanging origin recovers: after the breaker's reset it answers again, on a new path too.
            hanging.hang = False
            await asyncio.sleep(settings.fhir_breaker_reset_s + 0.1)
            recovered = False
            for _ in range(10):
                if all(await _call(fetcher, f"{hanging_prefix}/tenant-new", 1.0)):
                    recovered = True
                    break
                await asyncio.sleep(0.2)
            assert recovered
        finally:
            await fetcher.aclose()
