"""The ask expiry job on the real primary: which asks expire, the barcodes it frees, buy-now's
margin in SQL, a rerun, and the same job through the Lambda handler and the CLI.

The database is shared by the session and outlives it (GM_KEEP_TEST_STACK), so each test
lists its asks on a product of its own, 30 days in the past, and runs the job as of an
instant in the past too: it never expires an ask of another test that was not already due
today. Assertions look at the test's own rows only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import TypeVar

import pytest
from sqlalchemy import select, update
from tests.support.fakes import FakeClock, FakeImageStore, valid_until
from tests.support.stack import SettingsFactory, giftmarket_cli

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.executor import Command
from giftmarket.domain.errors import DomainError, NoMatchingBid, VoucherDuplicate
from giftmarket.domain.images import s3_key_for
from giftmarket.domain.settlement import KST, business_date_of
from giftmarket.jobs.expiry import ExpiryReport, expire_asks
from giftmarket_local.invoke import LocalInvoker
from giftmarket_local.stack import Stack

T = TypeVar("T")
ADMIN = "admin@giftmarket.local"
PASSWORD = "password123"
EVENTS = Path(__file__).parents[2] / "functions/expire_asks/events"
DAY = timedelta(days=1)
_s, _v = tables.sell_bids, tables.voucher_registry


def unique_barcode() -> str:
    """A barcode no run has listed: the registry on a kept test stack outlives a run."""
    return str(uuid.uuid4().int)[:20]


def kst(day: date, hour: int = 0, minute: int = 5) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=KST)


@dataclass
class Market:
    container: Container
    clock: FakeClock
    images: FakeImageStore
    listed_on: date  # the Korean date the asks were listed on, 30 days ago
    product_id: str = ""

    def run(self, command: Command[T]) -> T:
        return self.container.command_executor.execute(command)[0]

    def user(self, points: int = 0) -> str:
        signup = accounts.SignUp(f"{uuid.uuid4().hex}@expiry.test", PASSWORD, "e")
        user_id = self.run(signup).user_id
        if points:
            self.run(accounts.ChargePoints(user_id, points))
        return user_id

    def admin(self) -> str:
        try:
            return self.run(accounts.SignIn(ADMIN, PASSWORD)).user_id
        except DomainError:
            return self.run(accounts.SignUp(ADMIN, PASSWORD, "admin")).user_id

    def ask(
        self, price: int, valid_days: int, *, barcode: str | None = None, seller: str = ""
    ) -> str:
        """An ask listed 30 days ago, its voucher valid `valid_days` after that day."""
        self.clock.now = kst(self.listed_on, 12)
        seller = seller or self.user()
        slot = self.run(catalog.RequestImageUpload(seller, "image/png"))
        self.images.put(s3_key_for(seller, slot.image_id))
        place = trading.PlaceSellBid(
            seller,
            self.product_id,
            price,
            slot.image_id,
            barcode or unique_barcode(),
            valid_until(self.clock(), valid_days),
        )
        return self.run(place).bid_id

    def expire_on(self, day: date) -> ExpiryReport:
        """The job as the schedule runs it on `day` (00:05 in Korea)."""
        self.clock.now = kst(day)
        return expire_asks(self.container.command_executor, now=self.clock())

    def status(self, *ask_ids: str) -> list[str]:
        with self.container.database.writer.connect() as conn:
            query = select(_s.c.id, _s.c.status).where(_s.c.id.in_(ask_ids))
            found = {row.id: row.status for row in conn.execute(query)}
        return [found[ask_id] for ask_id in ask_ids]

    def registered(self, ask_id: str) -> int:
        with self.container.database.writer.connect() as conn:
            rows = conn.execute(select(_v.c.kid).where(_v.c.sell_bid_id == ask_id)).all()
        return len(rows)


@pytest.fixture
def market(make_settings: SettingsFactory) -> Iterator[Market]:
    clock, images = FakeClock(), FakeImageStore()
    container = bootstrap(make_settings(events_queue_url=None), images=images)
    container.command_context = replace(container.command_context, clock=clock)
    listed_on = business_date_of(datetime.now(UTC)) - 30 * DAY
    market = Market(container, clock, images, listed_on)
    market.clock.now = kst(listed_on, 9)
    register = catalog.RegisterProduct(market.admin(), "Mocha", "Cafe", "expiry", 6000)
    market.product_id = market.run(register)
    yield market
    container.close()


def test_asks_inside_the_margin_expire_the_others_stay_and_a_rerun_changes_nothing(
    market: Market,
) -> None:
    due = market.ask(5000, valid_days=3)  # last valid day: listed_on + 3
    a_day_more = market.ask(5000, valid_days=4)
    later = market.ask(5000, valid_days=60)

    first = market.expire_on(market.listed_on + 3 * DAY)

    assert first.takeable_from == market.listed_on + 4 * DAY
    assert first.expired >= 1
    assert market.status(due, a_day_more, later) == ["EXPIRED", "OPEN", "OPEN"]
    with market.container.database.writer.connect() as conn:
        closed_at = conn.execute(select(_s.c.updated_at).where(_s.c.id == due)).scalar_one()
    assert closed_at.replace(tzinfo=UTC) == market.clock.now.astimezone(UTC)

    again = market.expire_on(market.listed_on + 3 * DAY)

    assert again.expired == 0
    assert market.status(due, a_day_more, later) == ["EXPIRED", "OPEN", "OPEN"]


def test_an_ask_listed_before_vouchers_had_an_expiry_expires(market: Market) -> None:
    legacy = market.ask(5000, valid_days=60)
    with market.container.database.writer.begin() as conn:
        conn.execute(
            update(_s).where(_s.c.id == legacy).values(expires_on=None, barcode_last4=None)
        )

    market.expire_on(market.listed_on + DAY)

    assert market.status(legacy) == ["EXPIRED"]


def test_the_job_frees_the_barcode_of_an_expired_ask_for_a_new_listing(market: Market) -> None:
    barcode = unique_barcode()
    expiring = market.ask(5000, valid_days=3, barcode=barcode)
    assert market.registered(expiring) >= 1
    with pytest.raises(VoucherDuplicate):
        market.ask(5000, valid_days=30, barcode=barcode)

    market.expire_on(market.listed_on + 5 * DAY)

    assert market.registered(expiring) == 0
    relisted = market.ask(5000, valid_days=30, barcode=barcode)
    assert market.status(expiring, relisted) == ["EXPIRED", "OPEN"]
    assert market.registered(relisted) >= 1


def test_an_ask_a_buy_now_holds_is_skipped_not_waited_for_and_expired_next_time(
    market: Market,
) -> None:
    held = market.ask(5000, valid_days=3)
    free = market.ask(5100, valid_days=3)
    with market.container.database.writer.connect() as other:
        with other.begin():
            # Another transaction (a buy-now taking it) holds the ask's row.
            other.execute(select(_s.c.id).where(_s.c.id == held).with_for_update())
            started = monotonic()
            market.expire_on(market.listed_on + 5 * DAY)
            waited = monotonic() - started
            assert market.status(held, free) == ["OPEN", "EXPIRED"]
    assert waited < 5  # far below innodb_lock_wait_timeout

    market.expire_on(market.listed_on + 5 * DAY)

    assert market.status(held) == ["EXPIRED"]


def test_buy_now_never_takes_an_ask_inside_the_margin_even_before_the_job_ran(
    market: Market,
) -> None:
    cheap_but_due = market.ask(4000, valid_days=3)
    dearer = market.ask(5000, valid_days=60)
    buyer = market.user(points=20_000)
    market.clock.now = kst(market.listed_on + 3 * DAY, 9)  # the cheap one's last valid day

    bought = market.run(trading.BuyNow(buyer, market.product_id, 5000))

    with market.container.database.writer.connect() as conn:
        taken = conn.execute(
            select(tables.orders.c.sell_bid_id).where(tables.orders.c.id == bought.order_id)
        ).scalar_one()
    assert taken == dearer
    assert market.status(cheap_but_due) == ["OPEN"]  # still open: the job closes it
    with pytest.raises(NoMatchingBid):
        market.run(trading.BuyNow(buyer, market.product_id, 5000))


def test_an_expired_ask_leaves_the_book(market: Market) -> None:
    ask_id = market.ask(5000, valid_days=3)
    market.expire_on(market.listed_on + 4 * DAY)
    buyer = market.user(points=20_000)
    market.clock.now = kst(market.listed_on + 2 * DAY, 9)  # even where it was valid again

    with market.container.unit_of_work() as uow:
        assert uow.sell_bids.lowest_open_price(market.product_id) is None
    with pytest.raises(NoMatchingBid):
        market.run(trading.BuyNow(buyer, market.product_id, 5000))
    assert market.status(ask_id) == ["EXPIRED"]


def test_the_handler_expires_what_is_due_now_with_the_schedules_event(market: Market) -> None:
    # Listed 30 days ago, valid for 3: due for real, as of the invocation.
    due = market.ask(5000, valid_days=3)
    market.clock.now = datetime.now(UTC)
    event = json.loads((EVENTS / "scheduled.json").read_text())
    set_container(market.container)
    try:
        answer = LocalInvoker().invoke_event_raw("ExpireAsksFunction", event)
    finally:
        set_container(None)

    today = business_date_of(market.clock.now)
    assert answer["takeable_from"] == (today + DAY).isoformat()
    assert answer["expired"] >= 1
    assert market.status(due) == ["EXPIRED"]


def test_giftmarket_jobs_expire_asks_expires_what_is_due_and_says_so(
    market: Market, stack: Stack
) -> None:
    due = market.ask(5000, valid_days=3)
    kept = market.ask(5000, valid_days=60)

    result = giftmarket_cli(stack, "jobs", "expire-asks")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("expired ")
    tomorrow = business_date_of(datetime.now(UTC)) + DAY
    assert f"the open ones are valid on {tomorrow.isoformat()} or later" in result.stdout
    assert market.status(due, kept) == ["EXPIRED", "OPEN"]
