"""Locust's side of `make load`: the simulated users of tests/load/scenario.py, each sending
its calls through Locust's HTTP client so Locust times them and counts them per route.

Runs in Locust's own virtualenv (.local/venvs/load: gevent patches the standard library of
the process it runs in) with the repository root on PYTHONPATH; run.py starts it headless.
By hand, e.g. with Locust's web UI on 127.0.0.1:8089:

    PYTHONPATH=. .local/venvs/load/bin/locust -f tests/load/locustfile.py \\
        --host http://127.0.0.1:3000 --web-host 127.0.0.1

Environment: GM_LOAD_ADMIN_EMAIL / GM_LOAD_ADMIN_PASSWORD (an admin of the stage: without
them the run trades the stage's existing products and skips the admin's steps),
GM_LOAD_PRODUCTS (products a run creates, 20), GM_LOAD_THINK ("MIN,MAX" seconds between a
user's actions, 0.5,2.5), GM_LOAD_JOURNAL (where the checks' journal goes; none by default),
GM_LOAD_RUN_ID (names the run's products).
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events  # type: ignore[import-not-found]
from locust.exception import StopUser  # type: ignore[import-not-found]
from tests.load import scenario

MARKET = scenario.Market()
THINK = scenario.think_time(os.environ.get("GM_LOAD_THINK"))


def prepare(environment: Any, **_: Any) -> None:
    """The catalog before any user arrives, by plain urllib: not part of the figures."""
    email, password = (
        os.environ.get("GM_LOAD_ADMIN_EMAIL"),
        os.environ.get("GM_LOAD_ADMIN_PASSWORD"),
    )
    MARKET.admin = scenario.Admin(email, password) if email and password else None
    journal = os.environ.get("GM_LOAD_JOURNAL")
    MARKET.journal = scenario.Journal(Path(journal) if journal else None)
    run_id = os.environ.get("GM_LOAD_RUN_ID") or uuid.uuid4().hex[:8]
    products = int(os.environ.get("GM_LOAD_PRODUCTS", "20"))
    try:
        note = scenario.prepare_market(
            scenario.UrllibSend(environment.host), MARKET, run_id, products
        )
    except RuntimeError as exc:
        # The users still come, and browse: the report says why nothing was traded.
        note = f"FAILED: {exc}"
    MARKET.journal.write({"kind": "setup", "note": note})
    print(f"[load] {note}", flush=True)


def write_conflicts(**_: Any) -> None:
    conflicts = [[*key, count] for key, count in MARKET.conflicts.most_common()]
    MARKET.journal.write({"kind": "conflicts", "counts": conflicts})
    MARKET.journal.close()


events.test_start.add_listener(prepare)
events.test_stop.add_listener(write_conflicts)


class LocustSend:
    """scenario.Send through Locust's client: timed, named by route, and judged by
    scenario.verdict (the market's 409s count as answered, not failed)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, call: scenario.Call) -> scenario.Reply:
        with self.client.request(
            call.method,
            call.path,
            name=call.name,
            json=call.json,
            data=call.data,
            headers=call.headers(),
            catch_response=True,
        ) as response:
            headers = {k.lower(): v for k, v in (response.headers or {}).items()}
            reply = scenario.Reply(
                int(response.status_code or 0),
                scenario.parse_body(headers.get("content-type", ""), response.content or b""),
                headers,
            )
            outcome = scenario.verdict(call, reply)
            if outcome.kind == "failure":
                response.failure(outcome.detail)
            else:
                response.success()
            MARKET.count(call, outcome)
            return reply


def _task(name: str) -> Callable[[Any], None]:
    def run(user: Any) -> None:
        getattr(user.session, name)()

    run.__name__ = name
    return run


def _tasks(session: type[scenario.Session]) -> dict[Callable[[Any], None], int]:
    return {_task(name): weight for name, weight in session.MIX.items()}


class _MarketUser(FastHttpUser):  # type: ignore[misc]
    abstract = True
    session_class: type[scenario.Session] = scenario.Visitor
    wait_time = between(*THINK)

    def on_start(self) -> None:
        self.session = self.session_class(LocustSend(self.client), MARKET, random.Random())
        self.session.start()


class VisitorUser(_MarketUser):
    weight = 4
    session_class = scenario.Visitor
    tasks = _tasks(scenario.Visitor)


class BuyerUser(_MarketUser):
    weight = 4
    session_class = scenario.Buyer
    tasks = _tasks(scenario.Buyer)


class SellerUser(_MarketUser):
    weight = 2
    session_class = scenario.Seller
    tasks = _tasks(scenario.Seller)


class OperatorUser(_MarketUser):
    """One admin at most; a run without an admin's credentials leaves it out (run.py) or
    stops it here."""

    fixed_count = 1
    session_class = scenario.Operator
    tasks = _tasks(scenario.Operator)
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        if MARKET.admin is None:
            raise StopUser()
        super().on_start()
