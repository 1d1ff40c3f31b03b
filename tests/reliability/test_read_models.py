"""The Redis read models against the truth, on real MariaDB and Redis.

A market scenario is played through the real commands (well over 1000 outbox events:
signups, charges, products, likes, asks, bids, cancels, buy-now with coupons, sell-now,
confirmations, settlements; and, with manual inspection, inspections passed and failed,
disputes refunded (coupons restored) and rejected, and asks expired). Then:
- a rebuild from the database answers every query exactly as the SQL views do;
- the same events delivered twice, shuffled, to an empty generation give exactly the
  rebuilt read models, key by key (closed bids' tombstones aside), and the same answers.

Each side lives in its own Redis database, so the comparison sees only what it built.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import boto3
import pytest
from sqlalchemy import func, select
from tests.support.fakes import RecordedCommands, fresh_barcode, valid_until
from tests.support.outbox import outbox_envelopes

from giftmarket.adapters import tables
from giftmarket.adapters.cache import build_redis
from giftmarket.adapters.read_models import ReadModels, generation_prefix
from giftmarket.bootstrap import Container, bootstrap
from giftmarket.commands import accounts, catalog, orders, trading
from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import Command
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain.errors import DomainError, NotDelivered
from giftmarket.domain.orders import DisputeDecision, InspectionResult
from giftmarket.domain.settlement import SettledSale, Settlement
from giftmarket.jobs.expiry import expire_asks
from giftmarket.messages import EventEnvelope
from giftmarket.projections.projector import Projector
from giftmarket.projections.rebuild import rebuild
from giftmarket.queries import account, admin, params, products, trades
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

T = TypeVar("T")
ADMIN = "admin@giftmarket.local"


@dataclass
class Market:
    category: str
    users: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    events: list[EventEnvelope] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        """Every entity the scenario made (the admin, shared with other tests, aside)."""
        return {e.aggregate_id for e in self.events} - {self.admin}

    admin: str = ""


@pytest.fixture(scope="module")
def container(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Container]:
    built = bootstrap(
        make_settings(
            events_queue_url=None,
            aws_endpoint_url=stack.config.localstack_url,
            aws_region=stack.config.region,
        )
    )
    yield built
    built.close()


@pytest.fixture(scope="module")
def inspecting(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Container]:
    """The same market with manual inspection: its orders wait for an admin."""
    built = bootstrap(
        make_settings(
            events_queue_url=None,
            aws_endpoint_url=stack.config.localstack_url,
            aws_region=stack.config.region,
            inspection_mode="manual",
        )
    )
    yield built
    built.close()


class Player:
    def __init__(self, container: Container, inspecting: Container, rng: random.Random) -> None:
        self.container = container
        self.inspecting = inspecting
        self.rng = rng
        self.s3 = boto3.client(
            "s3",
            endpoint_url=container.settings.aws_endpoint_url,
            region_name=container.settings.aws_region,
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 - LocalStack
        )

    def run(self, command: Command[T], *, manual: bool = False) -> T:
        container = self.inspecting if manual else self.container
        return container.command_executor.execute(command)[0]

    def try_run(self, command: Command[Any], *, manual: bool = False) -> bool:
        try:
            self.run(command, manual=manual)
        except DomainError:
            return False
        return True

    def voucher(self) -> tuple[str, date]:
        """A fresh voucher, a few of them short-lived: the expiry run at the end closes
        those asks."""
        return fresh_barcode(), valid_until(datetime.now(UTC), self.rng.choice([3, 30, 30]))

    def sign_up(self, email: str | None = None) -> str:
        command = accounts.SignUp(email or f"{uuid.uuid4().hex}@rm.test", "password123", "rm")
        return self.run(command).user_id

    def admin(self) -> str:
        command = accounts.SignIn(ADMIN, "password123")
        try:
            return self.run(command).user_id
        except DomainError:
            return self.sign_up(ADMIN)

    def image(self, seller: str) -> str:
        command = catalog.RequestImageUpload(seller, "image/png")
        slot = self.run(command)
        self.s3.put_object(
            Bucket=self.container.settings.images_bucket,
            Key=f"images/{seller}/{slot.image_id}",
            Body=b"\x89PNG\r\n\x1a\n" + b"0" * 64,
            ContentType="image/png",
        )
        return slot.image_id


def settle(player: Player, seller: str, day: date, orders: list[str] | None = None) -> None:
    """Settle a seller's completed orders (the settlement job's effect on orders, without
    its ledger postings, which no read model shows): `orders` as aggregates, an
    OrderSettled each; or, without `orders`, all of them as the daily job does, marked in
    SQL and announced by the settlement (OrdersSettled, two orders an event to make
    several)."""

    def handler(uow: UnitOfWork, ctx: CommandContext) -> None:
        now = ctx.clock()
        sales: Sequence[SettledSale]
        if orders is None:
            rows = uow.orders.lock_for_settlement(seller, now + timedelta(days=1))

            def mark(settlement: Settlement) -> None:
                settlement.announce_settled(rows, now, per_event=2)
                uow.orders.mark_settled(rows, settlement.id, now)

            sales = rows
        else:
            found = [uow.orders.get(o, lock=True) for o in orders]
            completed = [o for o in found if o is not None and o.status == "COMPLETED"]

            def mark(settlement: Settlement) -> None:
                for order in completed:
                    order.settle(settlement.id, now)

            sales = completed
        if not sales:
            return
        settlement = Settlement.of_orders(
            settlement_id=ctx.ids(),
            seller_id=seller,
            business_date=day,
            orders=sales,
            fee_bps=500,
            now=now,
        )
        uow.settlements.add(settlement)  # first: the orders' rows refer to it
        mark(settlement)

    player.container.command_executor.transaction(handler)


@pytest.fixture(scope="module")
def market(container: Container, inspecting: Container, stack: Stack) -> Market:
    rng = random.Random(20261122)
    player = Player(container, inspecting, rng)
    # The expiry job below is the real one: it expires every ask that is due, other tests'
    # too (rows they wrote straight into the tables, never projected). Those go now, before
    # the scenario's events begin, so that only the scenario's asks expire inside it.
    expire_asks(container.command_executor, now=datetime.now(UTC) + timedelta(days=3))
    with container.database.writer.connect() as conn:
        start = conn.execute(select(func.max(tables.outbox.c.id))).scalar() or ""
    m = Market(category=f"rm-{uuid.uuid4().hex[:8]}", admin=player.admin())

    for _ in range(24):
        user = player.sign_up()
        m.users.append(user)
        welcome = accounts.IssueWelcomeCoupon(user)
        player.run(welcome)
        for _ in range(2):
            charge = accounts.ChargePoints(user, rng.randrange(20_000, 60_000))
            player.run(charge)
    for i in range(8):
        register = catalog.RegisterProduct(m.admin, f"Gift {i}", f"Brand {i % 3}", m.category, 5000)
        m.products.append(player.run(register))
    for user in m.users[:8]:
        expires = datetime.now(UTC) + timedelta(days=rng.choice([-1, 30]))
        issue = catalog.IssueCoupon(m.admin, user, "Promo", 500, expires)
        player.try_run(issue)

    asks: list[tuple[str, str, str]] = []  # (seller, product, ask)
    for _ in range(640):
        action = rng.choice(["like", "unlike", "ask", "ask", "bid", "cancel_ask", "cancel_bid",
                             "buy_now", "buy_now", "sell_now", "confirm", "inspect", "dispute",
                             "resolve"])  # fmt: skip
        user, product = rng.choice(m.users), rng.choice(m.products)
        if action in ("like", "unlike"):
            like = catalog.SetLike(user, product, action == "like")
            player.try_run(like)
        elif action == "ask":
            price = rng.randrange(46, 60) * 100
            command = trading.PlaceSellBid(
                user, product, price, player.image(user), *player.voucher()
            )
            try:
                placed = player.run(command)
            except DomainError:
                continue
            asks.append((user, product, placed.bid_id))
        elif action == "bid":
            command_b = trading.PlaceBuyBid(user, product, rng.randrange(30, 46) * 100)
            player.try_run(command_b)
        elif action == "cancel_ask" and asks:
            seller, _, ask = asks.pop(rng.randrange(len(asks)))
            cancel = trading.CancelSellBid(seller, ask)
            player.try_run(cancel)
        elif action == "cancel_bid":
            open_bids = _open_bids(container, m.users)
            if open_bids:
                buyer, bid = rng.choice(open_bids)
                cancel_b = trading.CancelBuyBid(buyer, bid)
                player.try_run(cancel_b)
        elif action == "buy_now":
            coupon = _usable_coupon(container, user) if rng.random() < 0.3 else None
            buy = trading.BuyNow(user, product, 6000, coupon)
            player.try_run(buy, manual=rng.random() < 0.5)
        elif action == "sell_now":
            sell = trading.SellNow(user, product, 3000, player.image(user), *player.voucher())
            player.try_run(sell, manual=rng.random() < 0.5)
        elif action == "inspect":
            for order_id in _orders_in(container, m.users, "INSPECTING", by="buyer")[:1]:
                passed = rng.random() < 0.7
                result = InspectionResult.PASS if passed else InspectionResult.FAIL
                reason = None if passed else "the barcode does not scan"
                decide = orders.DecideInspection(m.admin, order_id, result, reason)
                player.try_run(decide)
        elif action == "dispute":
            for order_id, buyer in _paid_orders(container, m.users)[-1:]:
                dispute = orders.OpenDispute(buyer, order_id, "already used")
                player.try_run(dispute)
        elif action == "resolve":
            for order_id in _orders_in(container, m.users, "DISPUTED", by="buyer")[:1]:
                decision = rng.choice([DisputeDecision.REFUND, DisputeDecision.REJECT])
                resolve = orders.ResolveDispute(m.admin, order_id, decision, "checked")
                player.try_run(resolve)
        elif action == "confirm":
            for order_id, buyer in _paid_orders(container, m.users)[:2]:
                confirm = trading.ConfirmOrder(buyer, order_id)
                player.try_run(confirm)
    for seller, completed in _completed_by_seller(container, m.users).items():
        chance = rng.random()
        if chance < 0.3:
            settle(player, seller, date(2026, 11, 21))
        elif chance < 0.6:
            settle(player, seller, date(2026, 11, 21), completed[: len(completed) // 2 + 1])
    # Three days on, the short-lived vouchers are inside the expiry margin.
    expire_asks(container.command_executor, now=datetime.now(UTC) + timedelta(days=3))

    m.events = outbox_envelopes(container.database, tables.outbox.c.id > start)
    m.orders = [e.aggregate_id for e in m.events if e.event_type == "OrderPlaced"]
    stack.wait_replica_caught_up()
    return m


def _open_bids(container: Container, users: list[str]) -> list[tuple[str, str]]:
    b = tables.buy_bids
    with container.database.writer.connect() as conn:
        rows = conn.execute(
            select(b.c.buyer_id, b.c.id).where(b.c.buyer_id.in_(users), b.c.status == "OPEN")
        ).all()
    return [(r.buyer_id, r.id) for r in rows]


def _usable_coupon(container: Container, user: str) -> str | None:
    c = tables.coupons
    with container.database.writer.connect() as conn:
        return conn.execute(
            select(c.c.id).where(
                c.c.user_id == user,
                c.c.status == "AVAILABLE",
                c.c.expires_at > datetime.now(UTC).replace(tzinfo=None),
            )
        ).scalar()


def _orders_in(container: Container, users: list[str], status: str, *, by: str) -> list[str]:
    o = tables.orders
    with container.database.writer.connect() as conn:
        return list(
            conn.execute(
                select(o.c.id)
                .where(o.c[f"{by}_id"].in_(users), o.c.status == status)
                .order_by(o.c.id)
            ).scalars()
        )


def _paid_orders(container: Container, users: list[str]) -> list[tuple[str, str]]:
    o = tables.orders
    with container.database.writer.connect() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.buyer_id).where(o.c.buyer_id.in_(users), o.c.status == "PAID")
        ).all()
    return [(r.id, r.buyer_id) for r in rows]


def _completed_by_seller(container: Container, users: list[str]) -> dict[str, list[str]]:
    o = tables.orders
    with container.database.writer.connect() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.seller_id)
            .where(o.c.seller_id.in_(users), o.c.status == "COMPLETED")
            .order_by(o.c.id)
        ).all()
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r.seller_id, []).append(r.id)
    return found


# -- the two read-model stores -------------------------------------------------------------


def read_models_in(container: Container, db: int) -> ReadModels:
    url = container.settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    # The stack's Redis speaks TLS only: the application's client, pointed at another db.
    client = build_redis(container.settings.model_copy(update={"redis_url": url}))
    client.flushdb()
    return ReadModels(client)


@pytest.fixture(scope="module")
def rebuilt(container: Container, market: Market) -> Iterator[ReadModels]:
    rm = read_models_in(container, 3)
    report = rebuild(rm, container.database)
    assert report.source == "replica" and report.previous is None
    yield rm
    rm.client.flushdb()
    rm.client.close()


@pytest.fixture(scope="module")
def projected(container: Container, market: Market) -> Iterator[ReadModels]:
    rm = read_models_in(container, 4)
    rm.switch_to(rm.begin_generation())
    # The projector's commands (the welcome coupon) are not part of this comparison.
    no_coupons = RecordedCommands((accounts.IssueWelcomeCoupon,)).executor
    projector = Projector(rm, no_coupons)
    deliveries = market.events * 2
    random.Random(7).shuffle(deliveries)
    for envelope in deliveries:
        projector.handle(envelope)
    yield rm
    rm.client.flushdb()
    rm.client.close()


def dump(rm: ReadModels, ids: set[str], category: str) -> dict[str, Any]:
    """The read models of the scenario's entities: every key named after one of them (but
    closed bids' tombstones, which expire), and their members of the shared sorted sets."""
    client = rm.client
    prefix = generation_prefix(rm.generation() or 0)
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        key = raw.decode()[len(prefix) :]
        owner = key.rsplit(":", 1)[-1]
        shared = key.startswith(("list:", "rank:", "queue:"))
        if not shared and owner not in ids:
            continue
        if shared and key.startswith("list:") and not key.endswith(f":c:{category}"):
            continue
        if client.ttl(raw) != -1:
            continue
        if client.type(raw) == b"hash":
            out[key] = client.hgetall(raw)
        else:
            members: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
                raw, 0, -1, withscores=True
            )
            out[key] = [(m, s) for m, s in members if not shared or m.decode()[-26:] in ids]
    return out


# -- the tests -----------------------------------------------------------------------------


def test_the_scenario_made_over_a_thousand_events_of_every_kind(market: Market) -> None:
    kinds = {e.event_type for e in market.events}
    assert len(market.events) >= 1000, len(market.events)
    assert {
        "UserSignedUp", "UserBalancesChanged", "ProductRegistered", "ProductLiked",
        "ProductUnliked", "ImageRequested", "SellBidPlaced", "SellBidCancelled",
        "SellBidMatched", "BuyBidPlaced", "BuyBidMatched", "OrderPlaced", "OrderCompleted",
        "OrderSettled", "OrdersSettled", "CouponIssued", "CouponUsed", "SettlementCompleted",
        "SellBidExpired", "OrderDelivered", "OrderInspectionFailed", "OrderDisputed",
        "OrderDisputeResolved", "OrderRefunded", "CouponRestored",
    } <= kinds  # fmt: skip
    statuses = {e.payload.get("decision") for e in market.events} | {
        e.payload.get("status") for e in market.events if e.event_type == "OrderPlaced"
    }
    assert {"refund", "reject", "PAID", "INSPECTING"} <= statuses


def test_events_delivered_twice_and_shuffled_equal_a_fresh_rebuild(
    market: Market, rebuilt: ReadModels, projected: ReadModels, figure: Callable[[str], None]
) -> None:
    from_rebuild = dump(rebuilt, market.ids, market.category)
    from_events = dump(projected, market.ids, market.category)
    assert len(from_rebuild) > 300
    assert from_events.keys() == from_rebuild.keys()
    assert from_events == from_rebuild
    figure(
        f"{2 * len(market.events)} deliveries ({len(market.events)} events each twice, shuffled):"
        f" {len(from_events)} read-model keys, 0 differing from a fresh rebuild"
    )


def answers(rm: ReadModels, market: Market, now: datetime) -> dict[str, Any]:
    """Every query's answer about the scenario, from `rm` (None where it cannot answer)."""
    out: dict[str, Any] = {}
    for product in market.products:
        out[f"product {product}"] = products.product_detail_from_read_model(rm, product)
    for sort in params.PRODUCT_SORTS:
        out[f"list {sort}"] = products.product_list_from_read_model(
            rm,
            sort=sort,  # type: ignore[arg-type]
            category=market.category,
            after=None,
            limit=100,
        )
    for user in market.users:
        out[f"me {user}"] = account.me_from_read_model(rm, user)
        for state in ("bidding", "in_progress", "done"):
            out[f"buy {state} {user}"] = trades.history_from_read_model(
                rm, user, state, side=trades.BUYER, limit=100
            )
            out[f"sell {state} {user}"] = trades.history_from_read_model(
                rm, user, state, side=trades.SELLER, limit=100
            )
        out[f"coupons {user}"] = account.my_coupons_from_read_model(rm, user, now=now, limit=100)
        out[f"settlements {user}"] = account.my_settlements_from_read_model(rm, user, limit=100)
    for order in market.orders:
        for viewer in viewers(market, order):
            out[f"order {order} for {viewer}"] = trades.order_detail_from_read_model(
                rm, order, viewer
            )
            out[f"gifticon {order} for {viewer}"] = download(
                trades.order_gifticon_key_from_read_model, rm, order, viewer
            )
    for name, shape in (("inspections", admin.inspection_item), ("disputes", admin.dispute_item)):
        queued = rm.queue(name, 10_000)
        out[f"queue {name}"] = None if queued is None else _ours(market, map(shape, queued))
    return out


def viewers(market: Market, order: str) -> list[str]:
    """Its buyer, its seller, and a few who are neither (but for chance)."""
    placed = next(
        e for e in market.events if e.event_type == "OrderPlaced" and e.aggregate_id == order
    )
    parties = [str(placed.payload["buyer_id"]), str(placed.payload["seller_id"])]
    return parties + market.users[:2] + [market.admin]


def download(reader: Callable[..., str | None], *args: Any) -> str | None:
    try:
        return reader(*args)
    except NotDelivered:
        return "not_delivered"


def _ours(market: Market, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scenario's part of an admins' queue (other tests share the stack)."""
    orders_made = set(market.orders)
    return [item for item in items if item["order_id"] in orders_made]


def sql_answers(container: Container, market: Market, now: datetime) -> dict[str, Any]:
    def run(view: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return container.database.run_on_primary(lambda s: view(s, *args, **kwargs))

    out: dict[str, Any] = {}
    for product in market.products:
        out[f"product {product}"] = run(products.product_detail_from_sql, product)
    for sort in params.PRODUCT_SORTS:
        out[f"list {sort}"] = run(
            products.product_list_from_sql, sort=sort, category=market.category, limit=100
        )
    for user in market.users:
        out[f"me {user}"] = run(account.me_from_sql, user)
        for state in ("bidding", "in_progress", "done"):
            out[f"buy {state} {user}"] = run(
                trades.history_from_sql, user, state, side=trades.BUYER, limit=100
            )
            out[f"sell {state} {user}"] = run(
                trades.history_from_sql, user, state, side=trades.SELLER, limit=100
            )
        out[f"coupons {user}"] = run(account.my_coupons_from_sql, user, now=now, limit=100)
        out[f"settlements {user}"] = run(account.my_settlements_from_sql, user, limit=100)
    for order in market.orders:
        for viewer in viewers(market, order):
            out[f"order {order} for {viewer}"] = run(trades.order_detail_from_sql, order, viewer)
            out[f"gifticon {order} for {viewer}"] = download(
                run, trades.order_gifticon_key_from_sql, order, viewer
            )
    out["queue inspections"] = _ours(market, run(admin.inspections_from_sql, limit=10_000)["items"])
    out["queue disputes"] = _ours(market, run(admin.disputes_from_sql, limit=10_000)["items"])
    return out


def test_rebuilt_read_models_answer_every_query_as_sql_does(
    container: Container, market: Market, rebuilt: ReadModels
) -> None:
    now = datetime.now(UTC)
    expected = sql_answers(container, market, now)
    got = answers(rebuilt, market, now)
    # Strangers' order lookups are None on both sides; everything else must be answered.
    assert all(v is not None for k, v in got.items() if not k.startswith(("order", "gifticon")))
    assert any(v is not None for k, v in got.items() if k.startswith("order"))
    assert "not_delivered" in got.values()
    assert got["queue inspections"] and got["queue disputes"]
    statuses = {v["status"] for k, v in got.items() if k.startswith("order") and v}
    assert {"INSPECTING", "DISPUTED", "REFUNDED", "COMPLETED", "SETTLED"} <= statuses
    expired = [
        item
        for k, v in got.items()
        if k.startswith("sell done")
        for item in v["items"]
        if item.get("status") == "EXPIRED"
    ]
    assert expired and all(item["expires_on"] for item in expired)
    assert any(v["asks"] for k, v in got.items() if k.startswith("product "))
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    ranked = {
        by: products.rankings_from_read_model(rebuilt, by=by, limit=100)
        for by in ("likes", "orders")
    }
    assert ranked == {
        by: container.database.run_on_primary(partial(products.rankings_from_sql, by=by, limit=100))
        for by in ("likes", "orders")
    }


def test_projected_read_models_answer_as_the_rebuilt_ones(
    market: Market, rebuilt: ReadModels, projected: ReadModels
) -> None:
    now = datetime.now(UTC)
    assert answers(projected, market, now) == answers(rebuilt, market, now)
