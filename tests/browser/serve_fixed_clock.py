"""``calcinosis-cds serve`` for the browser tests, with the service clock read from a file.

The fixture patients' dates are relative to 2026-11-21, so the service must assess at that instant; the
tests move the clock (to expire a card's link) by rewriting the file. Everything else is the real service:
settings from ``CDS_*``, the SQLite audit store, uvicorn on 127.0.0.1.

    python -m tests.browser.serve_fixed_clock --clock-file /tmp/clock.txt --host 127.0.0.1 --port 8123
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import uvicorn

from hooks.app import create_app
from hooks.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clock-file", type=Path, required=True)
    args = parser.parse_args()
    clock_file: Path = args.clock_file

    def clock() -> datetime:
        return datetime.fromisoformat(clock_file.read_text(encoding="utf-8").strip())

    app = create_app(Settings(), clock=clock)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, http="h11",
                lifespan="on", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
