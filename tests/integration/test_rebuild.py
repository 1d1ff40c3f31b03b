"""`giftmarket read-models rebuild` on real MariaDB and Redis: a new generation switched in
at once, nothing half-built served, no event lost while it runs; and the search history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from tests.support.outbox import outbox_envelopes
from tests.support.stack import giftmarket_cli, redis_stopped

from giftmarket.adapters import tables
from giftmarket.adapters.read_models import GENERATION_KEY, SEQUENCE_KEY, generation_prefix
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts
from giftmarket.consistency import ConsistencyToken
from giftmarket.domain.ids import new_id
from giftmarket.domain.images import s3_key_for
from giftmarket.http.auth import TokenService
from giftmarket.projections import ops
from giftmarket.projections.rebuild import ensure_read_models, rebuild_read_models
from giftmarket.queries import account
from giftmarket.read_ports import RebuildRunning
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.stack import Stack


@pytest.fixture
def container(make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = bootstrap(make_settings(events_queue_url=None))
    yield built
    built.close()


def sign_up(container: Container) -> str:
    command = accounts.SignUp(f"{uuid.uuid4().hex}@rebuild.test", "password123", "rb")
    account, committed = container.command_executor.execute(command)
    project(container, committed.outbox_ids)
    return account.user_id


def charge(container: Container, user_id: str, amount: int) -> tuple[str, ...]:
    command = accounts.ChargePoints(user_id, amount)
    _, committed = container.command_executor.execute(command)
    return committed.outbox_ids


def project(container: Container, outbox_ids: tuple[str, ...]) -> None:
    for envelope in outbox_envelopes(container.database, tables.outbox.c.id.in_(outbox_ids)):
        container.projector.handle(envelope)


def test_the_cli_rebuilds_into_a_new_generation_and_drops_the_old_one(
    stack: Stack, container: Container
) -> None:
    user_id = sign_up(container)
    before = container.read_models.generation()
    assert before is not None
    result = giftmarket_cli(stack, "read-models", "rebuild", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["previous"], report["generation"]) == (before, before + 1)
    assert report["source"] == "replica" and report["rows"]["users"] >= 1
    assert container.read_models.generation() == before + 1
    assert account.me_from_read_model(container.read_models, user_id) is not None
    old_keys = list(container.redis.scan_iter(match=f"{generation_prefix(before)}*"))
    assert old_keys == []


def test_events_projected_while_the_rebuild_runs_reach_the_new_generation(
    container: Container,
) -> None:
    user_id = sign_up(container)
    during: list[tuple[str, ...]] = []
    served_during: list[int | None] = []
    current = container.read_models.generation()

    def meanwhile(what: str, done: int, total: int) -> None:
        # After the snapshot began (the users are already streamed): a charge commits and
        # is projected. Only the projector's write to both generations can carry it over.
        if what == "orders" and not during:
            written = charge(container, user_id, 4321)
            project(container, written)
            during.append(written)
            served_during.append(container.read_models.generation())

    report = rebuild_read_models(container.settings, container.database, meanwhile)
    assert during, "the hook did not run"
    # Nothing half-built was served: queries read the old generation until the switch.
    assert served_during == [current]
    assert report.generation == container.read_models.generation() != current
    assert account.me_from_read_model(container.read_models, user_id)["available_points"] == 4321  # type: ignore[index]


def test_a_second_rebuild_while_one_runs_is_refused_and_leaves_it_alone(
    container: Container,
) -> None:
    refused: list[BaseException] = []

    def second(what: str, done: int, total: int) -> None:
        if what == "users" and not refused:
            try:
                rebuild_read_models(container.settings, container.database)
            except RebuildRunning as exc:
                refused.append(exc)

    report = rebuild_read_models(container.settings, container.database, second)
    assert len(refused) == 1
    assert container.read_models.generation() == report.generation
    assert container.read_models.building() is None


def test_read_models_lost_by_redis_are_rebuilt_by_the_relays_check(
    container: Container, stack: Stack
) -> None:
    user_id = sign_up(container)
    ensured = ensure_read_models(container.read_models, container.settings, container.database)
    assert ensured is None  # there are read models: nothing to do
    with redis_stopped(stack):
        pass
    # The test Redis came back empty and redis_stopped rebuilt it; empty it again to see
    # the relay's check do the same.
    container.redis.flushdb()
    assert account.me_from_read_model(container.read_models, user_id) is None
    report = ensure_read_models(container.read_models, container.settings, container.database)
    assert report is not None and report.previous is None
    assert account.me_from_read_model(container.read_models, user_id) is not None


def test_read_models_of_an_older_layout_are_not_read_and_go_with_the_first_rebuild(
    container: Container,
) -> None:
    user_id = sign_up(container)
    client = container.redis
    # What the code before versioned layouts left: its pointer and a generation of its own.
    older = int(client.incr(SEQUENCE_KEY))
    client.set("rm:generation", older)
    client.hset(f"{generation_prefix(older)}user:{user_id}", mapping={"email": "old", "_v": 1})
    client.delete(GENERATION_KEY)
    assert container.read_models.generation() is None  # that one is not this layout's
    assert account.me_from_read_model(container.read_models, user_id) is None  # SQL answers
    report = ensure_read_models(container.read_models, container.settings, container.database)
    assert report is not None and report.dropped_keys >= 1
    assert client.get("rm:generation") is None
    assert not client.exists(f"{generation_prefix(older)}user:{user_id}")
    assert account.me_from_read_model(container.read_models, user_id) is not None


def test_an_orders_image_key_is_derived_until_the_image_is_deleted(container: Container) -> None:
    rm = container.read_models
    if rm.generation() is None:
        rm.switch_to(rm.begin_generation())
    order_id, image_id = new_id(), new_id()
    placed = ops.order(
        order_id, 1, parties={"product_id": new_id(), "buyer_id": "bea", "seller_id": "sal"},
        terms={"price": 5000, "discount": 0, "paid": 5000, "via": "buy_now",
               "image_id": image_id},
        status="PAID", completed_at=None, settled_at=None, created_at=datetime.now(UTC),
        facts={"delivered_at": datetime.now(UTC)},
    )  # fmt: skip
    rm.apply([placed])
    found = rm.gifticon(order_id)
    assert found is not None and found[2] == s3_key_for("sal", image_id)
    rm.apply([ops.image_deleted(image_id, 4)])
    assert rm.gifticon(order_id) is None  # gone: the query asks SQL, which says so


def test_a_token_already_projected_but_missing_from_redis_is_answered_by_the_primary(
    container: Container,
) -> None:
    user_id = sign_up(container)
    written = charge(container, user_id, 99)
    for outbox_id in written:
        container.read_models.apply([], outbox_id=outbox_id)  # "seen", yet not in the model
    generation = container.read_models.generation()
    key = f"{generation_prefix(generation or 0)}user:{user_id}"
    container.redis.delete(key)

    answer = container.reads.answer(
        read_model=lambda: account.me_from_read_model(container.read_models, user_id),
        sql=lambda s: account.me_from_sql(s, user_id),
        token=ConsistencyToken(written, {}),
    )
    assert answer is not None and answer["available_points"] == 99


# -- search history --------------------------------------------------------------------------


@pytest.fixture
def api(container: Container) -> Iterator[Callable[..., Reply]]:
    set_container(container)
    tokens = TokenService(
        container.jwt_secret, timedelta(seconds=container.settings.jwt_ttl_seconds)
    )
    invoker = LocalInvoker()

    def get(path: str, user_id: str | None = None) -> Reply:
        headers: dict[str, str] = {}
        if user_id is not None:
            headers["authorization"] = f"Bearer {tokens.issue(user_id)}"
        return invoker.http("GET", path, headers=headers)

    try:
        yield get
    finally:
        set_container(None)


def test_search_history_is_newest_first_without_repeats_and_at_most_ten(
    container: Container, api: Callable[..., Reply]
) -> None:
    user_id = sign_up(container)
    for q in ["latte", "cake", "latte", *[f"q{i}" for i in range(10)], "cake"]:
        assert api(f"/api/search?q={q}", user_id).status == 200
    reply = api("/api/me/search-history", user_id)
    assert reply.status == 200
    queries = [item["query"] for item in reply.body["items"]]
    assert queries == ["cake", "q9", "q8", "q7", "q6", "q5", "q4", "q3", "q2", "q1"]
    times = [datetime.fromisoformat(item["searched_at"]) for item in reply.body["items"]]
    assert times == sorted(times, reverse=True)
    assert all(t.tzinfo is not None and t <= datetime.now(UTC) for t in times)


def test_anonymous_searches_are_not_recorded_and_history_needs_a_token(
    container: Container, api: Callable[..., Reply]
) -> None:
    user_id = sign_up(container)
    assert api("/api/search?q=anonymous").status == 200
    assert api("/api/me/search-history", user_id).body == {"items": []}
    reply = api("/api/me/search-history")
    assert reply.status == 401


def test_with_redis_down_search_still_answers_and_history_is_a_503(
    container: Container, api: Callable[..., Reply], stack: Stack
) -> None:
    user_id = sign_up(container)
    with redis_stopped(stack):
        searched = api("/api/search?q=latte", user_id)
        history = api("/api/me/search-history", user_id)
    assert searched.status == 200
    assert history.status == 503
    assert history.headers["content-type"] == "application/problem+json"
    assert history.body["code"] == "cache_unavailable" and "retry-after" in history.headers
