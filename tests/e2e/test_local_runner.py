"""`make run`'s server end to end: HTTP → API Gateway event → the Lambda handler → real stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.net import free_port, port_open
from tests.support.outbox import drain_queue, mark_outbox_published
from tests.support.runner import runner_env
from tests.support.stack import settings_for

from giftmarket.adapters.db import Database
from giftmarket_local.stack import REPO_ROOT, Stack, StackConfig


def get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def start_runner(profile: str, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    # Output to a file, not a pipe: an undrained pipe fills up and blocks the runner.
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the runner
        "w+", prefix="runner-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "giftmarket_local",
            "run",
            "--profile",
            profile,
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=runner_env(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180
    while not port_open(port):
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early:\n{output_of(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("runner did not start listening")
        time.sleep(0.1)
    return proc


def output_of(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def terminate(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    output = output_of(proc)
    Path(proc.log_path).unlink()  # type: ignore[attr-defined]
    return proc.returncode, output


@pytest.fixture
def quiet_pipeline(stack: Stack, database: Database, sqs: Any) -> None:
    """No event of an earlier test left for the runner's relay and projector: every outbox row
    marked published and the events queue emptied. The earlier tests of this worker's session
    leave thousands of rows unpublished (settlements, purges, races of a hundred buyers), and
    a runner left the rest of that backlog on the queue when it stopped. A runner started on
    it spent its first 15 s projecting other tests' events, welcome coupons of their users
    among them, before this test's (CI of e792f08)."""
    queue_url = settings_for(stack).events_queue_url
    assert queue_url
    mark_outbox_published(database)
    drain_queue(sqs, queue_url, expected=0, timeout=60)


@pytest.fixture
def runner(stack: Stack) -> Iterator[int]:
    port = free_port()
    proc = start_runner("test", port, {})
    yield port
    code, output = terminate(proc)
    # Shown by pytest only when the test failed: what the relay and the projector logged
    # is the only account of an event that did not arrive in time.
    print(output[-6000:])
    assert code == 0, output
    assert not port_open(port)
    # The runner did not start the test stack, so it leaves it running.
    assert all(pid is not None for pid in stack.status().values())


def test_health_through_the_runner_and_the_query_handler(runner: int) -> None:
    status, headers, body = get(f"http://127.0.0.1:{runner}/api/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert (body["primary"], body["replica"], body["cache"]) == ("ok", "ok", "ok")


def test_unrouted_path_gets_the_gateways_404(runner: int) -> None:
    status, _, body = get(f"http://127.0.0.1:{runner}/api/not-a-route")
    assert (status, body) == (404, {"message": "Not Found"})


def test_routed_path_the_app_rejects_gets_problem_details(runner: int) -> None:
    status, headers, body = get(f"http://127.0.0.1:{runner}/api/health?x=1&x=2")
    assert status == 200
    status, headers, body = get(f"http://127.0.0.1:{runner}/api/buy/history/bidding")
    assert status in (401, 404, 422)
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == status and "code" in body


def send(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    for name, value in {"content-type": "application/json", **(headers or {})}.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            raw = resp.read()
            return (
                resp.status,
                {k.lower(): v for k, v in resp.headers.items()},
                json.loads(raw or "null"),
            )
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


def test_a_command_reaches_the_query_api_through_sqs_and_the_projector(
    quiet_pipeline: None, runner: int
) -> None:
    """The whole read side: command → outbox → SQS (LocalStack) → projector → Redis → query."""
    base = f"http://127.0.0.1:{runner}"
    email = f"{os.urandom(6).hex()}@read-side.io"
    status, _, account = send(
        "POST",
        f"{base}/api/auth/signup",
        {"email": email, "password": "password123", "nickname": "rs"},
    )
    assert status == 201, account
    bearer = {"authorization": f"Bearer {account['token']}"}
    status, headers, _ = send("POST", f"{base}/api/points/charge", {"amount": 777}, bearer)
    assert status == 200
    token = headers["x-consistency-token"]

    # With the token: the answer reflects the charge at once (projected, or read from the primary).
    status, _, me = send("GET", f"{base}/api/me", headers={**bearer, "x-consistency-token": token})
    assert (status, me["available_points"]) == (200, 777)

    # Without it: eventually consistent, and the projector gets there through SQS on its own.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, _, me = send("GET", f"{base}/api/me", headers=bearer)
        if me.get("available_points") == 777:
            break
        time.sleep(0.1)
    assert me["available_points"] == 777

    # UserSignedUp also issued the welcome coupon, through the projector's command.
    deadline = time.monotonic() + 15
    coupons: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not coupons:
        _, _, page = send("GET", f"{base}/api/me/coupons", headers=bearer)
        coupons = page["items"]
        time.sleep(0.1)
    assert [c["discount_amount"] for c in coupons] == [1000]


def test_docs_serve_one_openapi_document_for_both_functions(runner: int) -> None:
    status, _, doc = get(f"http://127.0.0.1:{runner}/openapi.json")
    assert status == 200
    assert "/api/health" in doc["paths"]


def test_run_on_a_fresh_folder_starts_everything_keeps_data_and_stops_it_all_on_sigterm(
    tmp_path: Path,
) -> None:
    ports = {
        f"GM_RUN_{name}_PORT": str(free_port())
        for name in ("PRIMARY", "REPLICA", "REDIS", "LOCALSTACK", "OIDC")
    }
    env = {"GM_LOCAL_DIR": str(tmp_path), **ports}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        config = StackConfig.for_profile("run")
    finally:
        # As it was: a GM_LOCAL_DIR set for the session is still the test stack's folder.
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    fresh = Stack(config)
    api_port = free_port()

    began = time.monotonic()
    proc = start_runner("run", api_port, env)
    cold = time.monotonic() - began
    try:
        status, _, body = get(f"http://127.0.0.1:{api_port}/api/health")
        assert status == 200 and body["status"] == "ok", body
        pids = fresh.status()
        assert all(pids.values()), pids
        fresh.primary.sql(
            "INSERT INTO giftmarket.products (id, name, brand, category, face_value,"
            " created_at) VALUES ('01SURVIVESRESTART000000000', 'kept', 'b', 'c', 1,"
            " NOW(6))"
        )
    finally:
        code, output = terminate(proc)
    assert code == 0, output
    # Every process it started is gone, and every port is closed.
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids.values() if pid)
    assert not any(port_open(p) for p in [*map(int, ports.values()), api_port])

    began = time.monotonic()
    proc = start_runner("run", api_port, env)
    warm = time.monotonic() - began
    try:
        query = "SELECT name FROM giftmarket.products WHERE id = '01SURVIVESRESTART000000000'"
        assert fresh.primary.sql(query) == "kept"
        fresh.wait_replica_caught_up()
        assert fresh.replica.sql(query) == "kept"
    finally:
        code, output = terminate(proc)
    assert code == 0, output
    print(f"\nmake run bring-up on a fresh folder: {cold:.1f}s cold, {warm:.1f}s warm")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
