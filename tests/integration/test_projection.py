"""Outbox events → projector → Redis read models, and queries answered from them, for real.

Events come from real commands' outbox rows, so the projections are tested against exactly
what the write side emits.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, select
from tests.support.net import silent_server
from tests.support.outbox import outbox_envelopes
from tests.support.stack import redis_stopped

from giftmarket.adapters import tables
from giftmarket.adapters.read_models import generation_prefix
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts
from giftmarket.consistency import ConsistencyToken
from giftmarket.messages import EventEnvelope
from giftmarket.queries import account
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.stack import Stack


@pytest.fixture
def container(make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = bootstrap(make_settings(welcome_coupon_amount=1000))
    yield built
    built.close()


def sign_up(container: Container) -> tuple[str, tuple[str, ...]]:
    command = accounts.SignUp(f"{uuid.uuid4().hex}@example.com", "password123", "nick")
    account, committed = container.command_executor.execute(command)
    return account.user_id, committed.outbox_ids


def charge(container: Container, user_id: str, amount: int) -> tuple[str, ...]:
    command = accounts.ChargePoints(user_id, amount)
    _, committed = container.command_executor.execute(command)
    return committed.outbox_ids


def envelopes(container: Container, aggregate_id: str) -> list[EventEnvelope]:
    return outbox_envelopes(container.database, tables.outbox.c.aggregate_id == aggregate_id)


def me_by_sql(user_id: str) -> Callable[[Connection], dict[str, Any] | None]:
    """The same answer from SQL: the query API's fallback view."""
    return lambda session: account.me_from_sql(session, user_id)


def test_user_read_model_equals_the_database_after_signup_and_charges(
    container: Container,
) -> None:
    user_id, _ = sign_up(container)
    for amount in (1000, 250, 4):
        charge(container, user_id, amount)
    for envelope in envelopes(container, user_id):
        container.projector.handle(envelope)

    assert account.me_from_read_model(
        container.read_models, user_id
    ) == container.database.run_on_primary(me_by_sql(user_id))
    assert account.me_from_read_model(container.read_models, user_id)["available_points"] == 1254  # type: ignore[index]


def test_duplicated_and_shuffled_deliveries_end_where_in_order_delivery_ends(
    container: Container,
) -> None:
    rng = random.Random(4)
    for _ in range(5):
        user_id, _ = sign_up(container)
        for amount in rng.sample(range(1, 10_000), 6):
            charge(container, user_id, amount)
        events = envelopes(container, user_id)
        deliveries = events * 2
        rng.shuffle(deliveries)
        for envelope in deliveries:
            container.projector.handle(envelope)
        assert account.me_from_read_model(
            container.read_models, user_id
        ) == container.database.run_on_primary(me_by_sql(user_id))


def test_welcome_coupon_is_issued_once_however_often_signup_is_delivered(
    container: Container,
) -> None:
    user_id, _ = sign_up(container)
    signed_up = envelopes(container, user_id)[0]
    assert signed_up.event_type == "UserSignedUp"
    for _ in range(3):
        container.projector.handle(signed_up)
    c = tables.coupons
    with container.database.writer.connect() as conn:
        coupons = conn.execute(
            select(c.c.kind, c.c.discount_amount).where(c.c.user_id == user_id)
        ).all()
    assert [tuple(row) for row in coupons] == [("welcome", 1000)]


def test_query_answers_from_sql_while_redis_is_down(container: Container, stack: Stack) -> None:
    user_id, _ = sign_up(container)
    with redis_stopped(stack):
        answer = container.reads.answer(
            read_model=lambda: account.me_from_read_model(container.read_models, user_id),
            sql=me_by_sql(user_id),
        )
    assert answer is not None and answer["user_id"] == user_id
    assert account.me_from_read_model(container.read_models, user_id) == answer


def test_a_hung_redis_costs_one_query_its_timeout_not_every_query(
    container: Container, make_settings: Callable[..., Settings]
) -> None:
    user_id, _ = sign_up(container)
    with silent_server() as (port, taken):
        # A pause long enough that a slow machine cannot see it end during the queries.
        hung = bootstrap(
            make_settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_retry_after_seconds=60)
        )
        try:
            for _ in range(10):
                answer = hung.reads.answer(
                    read_model=lambda: account.me_from_read_model(hung.read_models, user_id),
                    sql=me_by_sql(user_id),
                )
                assert answer is not None and answer["user_id"] == user_id
        finally:
            hung.close()
    # The first query waited out redis-py's timeout on one connection; the next nine went
    # to SQL without connecting.
    assert len(taken) == 1


def test_token_not_yet_projected_is_answered_from_the_primary_not_stale_redis(
    container: Container,
) -> None:
    user_id, signed_up = sign_up(container)
    for envelope in envelopes(container, user_id):
        container.projector.handle(envelope)
    written = charge(container, user_id, 700)  # committed, not projected yet
    token = ConsistencyToken(written, {f"user:{user_id}": 2})

    answer = container.reads.answer(
        read_model=lambda: account.me_from_read_model(container.read_models, user_id),
        sql=me_by_sql(user_id),
        token=token,
    )
    assert answer is not None and answer["available_points"] == 700
    assert account.me_from_read_model(container.read_models, user_id)["available_points"] == 0  # type: ignore[index]

    for envelope in envelopes(container, user_id):
        container.projector.handle(envelope)
    assert container.read_models.all_seen(written)
    served_by_redis = container.reads.answer(
        read_model=lambda: account.me_from_read_model(container.read_models, user_id),
        sql=lambda s: None,
        token=token,
    )
    assert served_by_redis is not None and served_by_redis["available_points"] == 700


def sqs_event(bodies: list[tuple[str, str]]) -> dict[str, Any]:
    """An SQS FIFO event as Lambda's event source mapping delivers it."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"handle-{i}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795316400000",
                    "SequenceNumber": str(18800000000000000000 + i),
                    "MessageGroupId": group,
                    "SenderId": "AIDAEXAMPLE",
                    "MessageDeduplicationId": f"dedup-{i}",
                    "ApproximateFirstReceiveTimestamp": "1795316400001",
                },
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:giftmarket-events.fifo",
                "awsRegion": "us-east-1",
            }
            for i, (group, body) in enumerate(bodies)
        ]
    }


def test_projector_handler_reports_only_the_poison_record_and_projects_the_rest(
    container: Container,
) -> None:
    user_id, _ = sign_up(container)
    good = [(e.message_group, e.to_json()) for e in envelopes(container, user_id)]
    poison = ("user:poison", json.dumps({"schema": 1, "not": "an envelope"}))
    event = sqs_event([poison, *good])
    set_container(container)
    try:
        reply = LocalInvoker().invoke_event_raw("ProjectorFunction", event)
    finally:
        set_container(None)
    assert reply == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert account.me_from_read_model(container.read_models, user_id) is not None
    assert container.read_models.all_seen(e.outbox_id for e in envelopes(container, user_id))


def test_read_model_keys_hold_the_versions_they_reflect(container: Container) -> None:
    user_id, _ = sign_up(container)
    charge(container, user_id, 5)
    for envelope in envelopes(container, user_id):
        container.projector.handle(envelope)
    key = f"{generation_prefix(container.read_models.generation() or 0)}user:{user_id}"
    assert container.redis.hget(key, "_v") == b"2"
