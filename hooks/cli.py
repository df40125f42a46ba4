"""``calcinosis-cds``: serve the service, assess a Bundle offline, and audit the trail.

    calcinosis-cds serve --host 127.0.0.1 --port 8080
    calcinosis-cds assess BUNDLE.json [--now 2026-11-21] [--locale fr]
    calcinosis-cds assess BUNDLE.json --hook order-sign --draft-orders DRAFTS.json
    calcinosis-cds knowledge check [DIR] [--fixtures DIR] [--now ...] [--locale en|fr|all]
    calcinosis-cds audit verify|show|export|stats ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hooks.settings import DEVELOPMENT_AUDIT_KEY

if TYPE_CHECKING:
    from hooks.settings import Settings

__all__ = ["main"]

log = logging.getLogger("calcinosis_cds")

_RULE = "*" * 76


def startup_banner(settings: Settings, host: str) -> str | None:
    """The warning printed at start when the service is not secured; None when there is nothing to warn of.

    Each line states what is actually so (issue 16 item 9: a banner that claimed a public key while a real
    one was set taught operators to ignore it).
    """
    lines = []
    if not settings.auth_required:
        mode = "DEVELOPMENT MODE" if settings.is_development else f"{settings.environment.upper()} MODE"
        lines += [f"  {mode}: authentication is OFF (CDS_AUTH_REQUIRED=false).",
                  f"  Any local process can call this service; it is bound to {host} only."]
    key = settings.audit_key.get_secret_value() if settings.audit_key else None
    if key == DEVELOPMENT_AUDIT_KEY:
        lines.append("  The audit chain uses the public development key. Never use it with real PHI.")
    if not lines:
        return None
    return "\n".join(["", _RULE, *lines, _RULE])


# Generation-0 collections every this many net allocations (CPython's default is 700): a 10,000-Observation
# record allocates a few million objects, all alive until the call ends, so the default ran a collection
# thousands of times per call for nothing (issue 14: GC was half of such a call).
GC_GENERATION0_THRESHOLD = 20_000


def _freeze_start_up_objects() -> None:
    """Move everything built at start-up (the knowledge, the edsnlp pipeline, the models) out of the
    collector's reach: without it a gen-2 collection walked them all, about 130 ms every ~400 calls."""
    import gc

    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GENERATION0_THRESHOLD, gen1, gen2)


def _serve(args: argparse.Namespace) -> int:
    """Check everything that can refuse (settings, trust file, audit store) before the port is bound: a
    refusal is one line on stderr and exit code 2 (``hooks.startup``), never a traceback."""
    import asyncio

    import uvicorn

    from hooks.app import create_app
    from hooks.http_protocol import HeadCappedHttpToolsProtocol
    from hooks.logging_setup import configure_logging
    from hooks.settings import Settings
    from hooks.startup import REFUSALS, refuse

    configure_logging()
    try:
        settings = Settings()
        settings.check_bind(args.host)
        app = create_app(settings)
    except REFUSALS as error:
        return refuse(error)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        # httptools (it parses faster than h11) with h11's 16 KiB cap on the request head kept.
        http=HeadCappedHttpToolsProtocol,
        ws="none",
        # A lifespan failure must stop the process, not serve without a verifier.
        lifespan="on",
        # Idle keep-alive connections are closed after 5 s so slow or abandoned clients cannot hold slots.
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        # None by default: the service's own limit (CDS_MAX_CONCURRENT_CALLS) answers an audited
        # OperationOutcome; uvicorn's would be a plain-text 503 that nobody audits.
        limit_concurrency=args.limit_concurrency,
        server_header=False,
    )

    async def prepare_and_serve() -> int:
        try:
            await app.state.prepare()
        except REFUSALS as error:
            return refuse(error)
        _freeze_start_up_objects()
        banner = startup_banner(settings, args.host)
        if banner:
            log.warning(banner)
        await uvicorn.Server(config).serve()
        return 0

    # The runtime is built on the loop that then serves (its clients and locks belong to that loop).
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        return runner.run(prepare_and_serve())


def _assess(args: argparse.Namespace) -> int:
    if args.hook != "patient-view":
        if not args.draft_orders:
            print(f"error: --hook {args.hook} needs --draft-orders FILE", file=sys.stderr)
            return 2
        from hooks.engine.offline_orders import assess_orders_file

        selections = [s for s in (args.selections or "").split(",") if s] or None
        return assess_orders_file(args.bundle, args.draft_orders, hook=args.hook, selections=selections,
                                  now=args.now, locale=args.locale, out=sys.stdout)
    if args.draft_orders:
        print("error: --draft-orders is for --hook order-select or order-sign", file=sys.stderr)
        return 2
    from hooks.engine.offline import assess_bundle_file

    return assess_bundle_file(args.bundle, now=args.now, locale=args.locale, out=sys.stdout)


def _knowledge_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hooks.engine.knowledge import PACKAGE_KNOWLEDGE_DIR
    from hooks.engine.knowledge_diff import FIXTURES_NOW, run_check
    from hooks.engine.offline import parse_now

    try:
        now = parse_now(args.now) if args.now else FIXTURES_NOW
    except ValueError as error:
        print(f"error: --now: {error}", file=sys.stderr)
        return 2
    locales = ["en", "fr"] if args.locale == "all" else [args.locale]
    directory = Path(args.directory) if args.directory else PACKAGE_KNOWLEDGE_DIR
    return run_check(directory, Path(args.fixtures), now, locales, sys.stdout)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calcinosis-cds", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the CDS Hooks endpoints")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--limit-concurrency", type=int, default=None,
        help="uvicorn's own connection cap (plain-text 503); off by default, the proxy and the service limit",
    )
    serve.set_defaults(func=_serve)

    assess = commands.add_parser("assess", help="run the clinical engine on a FHIR Bundle file and print the cards")
    assess.add_argument("bundle", help="a FHIR R4 Bundle (collection, searchset or transaction) as JSON")
    assess.add_argument("--now", help="evaluation date (ISO 8601); default: now")
    assess.add_argument("--locale", choices=["en", "fr"], default="en")
    assess.add_argument("--hook", choices=["patient-view", "order-select", "order-sign"], default="patient-view",
                        help="order-select / order-sign: check the draft orders of --draft-orders (issue 15)")
    assess.add_argument("--draft-orders", help="the draftOrders Bundle (or a request holding context.draftOrders)")
    assess.add_argument("--selections", help="order-select: comma-separated Type/id of the selected drafts")
    assess.set_defaults(func=_assess)

    knowledge = commands.add_parser("knowledge", help="the clinical knowledge files")
    knowledge_verbs = knowledge.add_subparsers(dest="knowledge_command", required=True)
    check = knowledge_verbs.add_parser(
        "check", help="validate an edited knowledge directory and show what it does to the fixture patients' cards")
    check.add_argument("directory", nargs="?",
                       help="an edited copy of hooks/engine/knowledge (default: the shipped one)")
    check.add_argument("--fixtures", default="tests/fixtures/calcinosis",
                       help="FHIR Bundles of the patients to compare (default: %(default)s)")
    check.add_argument("--now", help="evaluation instant (ISO 8601); default: 2026-11-21T09:00Z, the fixtures' date")
    check.add_argument("--locale", choices=["en", "fr", "all"], default="en")
    check.set_defaults(func=_knowledge_check)

    try:
        from hooks.audit.cli import add_audit_commands
    except ImportError:  # the audit CLI ships with the durable stores
        pass
    else:
        add_audit_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, clock: Callable[[], datetime] | None = None) -> int:
    """``clock``: the time the audit commands write (access rows, manifests); tests pass a fixed one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.clock = clock or _utc_now
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
