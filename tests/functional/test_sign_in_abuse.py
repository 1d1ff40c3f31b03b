"""Sign-in abuse limits through the command API's Lambda handler, on fakes: an in-memory
write model, fake passwords and the in-memory sign-in guard on a fake clock."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from tests.support.fakes import (
    FakeClock,
    FakePasswords,
    FakeSignInGuard,
    FakeStore,
    FakeUnitOfWork,
    make_context,
)

from giftmarket.adapters.errors import DatabaseUnavailable
from giftmarket.bootstrap import bootstrap, set_container
from giftmarket.commands.context import InvalidCredentials
from giftmarket.commands.sign_in import guarded
from giftmarket.domain.sign_in import SignInLimits, TooManyAttempts
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.runner import Gateway, make_server
from giftmarket_local.template import read_application

PASSWORD = "correct-horse-1"
HERE = "203.0.113.7"


@dataclass
class Api:
    invoker: LocalInvoker
    clock: FakeClock
    guard: FakeSignInGuard
    passwords: FakePasswords

    def login(self, email: str, password: str, source_ip: str = HERE) -> Reply:
        body = json.dumps({"email": email, "password": password}).encode()
        headers = {"content-type": "application/json"}
        return self.invoker.http(
            "POST", "/api/auth/login", body=body, headers=headers, source_ip=source_ip
        )

    def sign_up(self, email: str) -> None:
        body = json.dumps({"email": email, "password": PASSWORD, "nickname": "n"}).encode()
        headers = {"content-type": "application/json"}
        reply = self.invoker.http("POST", "/api/auth/signup", body=body, headers=headers)
        assert reply.status == 201, reply


@pytest.fixture
def api() -> Iterator[Api]:
    clock, passwords, store = FakeClock(), FakePasswords(), FakeStore()
    guard = FakeSignInGuard(SignInLimits(per_email=5, per_address=50, window_seconds=900), clock)
    container = bootstrap(
        Settings(environment="test", events_queue_url=None),
        unit_of_work=lambda: FakeUnitOfWork(store),
        command_context=make_context(clock=clock, passwords=passwords),
        sign_in_guard=guard,
    )
    set_container(container)
    try:
        yield Api(LocalInvoker(), clock, guard, passwords)
    finally:
        set_container(None)


def test_sixth_login_with_the_correct_password_is_429_with_retry_after(api: Api) -> None:
    api.sign_up("victim@example.com")
    for _ in range(5):
        assert api.login("victim@example.com", "not-the-password").status == 401
    checked = len(api.passwords.verified)

    reply = api.login("Victim@Example.com ", PASSWORD)

    assert reply.status == 429, reply
    assert reply.headers["retry-after"] == "900"
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.body["code"] == "too_many_attempts"
    assert len(api.passwords.verified) == checked  # refused before any password is tried


def test_attempts_during_the_lockout_neither_count_nor_extend_it(api: Api) -> None:
    api.sign_up("user@example.com")
    for _ in range(5):
        api.login("user@example.com", "wrong-password")
    for _ in range(3):
        api.clock.advance(timedelta(seconds=299))
        assert api.login("user@example.com", "wrong-password").status == 429
    assert api.guard.failures("email:user@example.com") == 5

    api.clock.advance(timedelta(seconds=2))  # 899 s after the first failure
    assert api.login("user@example.com", PASSWORD).headers["retry-after"] == "1"
    api.clock.advance(timedelta(seconds=1))
    assert api.login("user@example.com", PASSWORD).status == 200


def test_a_successful_login_is_not_counted(api: Api) -> None:
    api.sign_up("regular@example.com")
    for _ in range(4):
        api.login("regular@example.com", "wrong-password")

    for _ in range(10):
        assert api.login("regular@example.com", PASSWORD).status == 200

    assert api.guard.failures("email:regular@example.com") == 4
    assert api.login("regular@example.com", "wrong-password").status == 401
    assert api.login("regular@example.com", PASSWORD).status == 429


def test_fifty_failures_from_one_address_lock_that_address_for_every_email(api: Api) -> None:
    api.sign_up("bystander@example.com")
    for n in range(50):
        assert api.login(f"guess{n}@example.com", "wrong-password").status == 401

    assert api.login("bystander@example.com", PASSWORD).status == 429
    assert api.login("bystander@example.com", PASSWORD, source_ip="198.51.100.1").status == 200


def test_another_email_is_not_locked_by_someone_elses_failures(api: Api) -> None:
    api.sign_up("a@example.com")
    api.sign_up("b@example.com")
    for _ in range(5):
        api.login("a@example.com", "wrong-password", source_ip="198.51.100.2")

    assert api.login("b@example.com", PASSWORD, source_ip="198.51.100.2").status == 200


def test_an_attempt_that_fails_for_another_reason_is_withdrawn() -> None:
    guard = FakeSignInGuard()

    def outage() -> None:
        raise DatabaseUnavailable("primary", "stopped")

    with pytest.raises(DatabaseUnavailable):
        guarded(guard, "a@example.com", HERE, outage)

    assert guard.failures("email:a@example.com") == 0
    assert guard.failures(f"address:{HERE}") == 0


def test_a_failure_on_credentials_stays_counted_and_is_raised() -> None:
    guard = FakeSignInGuard()

    def wrong() -> None:
        raise InvalidCredentials()

    with pytest.raises(InvalidCredentials):
        guarded(guard, "a@example.com", HERE, wrong)

    assert guard.failures("email:a@example.com") == 1
    assert guard.failures(f"address:{HERE}") == 1


def test_a_locked_out_attempt_is_never_run() -> None:
    guard = FakeSignInGuard(SignInLimits(per_email=1, per_address=50, window_seconds=60))
    guard.admit("a@example.com", None)
    ran: list[bool] = []

    with pytest.raises(TooManyAttempts) as refused:
        guarded(guard, "a@example.com", None, lambda: ran.append(True))

    assert ran == []
    assert refused.value.retry_after_seconds == 60


def test_the_local_gateway_counts_failures_against_the_clients_address(api: Api) -> None:
    gateway = Gateway(read_application(), containers=1)
    server = make_server(gateway, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        # From another loopback address than the runner's default sourceIp (127.0.0.1).
        conn = http.client.HTTPConnection(
            "127.0.0.1", server.server_address[1], timeout=30, source_address=("127.0.0.5", 0)
        )
        body = json.dumps({"email": "nobody@example.com", "password": "guess"})
        conn.request("POST", "/api/auth/login", body, {"content-type": "application/json"})
        status = conn.getresponse().status
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        gateway.shutdown()

    assert status == 401
    assert api.guard.failures("address:127.0.0.5") == 1
