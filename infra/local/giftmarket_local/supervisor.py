"""`make run`: the whole local stack, migrated, serving the API through the Lambda handlers.

Ctrl-C or SIGTERM stops the gateway and every process this run started, by PID.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from giftmarket.bootstrap import bootstrap, close_container
from giftmarket_local.migrations import upgrade
from giftmarket_local.runner import Gateway, make_server
from giftmarket_local.stack import Stack
from giftmarket_local.template import read_application
from giftmarket_local.triggers import start_triggers


def _ensure_read_models(stack: Stack) -> None:
    """Queries read Redis from the first request: rebuild the read models if it has none
    (a first run, or a Redis started empty). The relay's schedule would do it within a
    minute anyway."""
    container = bootstrap(stack.config.app_settings())
    try:
        report = container.ensure_read_models()
    finally:
        container.close()
    if report is not None:
        print(f"read models rebuilt: {report.total_rows} rows in {report.seconds:.2f}s", flush=True)


def run(stack: Stack, *, port: int = 3000, host: str = "127.0.0.1") -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    began = time.monotonic()
    started = stack.up()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gateway: Gateway | None = None
    try:
        upgrade(stack.config)
        _ensure_read_models(stack)
        # The handlers read their settings from the environment, as in Lambda.
        os.environ.update(stack.config.app_env())
        # EMF metrics are one JSON line per invocation on stdout: useful in CloudWatch,
        # noise in a terminal. POWERTOOLS_METRICS_DISABLED=false make run shows them.
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
        gateway = Gateway(read_application())
        server = make_server(gateway, host, port)
        serving = threading.Thread(target=server.serve_forever, name="gateway", daemon=True)
        serving.start()
        triggers = start_triggers(gateway, stack.config.app_env(), stop)
        admins = [e.strip() for e in os.environ["ADMIN_EMAILS"].split(",") if e.strip()]
        admin = (
            f"sign up as {admins[0]} to get the admin role (ADMIN_EMAILS)"
            if admins
            else "ADMIN_EMAILS is empty: after signing up, .venv/bin/giftmarket admin grant EMAIL"
        )
        print(
            f"\ngiftmarket is up in {time.monotonic() - began:.1f}s\n"
            f"  API      http://{host}:{port}/api/health\n"
            f"  docs     http://{host}:{port}/docs\n"
            f"  admin    {admin}\n"
            f"  started  {', '.join(started) or 'nothing (already running)'}\n"
            "Ctrl-C stops everything this run started.\n",
            flush=True,
        )
        stop.wait()
        print("stopping...", flush=True)
        server.shutdown()
        server.server_close()
        for trigger in triggers:
            trigger.join(timeout=5)
        return 0
    finally:
        if gateway is not None:
            gateway.shutdown()
        # The handlers' pools and clients: LocalStack waits on open connections at shutdown.
        close_container()
        stopped = stack.stop(started)
        print(f"stopped: {', '.join(stopped) or 'nothing'}", file=sys.stderr, flush=True)
