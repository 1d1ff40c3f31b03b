"""`make run`: the whole local stack, migrated, serving the API through the Lambda handlers.

Ctrl-C or SIGTERM stops the gateway and every process this run started, by PID, in bounded
time, whatever the handlers are doing:

1. the signal handler only records the signal (during start-up it also interrupts it): it
   takes no lock and does no I/O, so it cannot deadlock with the code it interrupts;
2. the listening socket closes; requests in flight get GRACE_SECONDS to finish, then are
   answered 503 (their handler threads are daemons, left behind) and every connection is shut;
3. the triggers and the handlers' clients are stopped, each step bounded;
4. the stack's processes that this run started are stopped by PID, whatever step 2 or 3 did
   (SIGTERM, then SIGKILL after each process's stop timeout).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from giftmarket.bootstrap import bootstrap, close_container
from giftmarket_local.migrations import upgrade
from giftmarket_local.processes import ProcessError
from giftmarket_local.runner import Gateway, GatewayServer, make_server
from giftmarket_local.stack import Stack
from giftmarket_local.template import Application, read_application
from giftmarket_local.triggers import start_triggers


def _ensure_read_models(stack: Stack) -> None:
    """Queries read Redis from the first request: rebuild the read models if it has none
    (a first run, or a Redis started empty). The relay's schedule would do it within a
    minute anyway."""
    from giftmarket.projections.rebuild import ensure_read_models

    container = bootstrap(stack.config.app_settings())
    try:
        report = ensure_read_models(container.read_models, container.settings, container.database)
    finally:
        container.close()
    if report is not None:
        print(f"read models rebuilt: {report.total_rows} rows in {report.seconds:.2f}s", flush=True)


# How long requests in flight may take to finish once a stop is asked for.
GRACE_SECONDS = 5.0

log = logging.getLogger("giftmarket.runner")


class StopRequested(BaseException):
    """SIGTERM or SIGINT during start-up (a BaseException, as KeyboardInterrupt is)."""


class StopSignals:
    """SIGTERM and SIGINT. The handler runs in the main thread between any two bytecodes,
    possibly while that thread holds a lock (a threading.Event's, a logging handler's): so it
    only records the signal, and, while `interrupting` (start-up), raises StopRequested once.
    Later signals are only counted."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self.interrupting = True

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
            if self.interrupting:
                raise StopRequested(signum)

    def serving(self) -> None:
        """From now on a signal is only recorded, for wait() to see (and the teardown never
        interrupted)."""
        self.interrupting = False

    def wait(self) -> None:
        # time.sleep returns to Python between naps, so the handler always gets to run.
        while self.received is None:
            time.sleep(0.1)


def _bounded(step: Callable[[], object], seconds: float, what: str) -> bool:
    """Run `step` in a daemon thread and wait at most `seconds` for it. False if it did not
    finish in time (it goes on in the background) or raised (logged)."""
    outcome: list[bool] = []

    def target() -> None:
        try:
            step()
            outcome.append(True)
        except Exception:
            log.exception("stopping: %s failed", what)
            outcome.append(False)

    thread = threading.Thread(target=target, name=f"stop-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        log.warning("stopping: %s did not finish within %.0fs; going on", what, seconds)
        return False
    return outcome == [True]


def _drain(server: GatewayServer, serving: threading.Thread, gateway: Gateway) -> int:
    """Stop taking requests, give the ones in flight GRACE_SECONDS, answer the rest 503 and
    shut every connection. Returns how many invocations were abandoned."""
    server.stop_accepting()
    _bounded(server.shutdown, 2.0, "gateway listener")
    server.wait_idle(GRACE_SECONDS)
    abandoned = gateway.shutdown(grace=0.5)
    # The abandoned requests are answered 503 now: give their threads a moment to send it.
    server.wait_idle(1.0)
    server.close_connections()
    serving.join(timeout=1.0)
    return abandoned


@dataclass
class _Serving:
    """What start-up got to, for the teardown to undo."""

    stop: threading.Event = field(default_factory=threading.Event)
    started: list[str] = field(default_factory=list)
    gateway: Gateway | None = None
    server: GatewayServer | None = None
    serving: threading.Thread | None = None
    triggers: list[threading.Thread] = field(default_factory=list)


def _start(stack: Stack, host: str, port: int, state: _Serving) -> None:
    state.started = stack.up()
    upgrade(stack.config)
    _ensure_read_models(stack)
    # The handlers read their settings from the environment, as in Lambda.
    os.environ.update(stack.config.app_env())
    # EMF metrics are one JSON line per invocation on stdout: useful in CloudWatch,
    # noise in a terminal. POWERTOOLS_METRICS_DISABLED=false make run shows them.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    application = read_application()
    os.environ.update(_relay_environment(application))
    state.gateway = Gateway(application)
    state.gateway.init()
    state.server = make_server(state.gateway, host, port)
    state.serving = threading.Thread(target=state.server.serve_forever, name="gateway", daemon=True)
    state.serving.start()
    state.triggers = start_triggers(state.gateway, stack.config.app_env(), state.stop)


# The settings only the outbox relay reads: taken from its template environment, as Lambda
# gives them to it (the handlers here share one process environment, so only names no other
# function reads can be set for one). An environment variable of the same name wins.
RELAY_ONLY = ("OUTBOX_RELAY_RUN_SECONDS", "OUTBOX_RELAY_POLL_MS")


def _relay_environment(application: Application) -> dict[str, str]:
    relay = application.functions.get("OutboxRelayFunction")
    template = relay.environment if relay is not None else {}
    return {
        name: os.environ.get(name, str(template[name]))
        for name in RELAY_ONLY
        if isinstance(template.get(name), str | int)
    }


def _stop(stack: Stack, state: _Serving, running_before: set[str]) -> tuple[bool, int]:
    """Bounded teardown; the stack's processes this run started are stopped whatever the
    steps before did. Returns whether handler threads were left behind, and the exit code."""
    state.stop.set()
    began = time.monotonic()
    left_behind = False
    if state.server is not None and state.serving is not None and state.gateway is not None:
        server, serving, gateway = state.server, state.serving, state.gateway
        abandoned: list[int] = []
        finished = _bounded(
            lambda: abandoned.append(_drain(server, serving, gateway)),
            GRACE_SECONDS + 5,
            "requests in flight",
        )
        left_behind = not finished or abandoned != [0]
        log.info(
            "stopping: requests drained in %.1fs, %s abandoned",
            time.monotonic() - began,
            abandoned[0] if abandoned else "some",
        )
    elif state.gateway is not None:
        left_behind = state.gateway.shutdown(grace=GRACE_SECONDS) > 0
    for trigger in state.triggers:
        trigger.join(timeout=2)
        left_behind = left_behind or trigger.is_alive()
    # The handlers' pools and clients: LocalStack waits on open connections at shutdown.
    if not _bounded(close_container, 5.0, "the handlers' clients"):
        left_behind = True
    ours = [p.name for p in stack.processes if p.name not in running_before]
    stopping_stack = time.monotonic()
    try:
        stopped = stack.stop(ours)
    except ProcessError as exc:
        print(f"stopping the stack failed: {exc}", file=sys.stderr, flush=True)
        return left_behind, 1
    took = time.monotonic() - stopping_stack
    print(f"stopped: {', '.join(stopped) or 'nothing'}", file=sys.stderr, flush=True)
    log.info("stopping took %.1fs, the stack's processes %.1fs", time.monotonic() - began, took)
    return left_behind, 0


def run(stack: Stack, *, port: int = 3000, host: str = "127.0.0.1") -> int:
    """Serve until SIGTERM or SIGINT, then stop everything this run started."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    began = time.monotonic()
    signals = StopSignals()
    signals.install()
    # What this run stops at the end: every process of the stack not running now, whether
    # start-up finished or was interrupted half way.
    running_before = {name for name, pid in stack.status().items() if pid is not None}
    state = _Serving()
    left_behind, code = False, 0
    try:
        try:
            _start(stack, host, port, state)
            signals.serving()
        except StopRequested:
            pass
        if signals.received is None:
            admins = [e.strip() for e in os.environ["ADMIN_EMAILS"].split(",") if e.strip()]
            admin = (
                f"sign up as {admins[0]} to get the admin role (ADMIN_EMAILS)"
                if admins
                else "ADMIN_EMAILS is empty: after signing up,"
                " .venv/bin/giftmarket admin grant EMAIL"
            )
            print(
                f"\ngiftmarket is up in {time.monotonic() - began:.1f}s\n"
                f"  API      http://{host}:{port}/api/health\n"
                f"  docs     http://{host}:{port}/docs\n"
                f"  admin    {admin}\n"
                f"  started  {', '.join(state.started) or 'nothing (already running)'}\n"
                "Ctrl-C stops everything this run started.\n",
                flush=True,
            )
            signals.wait()
        name = signal.Signals(signals.received or signal.SIGTERM).name
        print(f"stopping ({name})...", flush=True)
    finally:
        signals.serving()  # a signal must not interrupt the teardown (start-up may have failed)
        left_behind, code = _stop(stack, state, running_before)
    if left_behind:
        # A handler that never returned may hold threads (its own pools) that interpreter
        # exit would wait for: the stack is stopped, nothing is left to do.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
