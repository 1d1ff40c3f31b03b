"""The ask expiry job (jobs/expiry.py) on the fakes: which asks it expires, what it frees,
that a rerun changes nothing, and the same run through the Lambda handler and the CLI."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.fakes import FakeUnitOfWork
from tests.support.market import Market, new_market
from typer.testing import CliRunner

from giftmarket import cli
from giftmarket.bootstrap import Container, set_container
from giftmarket.commands import trading
from giftmarket.domain import events
from giftmarket.domain.errors import NoMatchingBid, VoucherDuplicate
from giftmarket.domain.orderbook import BidStatus
from giftmarket.domain.settlement import KST, business_date_of
from giftmarket.jobs.expiry import expire_asks
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker

EVENTS = Path(__file__).resolve().parents[2] / "functions" / "expire_asks" / "events"


@pytest.fixture
def market() -> Market:
    return new_market()


def today(market: Market) -> date:
    return business_date_of(market.clock())


def run_at(market: Market, day: date, hour: int = 0, minute: int = 5) -> datetime:
    """Moves the clock to `day` at `hour:minute` in Korea (the schedule's 00:05 by default)."""
    market.clock.now = datetime.combine(day, time(hour, minute), tzinfo=KST)
    return market.clock.now


def statuses(market: Market, *ask_ids: str) -> list[BidStatus]:
    return [market.ask(ask_id).status for ask_id in ask_ids]


def expire(market: Market) -> int:
    return expire_asks(market.executor(), now=market.clock()).expired


def test_asks_buy_now_may_no_longer_take_expire_and_the_others_stay(market: Market) -> None:
    product = market.new_product()
    start = today(market)
    last_day_soon = market.open_ask(product, 5000, valid_days=3)  # valid until start + 3
    a_day_more = market.open_ask(product, 5000, valid_days=4)
    later = market.open_ask(product, 5000, valid_days=30)

    run_at(market, start + timedelta(days=3))  # the last valid day of the first
    report = expire_asks(market.executor(), now=market.clock())

    assert (report.expired, report.takeable_from) == (1, start + timedelta(days=4))
    assert statuses(market, last_day_soon, a_day_more, later) == [
        BidStatus.EXPIRED,
        BidStatus.OPEN,
        BidStatus.OPEN,
    ]
    assert market.ask(last_day_soon).updated_at == market.clock()


def test_the_expiry_is_published_and_the_ask_leaves_the_book(market: Market) -> None:
    product = market.new_product()
    seller = market.signed_up()
    ask_id = market.open_ask(product, 5000, seller, valid_days=3)
    run_at(market, today(market) + timedelta(days=3))

    assert expire(market) == 1

    (expired,) = [e for e in market.store.events if isinstance(e, events.SellBidExpired)]
    assert (expired.sell_bid_id, expired.seller_id, expired.price) == (ask_id, seller, 5000)
    assert expired.version == market.ask(ask_id).version
    with market.uow:
        assert market.uow.sell_bids.lowest_open_price(product) is None
    buyer = market.signed_up(points=10_000)
    market.refused(trading.buy_now, trading.BuyNow(buyer, product, 10_000), NoMatchingBid)


def test_a_second_run_expires_nothing_and_writes_nothing(market: Market) -> None:
    product = market.new_product()
    market.open_ask(product, 5000, valid_days=3)
    run_at(market, today(market) + timedelta(days=5))
    assert expire(market) == 1
    before = market.store.state()

    assert expire(market) == 0

    assert market.store.state() == before


def test_an_ask_listed_before_vouchers_has_no_expiry_and_expires(market: Market) -> None:
    product = market.new_product()
    legacy = market.open_ask(product, 5000)
    kept = market.open_ask(product, 6000)
    row = market.store.rows["sell_bids"][legacy]
    market.store.rows["sell_bids"][legacy] = dataclasses.replace(
        row, expires_on=None, barcode_last4=None
    )

    assert expire(market) == 1

    assert statuses(market, legacy, kept) == [BidStatus.EXPIRED, BidStatus.OPEN]


def test_the_voucher_of_an_expired_ask_may_be_listed_again(market: Market) -> None:
    product = market.new_product()
    seller = market.signed_up()
    barcode = "8801234567890"
    market.open_ask(product, 5000, seller, barcode=barcode, valid_days=3)
    run_at(market, today(market) + timedelta(days=1))
    image_id = market.uploaded_image(seller)
    again = trading.PlaceSellBid(
        seller, product, 5000, image_id, barcode, today(market) + timedelta(days=30)
    )
    market.refused(trading.place_sell_bid, again, VoucherDuplicate)  # still on sale

    run_at(market, today(market) + timedelta(days=2))
    assert expire(market) == 1
    fingerprints = {(f.kid, f.digest) for f in market.ctx.barcodes.fingerprints(barcode)}
    assert not fingerprints & set(market.store.vouchers)  # the registry let it go
    again = dataclasses.replace(again, expires_on=today(market) + timedelta(days=30))

    relisted = market.run(trading.place_sell_bid, again)

    assert market.ask(relisted.bid_id).status is BidStatus.OPEN


def test_buy_now_skips_an_ask_inside_the_margin_before_the_job_has_run(market: Market) -> None:
    product = market.new_product()
    cheap_but_expiring = market.open_ask(product, 4000, valid_days=3)
    dearer = market.open_ask(product, 5000, valid_days=30)
    run_at(market, today(market) + timedelta(days=3), hour=9)
    buyer = market.signed_up(points=20_000)

    purchase = market.bought(product, buyer, 5000)

    assert market.order(purchase.order_id).sell_bid_id == dearer
    assert market.ask(cheap_but_expiring).status is BidStatus.OPEN  # the job's to close
    market.refused(trading.buy_now, trading.BuyNow(buyer, product, 5000), NoMatchingBid)


def test_a_run_larger_than_a_batch_takes_several_transactions(market: Market) -> None:
    product = market.new_product()
    asks = [market.open_ask(product, 5000 + i, valid_days=3) for i in range(5)]
    run_at(market, today(market) + timedelta(days=4))
    commits = market.store.commits

    report = expire_asks(market.executor(), now=market.clock(), batch=2)

    assert report.expired == 5
    assert statuses(market, *asks) == [BidStatus.EXPIRED] * 5
    assert market.store.commits - commits == 3  # 2 + 2 + 1


# --- the Lambda handler with its sample event, and the CLI ----------------------------------


def container_of(market: Market) -> Container:
    return Container(
        Settings(environment="test"),
        unit_of_work=lambda: FakeUnitOfWork(market.store),
        command_context=market.ctx,
    )


def test_the_handler_expires_on_the_schedules_event_as_of_the_invocation(market: Market) -> None:
    product = market.new_product()
    ask_id = market.open_ask(product, 5000, valid_days=3)
    fired = run_at(market, today(market) + timedelta(days=3))
    event: dict[str, Any] = json.loads((EVENTS / "scheduled.json").read_text())
    assert event["source"] == "aws.scheduler" and event["detail"] == {}
    set_container(container_of(market))
    try:
        answer = LocalInvoker().invoke_event_raw("ExpireAsksFunction", event)
        again = LocalInvoker().invoke_event_raw("ExpireAsksFunction", event)
    finally:
        set_container(None)

    assert answer == {
        "takeable_from": (business_date_of(fired) + timedelta(days=1)).isoformat(),
        "expired": 1,
    }
    assert again["expired"] == 0
    assert market.ask(ask_id).status is BidStatus.EXPIRED


def test_cli_expire_asks_prints_what_it_expired(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    product = market.new_product()
    market.open_ask(product, 5000, valid_days=3)
    market.open_ask(product, 5000, valid_days=3)
    run_at(market, today(market) + timedelta(days=3))
    takeable_from = (today(market) + timedelta(days=1)).isoformat()
    monkeypatch.setattr(cli, "bootstrap", lambda: container_of(market))

    first = CliRunner().invoke(cli.app, ["jobs", "expire-asks"])
    second = CliRunner().invoke(cli.app, ["jobs", "expire-asks"])

    assert first.exit_code == 0, first.output
    assert first.output == f"expired 2 asks; the open ones are valid on {takeable_from} or later\n"
    assert second.output.startswith("expired 0 asks;")
