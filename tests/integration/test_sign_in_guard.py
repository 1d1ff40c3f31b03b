"""The sign-in guard's adapters on real Redis and the real primary, against one contract
that the in-memory fake (tests/functional/fakes.py) keeps too; then the fallback from Redis
to the primary's table, and what happens when neither can count."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from sqlalchemy import create_engine, select, text
from tests.support.fakes import FakeSignInGuard
from tests.support.net import silent_server
from tests.support.stack import redis_stopped

from giftmarket.adapters import tables
from giftmarket.adapters.cache import RedisBreaker, build_redis
from giftmarket.adapters.db import Database
from giftmarket.adapters.errors import DatabaseUnavailable
from giftmarket.adapters.sign_in_guard import (
    FallbackSignInGuard,
    RedisSignInGuard,
    SqlSignInGuard,
    SubjectKeys,
)
from giftmarket.commands.ports import SignInGuard, utc_now
from giftmarket.domain.sign_in import SignInLimits, TooManyAttempts
from giftmarket.jobs.purge import RULES, Purger, Retention
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

LIMITS = SignInLimits(per_email=3, per_address=5, window_seconds=2)
SECRET = b"test-sign-in-key"


def new_email() -> str:
    return f"{uuid.uuid4().hex}@guard.test"


def new_address() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}.{n // 62500 % 250}"


def refused(guard: SignInGuard, email: str, address: str | None = None) -> int | None:
    """Retry-After seconds if the attempt is refused; None (and the attempt counted) if not."""
    try:
        guard.admit(email, address)
    except TooManyAttempts as exc:
        return exc.retry_after_seconds
    return None


@pytest.fixture(scope="module")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = build_redis(settings)
    yield client
    client.close()


@pytest.fixture(params=["redis", "sql", "fake"])
def guard(
    request: pytest.FixtureRequest, redis_client: redis.Redis, database: Database
) -> SignInGuard:
    keys = SubjectKeys(lambda: SECRET, LIMITS)
    if request.param == "redis":
        return RedisSignInGuard(redis_client, keys, LIMITS)
    if request.param == "sql":
        return SqlSignInGuard(database.writer, keys, LIMITS)
    return FakeSignInGuard(LIMITS, utc_now)


def test_the_email_is_locked_out_at_its_limit_until_the_window_ends(guard: SignInGuard) -> None:
    email = new_email()
    assert [refused(guard, email) for _ in range(3)] == [None, None, None]

    assert refused(guard, email) in (1, 2)


def test_after_the_window_the_email_may_try_again(guard: SignInGuard) -> None:
    email = new_email()
    for _ in range(3):
        guard.admit(email, None)
    assert refused(guard, email) is not None

    time.sleep(LIMITS.window_seconds + 0.1)

    assert refused(guard, email) is None


def test_refused_attempts_do_not_extend_the_window(guard: SignInGuard) -> None:
    email = new_email()
    first = time.monotonic()
    for _ in range(3):
        guard.admit(email, None)
    while time.monotonic() - first < LIMITS.window_seconds - 0.3:
        assert refused(guard, email) is not None
        time.sleep(0.1)

    time.sleep(max(0.0, first + LIMITS.window_seconds + 0.1 - time.monotonic()))

    assert refused(guard, email) is None


def test_an_address_is_locked_out_across_emails_and_other_addresses_are_not(
    guard: SignInGuard,
) -> None:
    address = new_address()
    for _ in range(5):
        guard.admit(new_email(), address)

    assert refused(guard, new_email(), address) is not None
    assert refused(guard, new_email(), new_address()) is None


def test_a_withdrawn_attempt_is_not_counted(guard: SignInGuard) -> None:
    email, address = new_email(), new_address()
    for _ in range(10):
        guard.admit(email, address).withdraw(email, address)

    assert [refused(guard, email, address) for _ in range(3)] == [None, None, None]
    assert refused(guard, email, address) is not None


def test_concurrent_attempts_are_admitted_no_more_than_the_limit(guard: SignInGuard) -> None:
    email = new_email()
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: refused(guard, email), range(16)))

    assert outcomes.count(None) == LIMITS.per_email


def test_subjects_are_kept_only_as_keyed_hashes(
    redis_client: redis.Redis, database: Database
) -> None:
    keys = SubjectKeys(lambda: SECRET, LIMITS)
    email, address = new_email(), new_address()
    RedisSignInGuard(redis_client, keys, LIMITS).admit(email, address)
    SqlSignInGuard(database.writer, keys, LIMITS).admit(email, address)

    stored = {k.decode() for k in redis_client.scan_iter(match="signin:*")}
    with database.writer.connect() as conn:
        rows = set(conn.execute(select(tables.login_failures.c.subject_key)).scalars())
    expected = {keys.key("email", email), keys.key("address", address)}
    assert expected <= rows
    assert {RedisSignInGuard.PREFIX + k for k in expected} <= stored
    bare = {hashlib.sha256(v.encode()).hexdigest() for v in (email, address)}
    assert not any(email in k or address in k or k[-64:] in bare for k in stored | rows)


def test_with_redis_stopped_the_primary_counts_and_still_locks_out(
    stack: Stack, settings: Settings, database: Database
) -> None:
    keys = SubjectKeys(lambda: SECRET, LIMITS)
    client = build_redis(settings)
    guard = FallbackSignInGuard(
        RedisSignInGuard(client, keys, LIMITS),
        SqlSignInGuard(database.writer, keys, LIMITS),
        RedisBreaker(2.0),
    )
    email, address = new_email(), new_address()
    try:
        with redis_stopped(stack):
            counted_by = [guard.admit(email, address) for _ in range(3)]
            assert refused(guard, email, address) in (1, 2)
    finally:
        client.close()

    assert all(isinstance(g, SqlSignInGuard) for g in counted_by)
    with database.writer.connect() as conn:
        failures = conn.execute(
            text("SELECT failures FROM login_failures WHERE subject_key = :k"),
            {"k": keys.key("email", email)},
        ).scalar_one()
    assert failures == 3


def test_a_hung_redis_costs_one_sign_in_its_timeout_then_the_primary_counts(
    settings: Settings, database: Database
) -> None:
    keys = SubjectKeys(lambda: SECRET, LIMITS)
    email, address = new_email(), new_address()
    with silent_server() as (port, taken):
        client = build_redis(
            settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        )
        # A pause long enough that a slow machine cannot see it end during the attempts.
        guard = FallbackSignInGuard(
            RedisSignInGuard(client, keys, LIMITS),
            SqlSignInGuard(database.writer, keys, LIMITS),
            RedisBreaker(60.0),
        )
        try:
            counted_by = [guard.admit(email, address) for _ in range(3)]
        finally:
            client.close()
    assert all(isinstance(g, SqlSignInGuard) for g in counted_by)
    # The first attempt waited out redis-py's timeout; the next two went to the primary
    # without connecting.
    assert len(taken) == 1


def test_when_neither_store_can_count_the_attempt_is_refused_as_unavailable() -> None:
    keys = SubjectKeys(lambda: SECRET, LIMITS)
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    engine = create_engine("mysql+pymysql://u:p@127.0.0.1:1/x", connect_args={"connect_timeout": 1})
    guard = FallbackSignInGuard(
        RedisSignInGuard(nowhere, keys, LIMITS),
        SqlSignInGuard(engine, keys, LIMITS),
        RedisBreaker(2.0),
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            guard.admit(new_email(), new_address())
    finally:
        engine.dispose()


def test_the_daily_purge_deletes_counters_whose_window_has_passed(database: Database) -> None:
    (rule,) = (r for r in RULES if r.name == "login_failures")
    now = utc_now()
    t = tables.login_failures
    expired, current = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    with database.writer.begin() as conn:
        for key, age in ((expired, timedelta(minutes=20)), (current, timedelta(minutes=5))):
            started = (now - age).replace(tzinfo=None)
            conn.execute(
                t.insert().values(
                    subject_key=key,
                    window_started_at=started,
                    failures=5,
                    expires_at=started + timedelta(minutes=15),
                )
            )

    Purger(database.writer, rules=[rule]).run(Retention(now))

    with database.writer.connect() as conn:
        left = set(
            conn.execute(
                select(t.c.subject_key).where(t.c.subject_key.in_([expired, current]))
            ).scalars()
        )
    assert left == {current}
