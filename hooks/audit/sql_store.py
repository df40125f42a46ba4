"""``SqlAuditStore``: the service's ``AuditStore``, an ``AuditLog`` behind one dedicated worker thread.

Every call is bounded: the backends give up a lock wait after about 2 s, ``SqlAuditStore`` answers
``AuditError`` (the app's 503) after its budget (3 s by default) and refuses new calls beyond a queue
limit. A record committed after its caller gave up is "audited but not sent", the safe direction.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from hooks.audit.chain import ChainVerdict
from hooks.audit.records import FeedbackRecord, HookCallRecord
from hooks.audit.sql import AuditLog
from hooks.audit.store import AuditError, FeedbackResult

__all__ = ["DEFAULT_MAX_PENDING", "DEFAULT_TIMEOUT_S", "SqlAuditStore"]

log = logging.getLogger("hooks.audit")

# Budget of one store call as the service sees it: shorter than an EHR's own timeout (typically 5-10 s),
# so the EHR gets our 503 rather than its own timeout.
DEFAULT_TIMEOUT_S = 3.0
# Calls waiting for the worker thread beyond this are refused at once (AuditError) instead of queueing.
DEFAULT_MAX_PENDING = 64
# Opening may migrate the schema, which waits for other instances doing the same.
_OPEN_TIMEOUT_S = 60.0
T = TypeVar("T")


@dataclass(eq=False, slots=True)
class _Waiting:
    record: HookCallRecord
    done: asyncio.Future[int]


class SqlAuditStore:
    """The ``AuditStore`` the service uses: an ``AuditLog`` behind one dedicated worker thread.

    One thread, not a pool: appends are serialised by the chain lock anyway, and a single thread keeps
    the sqlite3/psycopg connection on the thread that uses it. Every call is bounded by ``timeout_s``
    (``AuditError`` after it; a call still queued then never runs) and at most ``max_pending`` calls may
    wait for the thread. ``ping`` runs ``AuditLog.probe`` on a thread and connection of its own, so a stuck
    append never makes /readyz hang, and it fails while the writer has been stuck longer than the budget.
    """

    def __init__(self, log: AuditLog, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if timeout_s <= 0 or max_pending < 1:
            raise ValueError("timeout_s must be positive and max_pending at least 1")
        self.log = log
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._executor: ThreadPoolExecutor | None = None
        self._pinger: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._busy_since: float | None = None
        # Group commit: appends waiting for the next batch, and the task committing batches while any wait.
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    def _call(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._busy_since = time.monotonic()
        try:
            return function(*args)
        finally:
            self._busy_since = None

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    def _admit(self, what: str) -> None:
        with self._lock:
            if self._pending >= self.max_pending:
                log.error("audit queue full (%d calls waiting): refusing %s", self._pending, what)
                raise AuditError(f"the audit store has {self._pending} calls waiting; refusing more")
            self._pending += 1

    async def _run(self, function: Callable[..., T], *args: Any, budget_s: float | None = None,
                   admitted: bool = False) -> T:
        """``admitted``: the caller already counted itself in ``_pending`` (a group-commit batch)."""
        executor = self._executor
        if executor is None:
            raise AuditError("the audit store is not open")
        if not admitted:
            self._admit(function.__name__)
        try:
            future = executor.submit(self._call, function, args)
        except RuntimeError:  # shut down meanwhile
            if not admitted:
                with self._lock:
                    self._pending -= 1
            raise AuditError("the audit store is not open") from None
        if not admitted:
            future.add_done_callback(self._done)
        budget = self.timeout_s if budget_s is None else budget_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except TimeoutError:
            future.cancel()  # still queued: it will not run; already running: it may commit late (not sent)
            log.error("audit %s did not finish within %.1f s", function.__name__, budget)
            raise AuditError(f"audit {function.__name__} did not finish within {budget:g} s") from None

    def _open_and_check(self) -> None:
        self.log.open()
        try:
            self.log.check_head()
        except BaseException:
            self.log.close()
            raise

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audit-{self.log.backend}")
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audit-ping-{self.log.backend}")
        try:
            await self._run(self._open_and_check, budget_s=max(self.timeout_s, _OPEN_TIMEOUT_S))
        except BaseException:
            self._shutdown(wait=False)
            raise

    def _shutdown(self, *, wait: bool) -> None:
        for executor in (self._executor, self._pinger):
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=True)
        self._executor = self._pinger = None

    def _checkpoint_and_close(self) -> None:
        try:
            self.log.checkpoint()
        except AuditError:
            pass  # already logged; the chain check at the next start reports the cause
        finally:
            self.log.close()

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._checkpoint_and_close)
        except AuditError:
            log.error("audit store did not close cleanly within %.1f s", self.timeout_s)
            self._shutdown(wait=False)
            return
        self._shutdown(wait=True)

    async def ping(self) -> None:
        busy_since, pinger = self._busy_since, self._pinger
        if pinger is None:
            raise AuditError("the audit store is not open")
        if busy_since is not None and time.monotonic() - busy_since > self.timeout_s:
            raise AuditError(f"the audit writer has been busy on one call for over {self.timeout_s:g} s")
        try:
            await asyncio.wait_for(asyncio.wrap_future(pinger.submit(self.log.probe)), self.timeout_s)
        except TimeoutError:
            raise AuditError(f"audit ping did not answer within {self.timeout_s:g} s") from None
        except RuntimeError:
            raise AuditError("the audit store is not open") from None

    async def append_call(self, record: HookCallRecord) -> None:
        """Group commit: the record joins the batch that the writer thread commits next; it returns once the
        transaction holding it committed (``AuditError`` if it failed, or past the budget)."""
        if self._executor is None:
            raise AuditError("the audit store is not open")
        self._admit("append_call")
        entry = _Waiting(record, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        try:
            await asyncio.wait_for(asyncio.shield(entry.done), self.timeout_s)
        except TimeoutError:
            log.error("audit append_call did not finish within %.1f s", self.timeout_s)
            raise AuditError(f"audit append_call did not finish within {self.timeout_s:g} s") from None
        finally:
            # Given up (budget, cancelled caller) before its batch was taken: it is never written. Taken: its
            # batch may still commit it, "audited but not sent", the safe direction.
            if entry in self._waiting:
                self._waiting.remove(entry)
            entry.done.cancel()
            with self._lock:
                self._pending -= 1

    async def _flush(self) -> None:
        """While records wait: take them all as one batch and commit it on the writer thread."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._run(self.log.append_calls, [entry.record for entry in batch],
                                              admitted=True)
                except AuditError as error:
                    results = [error] * len(batch)
                except Exception as error:  # a bug must not leave the batch's callers waiting out their budget
                    log.error("audit batch failed: %s", type(error).__name__)
                    results = [AuditError(f"audit append failed: {type(error).__name__}")] * len(batch)
                for entry, result in zip(batch, results, strict=True):
                    if entry.done.done():
                        continue
                    if isinstance(result, AuditError):
                        entry.done.set_exception(AuditError(str(result)))
                    else:
                        entry.done.set_result(result)
        finally:
            self._flusher = None

    async def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        return await self._run(self.log.append_feedback, list(records))

    async def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        return await self._run(self.log.remember_jti, iss, jti, expires_at)

    async def find_calls(self, hook_instance: str, received_at: datetime) -> list[HookCallRecord]:
        return await self._run(self.log.find_calls, hook_instance, received_at)

    async def append_access(self, action: str, details: dict[str, Any]) -> None:
        await self._run(self.log.append_access, action, details)

    async def verify(self) -> ChainVerdict:
        # An auditor's walk of the whole chain, not a request path: no per-call budget.
        return await self._run(self.log.verify, budget_s=24 * 3600.0)
