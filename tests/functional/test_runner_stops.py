"""The local runner's gateway stops in bounded time, whatever its clients and handlers do, and
serves /docs without a CDN. In process, on a loopback port, with stand-in handlers.

The whole `make run` process (stack included) is stopped under load in
tests/e2e/test_runner_stops_under_load.py.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import pytest

from giftmarket_local import docs
from giftmarket_local.runner import (
    Abandoned,
    FunctionHost,
    Gateway,
    GatewayServer,
    HttpResponse,
    make_server,
)
from giftmarket_local.template import FunctionSpec


def host_running(handler: Any, tmp_path: Path, containers: int = 2) -> FunctionHost:
    """A FunctionHost whose handler is `handler`."""
    spec = FunctionSpec(
        logical_id="Stand", code_uri=tmp_path, handler="app.handler", timeout_seconds=30,
        memory_mb=128,
    )  # fmt: skip
    host = FunctionHost(spec, containers)
    host._handler = handler  # as if its module were loaded
    return host


def in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_a_host_waits_for_invocations_in_flight_then_abandons_the_stuck_ones(
    tmp_path: Path,
) -> None:
    release = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> Any:
        if event.get("stuck"):
            release.wait(60)  # a handler waiting on a lock that is never released
            return "late"
        time.sleep(0.3)
        return "done"

    host = host_running(handler, tmp_path)
    stuck, stuck_outcome = in_thread(lambda: host.invoke({"stuck": True}))
    quick, quick_outcome = in_thread(lambda: host.invoke({}))
    deadline = time.monotonic() + 5
    while host.in_flight() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host.in_flight() == 2

    began = time.monotonic()
    abandoned = host.shutdown(grace=1.0)
    took = time.monotonic() - began

    assert abandoned == 1
    assert 0.9 < took < 2.0
    quick.join(1)
    stuck.join(1)
    assert quick_outcome == ["done"]  # finished within the grace period
    assert len(stuck_outcome) == 1 and isinstance(stuck_outcome[0], Abandoned)
    with pytest.raises(Abandoned):
        host.invoke({})
    release.set()  # the stuck container returns; nobody waits for it any more


def test_a_host_stopping_leaves_its_invocations_no_time_so_a_loop_ends_itself(
    tmp_path: Path,
) -> None:
    def relay_like(event: dict[str, Any], context: Any) -> Any:
        # As the outbox relay's loop: polls until its invocation's time is up.
        polls = 0
        while context.get_remaining_time_in_millis() > 0:
            polls += 1
            time.sleep(0.01)
        return polls

    host = host_running(relay_like, tmp_path)
    looping, outcome = in_thread(lambda: host.invoke({}))
    time.sleep(0.2)
    assert host.in_flight() == 1
    began = time.monotonic()
    abandoned = host.shutdown(grace=5.0)
    assert abandoned == 0 and time.monotonic() - began < 1.0
    looping.join(1)
    assert len(outcome) == 1 and isinstance(outcome[0], int) and outcome[0] > 5


def test_a_request_that_timed_out_waiting_for_a_container_is_never_run(tmp_path: Path) -> None:
    release = threading.Event()
    ran: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        ran.append(event["n"])
        release.wait(10)
        return event["n"]

    spec = FunctionSpec(
        logical_id="Stand", code_uri=tmp_path, handler="app.handler", timeout_seconds=1,
        memory_mb=128,
    )  # fmt: skip
    host = FunctionHost(spec, containers=1)
    host._handler = handler
    calls = [in_thread(lambda n=n: host.invoke({"n": n})) for n in range(3)]
    for thread, _ in calls:
        thread.join(5)
    assert all(isinstance(outcome[0], FutureTimeout) for _, outcome in calls)
    release.set()
    time.sleep(0.3)
    # The first was running when its caller gave up; the two queued behind it never start.
    assert len(ran) == 1
    host.shutdown(grace=1.0)


class StandInGateway(Gateway):
    """The gateway's HTTP side with one stand-in function: /slow blocks until released."""

    def __init__(self) -> None:
        self.hosts = {}
        self.release = threading.Event()
        self.started = threading.Event()
        self.bodies: list[bytes] = []

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> tuple[HttpResponse, str | None]:
        self.bodies.append(body)
        if target == "/slow":
            self.started.set()
            self.release.wait(60)
        return HttpResponse(200, [("content-type", "text/plain")], b"ok " + body), "Stand"


@pytest.fixture
def served() -> Iterator[tuple[GatewayServer, StandInGateway, threading.Thread]]:
    gateway = StandInGateway()
    server = make_server(gateway, "127.0.0.1", 0)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server, gateway, thread
    gateway.release.set()
    server.server_close()


def connect(server: GatewayServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)


def test_draining_answers_in_flight_requests_closes_idle_ones_and_frees_the_port(
    served: tuple[GatewayServer, StandInGateway, threading.Thread],
) -> None:
    server, gateway, serving = served
    port = server.server_address[1]
    # A kept-alive connection, idle after one request: its thread waits for the next one.
    idle = connect(server)
    idle.request("GET", "/quick")
    assert idle.getresponse().read() == b"ok "
    # A request whose body never comes: its thread waits in a read.
    trickle = socket.create_connection(("127.0.0.1", port))
    trickle.sendall(b"POST /quick HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\npart")
    # A request in flight that finishes during the grace period, and another that does not.
    slow = connect(server)
    slow.request("GET", "/slow")
    assert gateway.started.wait(5)
    deadline = time.monotonic() + 5
    while server.requests_in_flight() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests_in_flight() == 2  # /slow, and the POST waiting for its body

    began = time.monotonic()
    server.stop_accepting()
    server.shutdown()
    threading.Timer(0.2, gateway.release.set).start()
    assert not server.wait_idle(0.5)  # the body-less POST is still there
    # The idle keep-alive one and the body-less POST (/slow was answered with "close").
    assert server.close_connections() == 2
    assert server.wait_idle(2.0)
    serving.join(2)
    took = time.monotonic() - began

    assert not serving.is_alive()
    assert took < 3
    answer = slow.getresponse()
    assert (answer.status, answer.getheader("connection"), answer.read()) == (200, "close", b"ok ")
    trickle.settimeout(2)
    assert trickle.recv(100) == b""  # shut down, not answered
    assert b"part" not in gateway.bodies  # and its half body never reached a function
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        idle.request("GET", "/quick")
        idle.getresponse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_a_request_arriving_while_draining_is_answered_503_and_closed(
    served: tuple[GatewayServer, StandInGateway, threading.Thread],
) -> None:
    server, _, _ = served
    kept = connect(server)
    kept.request("GET", "/quick")
    assert kept.getresponse().read() == b"ok "
    server.stop_accepting()
    kept.request("GET", "/quick")
    answer = answer_of(kept)
    assert (answer.status, answer.getheader("connection")) == (503, "close")


def answer_of(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    response = conn.getresponse()
    response.read()
    return response


def test_docs_reference_only_local_files_which_are_served_with_their_types(
    served: tuple[GatewayServer, StandInGateway, threading.Thread],
) -> None:
    server, _, _ = served
    conn = connect(server)
    conn.request("GET", "/docs")
    page = conn.getresponse()
    html = page.read().decode()
    assert (page.status, page.getheader("content-type")) == (200, "text/html; charset=utf-8")
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    urls += re.findall(r"""url:\s*["']([^"']+)""", html)
    assert "/openapi.json" in urls and "SwaggerUIBundle(" in html
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert not re.search(r"https?://", html)
    assets = [u for u in urls if u.startswith(docs.ASSETS_PATH)]
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    assert {Path(u).suffix for u in assets} == set(expected)
    for url in assets:
        conn.request("GET", url)
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 200, url
        content_type = answer.getheader("content-type") or ""
        assert content_type.split(";")[0] == expected[Path(url).suffix], url
        assert int(answer.getheader("content-length") or 0) == len(body) > 1000
    conn.request("GET", f"{docs.ASSETS_PATH}swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in conn.getresponse().read()
    for missing in ("nope.js", "..%2Fcore.py", "../core.py", "index.html"):
        conn.request("GET", f"{docs.ASSETS_PATH}{missing}")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 404, missing
