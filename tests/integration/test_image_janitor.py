"""The orphaned-image cleanup on the real primary, with S3 in moto (whose clock a test can
set, so objects can be a day old) and, for the CLI, the test stack's LocalStack.

The database is shared by the session: every test makes its own users and images and looks
only at those; rows other tests left are young, so runs as of now leave them alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import insert, select, text, update
from tests.support.fakes import valid_until
from tests.support.outbox import outbox_envelopes
from tests.support.stack import SettingsFactory, giftmarket_cli

from giftmarket.adapters import tables
from giftmarket.adapters.images import S3ImageStore
from giftmarket.adapters.read_models import generation_prefix
from giftmarket.adapters.repositories import to_db_time
from giftmarket.adapters.unit_of_work import SqlAlchemyUnitOfWork
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.commands import accounts, catalog, trading
from giftmarket.commands.executor import Command, CommandExecutor
from giftmarket.commands.handlers import COMMAND_HANDLERS
from giftmarket.commands.ports import Committed
from giftmarket.domain.errors import DomainError, ImageUnusable
from giftmarket.domain.ids import new_id
from giftmarket.domain.image_cleanup import CleanupCandidate, CleanupReason, CleanupRules
from giftmarket.domain.images import ImageStatus, s3_key_for
from giftmarket.jobs.expiry import expire_asks
from giftmarket.jobs.images import (
    CleanupEntry,
    CleanupReport,
    ImageJanitor,
    Outcome,
    clean_images,
)
from giftmarket_local.runner import LambdaContext, load_handler
from giftmarket_local.stack import Stack
from giftmarket_local.template import load_template, read_application

T = TypeVar("T")
ADMIN = "admin@giftmarket.local"
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 1024
EVENTS = Path(__file__).parents[2] / "functions/image_janitor/events"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


# ---------------------------------------------------------------------------------------
# A market on the real primary, its images in a bucket of its own


def clean(
    container: Container, as_of: datetime | None = None, *, dry_run: bool = False
) -> CleanupReport:
    """The cleanup as the scheduled function runs it, with the container's parts."""
    return clean_images(
        container.unit_of_work,
        container.command_context,
        container.images,
        retries=container.settings.command_retries,
        as_of=as_of,
        dry_run=dry_run,
    )


@dataclass
class Market:
    container: Container
    s3: Any
    bucket: str

    def at(self, when: datetime) -> CommandExecutor:
        """Commands run as if it were `when` (rows get that time)."""
        context = dataclasses.replace(self.container.command_context, clock=lambda: when)
        return CommandExecutor(self.container.unit_of_work, context, COMMAND_HANDLERS)

    def run(self, command: Command[T], when: datetime) -> T:
        return self.at(when).execute(command)[0]

    def user(self, email: str | None = None, points: int = 1_000_000) -> str:
        now = datetime.now(UTC)
        command = accounts.SignUp(email or f"{uuid.uuid4().hex}@example.com", "password123", "n")
        user_id = self.run(command, now).user_id
        charge = accounts.ChargePoints(user_id, points)
        self.run(charge, now)
        return user_id

    def admin(self) -> str:
        command = accounts.SignIn(ADMIN, "password123")
        try:
            return self.run(command, NOW).user_id
        except DomainError:
            return self.user(ADMIN)

    def product(self) -> str:
        command = catalog.RegisterProduct(self.admin(), "Americano", "Starbucks", "coffee", 4500)
        return self.run(command, NOW)

    def image(self, owner_id: str, requested_at: datetime, *, uploaded: bool = True) -> str:
        command = catalog.RequestImageUpload(owner_id, "image/png")
        slot = self.run(command, requested_at)
        if uploaded:
            self.put(s3_key_for(owner_id, slot.image_id), requested_at)
        return slot.image_id

    def put(self, key: str, last_modified: datetime) -> None:
        put_object(self.s3, self.bucket, key, last_modified)

    def ask(
        self,
        seller_id: str,
        product_id: str,
        image_id: str,
        at: datetime,
        price: int = 5000,
        *,
        valid_days: int = 30,
    ) -> str:
        """An ask listed at `at`, its voucher valid `valid_days` after that day in Korea."""
        expires_on = valid_until(at, valid_days)
        command = trading.PlaceSellBid(
            seller_id, product_id, price, image_id, unique_barcode(), expires_on
        )
        return self.run(command, at).bid_id

    def cancel(self, seller_id: str, ask_id: str, at: datetime) -> None:
        command = trading.CancelSellBid(seller_id, ask_id)
        self.run(command, at)

    def buy_now(self, buyer_id: str, product_id: str, at: datetime) -> str:
        command = trading.BuyNow(buyer_id, product_id, 5000)
        return self.run(command, at).order_id

    def sell_now(self, seller_id: str, product_id: str, image_id: str, at: datetime) -> str:
        bid = trading.PlaceBuyBid(self.user(), product_id, 3000)
        self.run(bid, at)
        command = trading.SellNow(
            seller_id, product_id, 3000, image_id, unique_barcode(), valid_until(at)
        )
        return self.run(command, at).order_id

    def key(self, image_id: str) -> str:
        with self.container.database.writer.connect() as conn:
            found = conn.execute(
                select(tables.images.c.s3_key).where(tables.images.c.id == image_id)
            ).scalar_one()
        return str(found)

    def rows(self, *image_ids: str) -> dict[str, tuple[str, int, datetime | None]]:
        """status, version, deleted_at of each image."""
        i = tables.images
        with self.container.database.writer.connect() as conn:
            found = conn.execute(
                select(i.c.id, i.c.status, i.c.version, i.c.deleted_at).where(i.c.id.in_(image_ids))
            ).all()
        return {row.id: (row.status, int(row.version), row.deleted_at) for row in found}

    def status(self, image_id: str) -> str:
        return self.rows(image_id)[image_id][0]

    def stored(self, key: str) -> bool:
        return S3ImageStore(self.s3, self.bucket).describe(key) is not None

    def objects(self) -> set[str]:
        store = S3ImageStore(self.s3, self.bucket)
        return {listed.key for listed in store.list_objects("")}

    def janitor(self, **parts: Any) -> ImageJanitor:
        objects = parts.pop("objects", None) or S3ImageStore(self.s3, self.bucket)
        commands = CommandExecutor(self.container.unit_of_work, self.container.command_context)
        return ImageJanitor(commands, objects, **parts)


NOW = datetime.now(UTC)


def unique_barcode() -> str:
    """A barcode no run has listed: the registry on the kept test stack outlives a run."""
    return str(uuid.uuid4().int)[:20]


def put_object(s3: Any, bucket: str, key: str, last_modified: datetime) -> None:
    """An upload that S3 records as made at `last_modified` (moto's clock, set for it)."""
    naive_utc = last_modified.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("moto.s3.models.utcnow", return_value=naive_utc):
        s3.put_object(Bucket=bucket, Key=key, Body=PNG, ContentType="image/png")


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def market(make_settings: SettingsFactory, s3: Any) -> Iterator[Market]:
    bucket = f"janitor-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    # No events queue: the commands' fast path would only try moto's SQS.
    settings = make_settings(images_bucket=bucket, events_queue_url=None)
    container = bootstrap(settings, images=S3ImageStore(s3, bucket))
    yield Market(container, s3, bucket)
    container.close()


def entries_of(report: CleanupReport, *image_ids: str) -> dict[str, CleanupEntry]:
    return {e.image_id: e for e in report.entries if e.image_id in image_ids}


def outcome(report: CleanupReport, key: str) -> tuple[Outcome, CleanupReason]:
    (entry,) = (e for e in report.entries if e.key == key)
    return entry.outcome, entry.reason


# ---------------------------------------------------------------------------------------
# What goes, what stays


def test_an_old_pending_upload_is_deleted_and_marked_and_a_young_one_is_kept(
    market: Market,
) -> None:
    seller = market.user()
    old = market.image(seller, NOW - DAY - HOUR)
    young = market.image(seller, NOW - DAY + HOUR)
    never_uploaded = market.image(seller, NOW - 3 * DAY, uploaded=False)

    report = clean(market.container)

    assert entries_of(report, old, young, never_uploaded) == {
        old: CleanupEntry(old, market.key(old), CleanupReason.ABANDONED_UPLOAD, Outcome.DELETED),
        never_uploaded: CleanupEntry(
            never_uploaded,
            market.key(never_uploaded),
            CleanupReason.ABANDONED_UPLOAD,
            Outcome.DELETED,
        ),
    }
    rows = market.rows(old, young, never_uploaded)
    assert rows[old][:2] == ("DELETED", 3) and rows[old][2] is not None
    assert rows[young] == ("PENDING", 1, None)
    assert not market.stored(market.key(old)) and market.stored(market.key(young))
    published = outbox_envelopes(market.container.database, tables.outbox.c.aggregate_id == old)
    assert [(e.event_type, e.version, e.payload["s3_key"]) for e in published][-1] == (
        "ImageDeleted",
        3,
        market.key(old),
    )


def test_the_image_of_an_ask_cancelled_7_days_ago_goes_and_at_6_days_stays(
    market: Market,
) -> None:
    seller, product = market.user(), market.product()
    images = {}
    for days in (6, 7):
        image_id = market.image(seller, NOW - 30 * DAY)
        ask = market.ask(seller, product, image_id, NOW - 30 * DAY)
        market.cancel(seller, ask, NOW - days * DAY - HOUR)
        images[days] = image_id

    report = clean(market.container)

    gone, kept = images[7], images[6]
    assert entries_of(report, gone, kept) == {
        gone: CleanupEntry(gone, market.key(gone), CleanupReason.CANCELLED_ASK, Outcome.DELETED)
    }
    assert (market.status(gone), market.status(kept)) == ("DELETED", "ATTACHED")
    assert not market.stored(market.key(gone)) and market.stored(market.key(kept))


def test_the_image_of_an_ask_expired_7_days_ago_goes_and_at_6_days_stays(
    market: Market,
) -> None:
    seller, product = market.user(), market.product()
    listed = NOW - 30 * DAY
    # Last valid days D-27 and D-7 (D: today in Korea): the expiry job run 8 days ago
    # expires the first only, the one run 6 days ago the second.
    short = market.image(seller, listed)
    market.ask(seller, product, short, listed, valid_days=3)
    longer = market.image(seller, listed)
    market.ask(seller, product, longer, listed, price=5100, valid_days=23)
    for ago in (8 * DAY + HOUR, 6 * DAY + HOUR):
        expire_asks(market.at(NOW - ago), now=NOW - ago)
    with market.container.database.writer.connect() as conn:
        asks = dict(
            conn.execute(
                select(tables.sell_bids.c.image_id, tables.sell_bids.c.status).where(
                    tables.sell_bids.c.image_id.in_([short, longer])
                )
            ).all()
        )
    assert asks == {short: "EXPIRED", longer: "EXPIRED"}

    report = clean(market.container)

    assert entries_of(report, short, longer) == {
        short: CleanupEntry(short, market.key(short), CleanupReason.EXPIRED_ASK, Outcome.DELETED)
    }
    assert (market.status(short), market.status(longer)) == ("DELETED", "ATTACHED")
    assert not market.stored(market.key(short)) and market.stored(market.key(longer))


def test_images_of_open_asks_and_of_orders_are_never_touched(market: Market) -> None:
    seller, buyer, product = market.user(), market.user(), market.product()
    long_ago = NOW - 60 * DAY
    sold_now_image = market.image(seller, long_ago)
    market.sell_now(seller, product, sold_now_image, long_ago)
    sold_image = market.image(seller, long_ago)
    market.ask(seller, product, sold_image, long_ago, price=4000)
    open_ask_image = market.image(seller, long_ago)
    market.ask(seller, product, open_ask_image, long_ago, price=6000)
    market.buy_now(buyer, product, long_ago + HOUR)  # takes the cheaper ask
    live = (open_ask_image, sold_image, sold_now_image)

    report = clean(market.container)

    assert entries_of(report, *live) == {}
    assert {image: market.status(image) for image in live} == dict.fromkeys(live, "ATTACHED")
    assert all(market.stored(market.key(image)) for image in live)


def test_the_guard_keeps_an_image_in_use_even_when_its_row_says_pending(market: Market) -> None:
    seller, product = market.user(), market.product()
    long_ago = NOW - 60 * DAY
    in_ask = market.image(seller, long_ago)
    market.ask(seller, product, in_ask, long_ago)
    in_order = market.image(seller, long_ago)
    market.sell_now(seller, product, in_order, long_ago)
    # A row a bug left behind: the rules' SQL lists these, the guard must still say no.
    with market.container.database.writer.begin() as conn:
        conn.execute(
            update(tables.images)
            .where(tables.images.c.id.in_([in_ask, in_order]))
            .values(status="PENDING")
        )

    report = clean(market.container)

    found = entries_of(report, in_ask, in_order)
    assert {image: (e.outcome, e.detail) for image, e in found.items()} == {
        in_ask: (Outcome.SKIPPED_LIVE, "in an open ask"),
        in_order: (Outcome.SKIPPED_LIVE, "in an order"),
    }
    assert (market.status(in_ask), market.status(in_order)) == ("PENDING", "PENDING")
    assert market.stored(market.key(in_ask)) and market.stored(market.key(in_order))


def test_objects_no_row_names_go_after_24_hours_and_younger_ones_stay(market: Market) -> None:
    owner = market.user()
    stray_old = f"images/{owner}/{new_id()}"
    stray_young = f"images/{owner}/{new_id()}"
    elsewhere = f"exports/{new_id()}"
    market.put(stray_old, NOW - DAY - HOUR)
    market.put(stray_young, NOW - DAY + HOUR)
    market.put(elsewhere, NOW - 90 * DAY)
    tracked = market.image(owner, NOW - 2 * HOUR)  # its object is old enough, its row young
    market.put(market.key(tracked), NOW - 90 * DAY)

    report = clean(market.container)

    assert outcome(report, stray_old) == (Outcome.DELETED, CleanupReason.UNTRACKED_OBJECT)
    assert [e.image_id for e in report.entries if e.key == stray_old] == [None]
    assert market.objects() == {stray_young, elsewhere, market.key(tracked)}
    assert market.status(tracked) == "PENDING"


def test_as_of_applies_the_rules_at_that_instant(market: Market) -> None:
    seller = market.user()
    old_then = market.image(seller, NOW - 5 * DAY)
    young_then = market.image(seller, NOW - 3 * DAY - 12 * HOUR)

    report = clean(market.container, NOW - 3 * DAY)

    assert report.as_of == NOW - 3 * DAY
    assert set(entries_of(report, old_then, young_then)) == {old_then}
    assert (market.status(old_then), market.status(young_then)) == ("DELETED", "PENDING")


def test_a_future_as_of_is_refused_before_anything_is_touched(market: Market) -> None:
    seller = market.user()
    image = market.image(seller, NOW - 2 * HOUR)

    with pytest.raises(DomainError):
        clean(market.container, datetime.now(UTC) + DAY)
    assert market.status(image) == "PENDING"


# ---------------------------------------------------------------------------------------
# Failures, retries, dry runs, batches


@contextmanager
def s3_refuses(s3: Any, keys: set[str], code: str = "AccessDenied") -> Iterator[list[str]]:
    """DeleteObjects answers an error for each of `keys` (S3 deletes the others); yields
    the keys it refused."""
    refused: list[str] = []

    def drop(params: dict[str, Any], **_: Any) -> None:
        objects = params["Delete"]["Objects"]
        refused.extend(o["Key"] for o in objects if o["Key"] in keys)
        params["Delete"]["Objects"] = [o for o in objects if o["Key"] not in keys]

    def report_errors(parsed: dict[str, Any], **_: Any) -> None:
        errors = parsed.setdefault("Errors", [])
        errors.extend({"Key": k, "Code": code, "Message": "refused"} for k in refused)

    events = s3.meta.events
    events.register("provide-client-params.s3.DeleteObjects", drop, unique_id="refuse-drop")
    events.register("after-call.s3.DeleteObjects", report_errors, unique_id="refuse-report")
    try:
        yield refused
    finally:
        events.unregister("provide-client-params.s3.DeleteObjects", unique_id="refuse-drop")
        events.unregister("after-call.s3.DeleteObjects", unique_id="refuse-report")


def test_keys_s3_refuses_are_not_marked_and_the_next_run_deletes_them(market: Market) -> None:
    seller, product = market.user(), market.product()
    refused_image = market.image(seller, NOW - 2 * DAY)
    deleted_image = market.image(seller, NOW - 2 * DAY)
    refused_key = market.key(refused_image)

    with s3_refuses(market.s3, {refused_key}) as refused:
        first = clean(market.container)

    assert refused == [refused_key]
    assert entries_of(first, refused_image, deleted_image) == {
        refused_image: CleanupEntry(
            refused_image,
            refused_key,
            CleanupReason.ABANDONED_UPLOAD,
            Outcome.FAILED,
            "AccessDenied",
        ),
        deleted_image: CleanupEntry(
            deleted_image,
            market.key(deleted_image),
            CleanupReason.ABANDONED_UPLOAD,
            Outcome.DELETED,
        ),
    }
    assert first.failed >= 1
    assert (market.status(refused_image), market.status(deleted_image)) == (
        "DELETING",
        "DELETED",
    )
    assert market.stored(refused_key)
    # Its object is still there, yet nobody can attach it any more.
    with pytest.raises(ImageUnusable):
        market.ask(seller, product, refused_image, NOW)

    second = clean(market.container)

    assert entries_of(second, refused_image) == {
        refused_image: CleanupEntry(
            refused_image, refused_key, CleanupReason.UNFINISHED_DELETION, Outcome.DELETED
        )
    }
    assert market.status(refused_image) == "DELETED" and not market.stored(refused_key)


def test_a_whole_delete_request_s3_refuses_fails_every_key_of_it(market: Market) -> None:
    image = market.image(market.user(), NOW - 2 * DAY)

    def refuse(**_: Any) -> None:
        raise market.s3.exceptions.ClientError(
            {"Error": {"Code": "SlowDown", "Message": "reduce your request rate"}},
            "DeleteObjects",
        )

    market.s3.meta.events.register("before-call.s3.DeleteObjects", refuse, unique_id="slow")
    try:
        report = clean(market.container)
    finally:
        market.s3.meta.events.unregister("before-call.s3.DeleteObjects", unique_id="slow")

    assert (entries_of(report, image)[image].outcome, entries_of(report, image)[image].detail) == (
        Outcome.FAILED,
        "SlowDown",
    )
    assert market.status(image) == "DELETING" and market.stored(market.key(image))


def test_the_dry_run_reports_exactly_what_the_run_deletes_and_changes_nothing(
    market: Market,
) -> None:
    seller, product = market.user(), market.product()
    pending_old = market.image(seller, NOW - 2 * DAY)
    pending_young = market.image(seller, NOW - HOUR)
    cancelled = market.image(seller, NOW - 30 * DAY)
    market.cancel(seller, market.ask(seller, product, cancelled, NOW - 30 * DAY), NOW - 8 * DAY)
    live = market.image(seller, NOW - 30 * DAY)
    market.ask(seller, product, live, NOW - 30 * DAY)
    stray = f"images/{seller}/{new_id()}"
    market.put(stray, NOW - 2 * DAY)
    mine = (pending_old, pending_young, cancelled, live)
    rows_before, objects_before = market.rows(*mine), market.objects()
    outbox = tables.outbox
    events_before = outbox_envelopes(market.container.database, outbox.c.aggregate_id.in_(mine))

    preview = clean(market.container, dry_run=True)

    assert preview.dry_run and preview.deleted == 0
    assert market.rows(*mine) == rows_before and market.objects() == objects_before
    assert (
        outbox_envelopes(market.container.database, outbox.c.aggregate_id.in_(mine))
        == events_before
    )
    would = {
        (e.image_id, e.key, e.reason) for e in preview.entries if e.outcome is Outcome.WOULD_DELETE
    }
    mine_going = {
        (pending_old, market.key(pending_old), CleanupReason.ABANDONED_UPLOAD),
        (cancelled, market.key(cancelled), CleanupReason.CANCELLED_ASK),
        (None, stray, CleanupReason.UNTRACKED_OBJECT),
    }
    assert {entry for entry in would if entry[0] in mine or entry[1] == stray} == mine_going

    run = clean(market.container, preview.as_of)

    deleted = {(e.image_id, e.key, e.reason) for e in run.entries if e.outcome is Outcome.DELETED}
    assert deleted == would
    assert market.objects() == objects_before - {
        market.key(pending_old),
        market.key(cancelled),
        stray,
    }


def test_more_than_1000_orphans_are_deleted_in_requests_of_at_most_1000_keys(
    market: Market,
) -> None:
    owner = market.user()
    old = to_db_time(NOW - 2 * DAY)
    rows = [
        {
            "id": (image_id := new_id()),
            "owner_id": owner,
            "s3_key": s3_key_for(owner, image_id),
            "content_type": "image/png",
            "status": "PENDING",
            "created_at": old,
        }
        for _ in range(1_500)
    ]
    with market.container.database.writer.begin() as conn:
        conn.execute(insert(tables.images), rows)
    for row in rows[:300]:
        market.put(str(row["s3_key"]), NOW - 2 * DAY)
    strays = [f"images/{owner}/{new_id()}" for _ in range(1_200)]
    for key in strays:
        market.put(key, NOW - 2 * DAY)
    sizes: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["Delete"]["Objects"]))

    market.s3.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    try:
        report = clean(market.container)
    finally:
        market.s3.meta.events.unregister("provide-client-params.s3.DeleteObjects", record)

    marked = market.rows(*[str(row["id"]) for row in rows]).values()
    assert {(status, version) for status, version, _ in marked} == {("DELETED", 3)}
    assert all(deleted_at is not None for _, _, deleted_at in marked)
    assert market.objects() == set()
    assert max(sizes) <= 1000 and len(sizes) >= 4 and sum(sizes) >= 1_500 + 1_200
    assert report.deleted >= 2_700 and report.failed == 0


# ---------------------------------------------------------------------------------------
# Races with sellers, and runs cut short


@dataclass
class SellerRacesTheRun(ImageJanitor):
    """Runs `between` after the candidates are listed, before they are claimed."""

    between: Callable[[Sequence[CleanupCandidate]], None] = lambda batch: None

    def clean(self, rules: CleanupRules, batch: Sequence[CleanupCandidate]) -> list[CleanupEntry]:
        self.between(batch)
        return super().clean(rules, batch)


def test_an_ask_placed_with_the_image_after_it_was_listed_keeps_it(market: Market) -> None:
    seller, product = market.user(), market.product()
    image = market.image(seller, NOW - 2 * DAY)
    listed: list[str] = []

    def seller_places_an_ask(batch: Sequence[CleanupCandidate]) -> None:
        if image in {c.image_id for c in batch} and not listed:
            listed.append(image)
            market.ask(seller, product, image, datetime.now(UTC))

    janitor = SellerRacesTheRun(
        market.janitor().commands,
        S3ImageStore(market.s3, market.bucket),
        between=seller_places_an_ask,
    )
    report = janitor.run()

    assert listed == [image]
    assert entries_of(report, image)[image].outcome is Outcome.SKIPPED_LIVE
    assert market.status(image) == "ATTACHED" and market.stored(market.key(image))


class PausesBeforeClaiming(SqlAlchemyUnitOfWork):
    """Calls `pause` once, in the transaction that claims `image_id`, just before it commits
    (the row is locked and set to DELETING then)."""

    def __init__(self, market: Market, image_id: str, pause: Callable[[], None]) -> None:
        super().__init__(market.container.database)
        self._image_id, self._pause = image_id, pause

    def commit(self) -> Committed:
        image = self.images.get(self._image_id)
        if image is not None and image.status is ImageStatus.DELETING:
            self._pause()
        return super().commit()


def wait_for_a_lock_wait(market: Market, timeout: float = 10.0) -> None:
    """Until another connection is inside a locking read of images (blocked on our lock)."""
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
        " AND COMMAND = 'Query' AND INFO LIKE '%FROM images%FOR UPDATE%'"
    )
    while time.monotonic() < deadline:
        with market.container.database.writer.connect() as conn:
            if conn.execute(query).scalar():
                return
        time.sleep(0.02)
    raise AssertionError("the seller never waited for the image's lock")


def test_an_attach_that_waits_for_the_claim_is_refused_and_the_image_goes(
    market: Market,
) -> None:
    seller, product = market.user(), market.product()
    image = market.image(seller, NOW - 2 * DAY)
    outcome_of_seller: list[BaseException | str] = []

    def seller_places_an_ask() -> None:
        try:
            outcome_of_seller.append(market.ask(seller, product, image, datetime.now(UTC)))
        except BaseException as exc:  # noqa: BLE001 - the outcome is what is measured
            outcome_of_seller.append(exc)

    attach = threading.Thread(target=seller_places_an_ask)
    paused: list[bool] = []

    def let_the_seller_arrive() -> None:
        if not paused:
            paused.append(True)
            attach.start()  # it checks the object in S3, then waits for our row lock
            wait_for_a_lock_wait(market)

    commands = CommandExecutor(
        lambda: PausesBeforeClaiming(market, image, let_the_seller_arrive),
        market.container.command_context,
    )
    report = ImageJanitor(commands, S3ImageStore(market.s3, market.bucket)).run()
    attach.join(timeout=30)

    assert paused == [True]
    assert len(outcome_of_seller) == 1 and isinstance(outcome_of_seller[0], ImageUnusable)
    assert entries_of(report, image)[image].outcome is Outcome.DELETED
    assert market.status(image) == "DELETED" and not market.stored(market.key(image))
    with market.container.database.writer.connect() as conn:
        asks = conn.execute(
            select(tables.sell_bids.c.id).where(tables.sell_bids.c.image_id == image)
        ).all()
    assert asks == []


class LostAfterTheDelete(S3ImageStore):
    """S3 deletes the keys, then the run dies (a timeout, the database gone)."""

    def delete_objects(self, keys: Sequence[str]) -> dict[str, str]:
        super().delete_objects(keys)
        raise RuntimeError("the run died after S3 deleted the objects")


def test_a_run_that_dies_after_the_s3_delete_leaves_nothing_attachable_and_the_next_finishes(
    market: Market,
) -> None:
    seller, product = market.user(), market.product()
    image = market.image(seller, NOW - 2 * DAY)
    key = market.key(image)

    with pytest.raises(RuntimeError):
        market.janitor(objects=LostAfterTheDelete(market.s3, market.bucket)).run()

    assert market.status(image) == "DELETING" and not market.stored(key)
    market.put(key, NOW)  # even with an object back under its key, no ask can take it
    with pytest.raises(ImageUnusable):
        market.ask(seller, product, image, NOW)

    report = clean(market.container)

    assert entries_of(report, image)[image].reason is CleanupReason.UNFINISHED_DELETION
    assert market.status(image) == "DELETED" and not market.stored(key)


def test_the_read_side_keeps_a_deleted_image_only_as_an_expiring_tombstone(
    market: Market,
) -> None:
    image = market.image(market.user(), NOW - 2 * DAY)
    clean(market.container)
    container = market.container
    for envelope in outbox_envelopes(container.database, tables.outbox.c.aggregate_id == image):
        container.projector.handle(envelope)

    key = f"{generation_prefix(container.read_models.generation() or 0)}image:{image}"
    assert container.redis.hget(key, "status") == b"DELETED"
    assert 0 < int(container.redis.ttl(key))


# ---------------------------------------------------------------------------------------
# The Lambda handler and the CLI


def test_the_handler_previews_with_the_dry_run_event_and_cleans_with_the_scheduled_one(
    market: Market, capsys: pytest.CaptureFixture[str]
) -> None:
    image = market.image(market.user(), NOW - 2 * DAY)
    key = market.key(image)
    spec = read_application().functions["ImageJanitorFunction"]
    _, handler = load_handler(spec)
    context = LambdaContext(spec.logical_id, spec.memory_mb, spec.timeout_seconds)

    set_container(market.container)
    try:
        preview = handler(json.loads((EVENTS / "dry_run.json").read_text()), context)
        assert market.status(image) == "PENDING" and market.stored(key)
        capsys.readouterr()
        run = handler(json.loads((EVENTS / "scheduled.json").read_text()), context)
    finally:
        set_container(None)

    def mine(answer: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e["outcome"], e["reason"]) for e in answer["entries"] if e["image_id"] == image]

    assert preview["dry_run"] and mine(preview) == [("would_delete", "abandoned_upload")]
    assert not run["dry_run"] and mine(run) == [("deleted", "abandoned_upload")]
    assert market.status(image) == "DELETED" and not market.stored(key)
    emitted = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    if not os.environ.get("POWERTOOLS_METRICS_DISABLED"):
        values = {k: v if isinstance(v, list) else [v] for blob in emitted for k, v in blob.items()}
        assert values["ImagesDeleted"] == [run["deleted"]] and run["deleted"] >= 1
        assert values["ImagesDeleteFailed"] == [0.0]


def test_the_schedule_runs_the_cleanup_daily_at_3_in_seoul() -> None:
    template = load_template()
    schedule = template["Resources"]["ImageJanitorFunction"]["Properties"]["Events"]
    (event,) = schedule.values()
    assert event["Type"] == "ScheduleV2"
    properties = event["Properties"]
    assert (properties["ScheduleExpression"], properties["ScheduleExpressionTimezone"]) == (
        "cron(0 3 * * ? *)",
        "Asia/Seoul",
    )


@pytest.fixture
def local_market(make_settings: SettingsFactory, stack: Stack) -> Iterator[Market]:
    """The CLI's stack: LocalStack's images bucket, as `make run` has it."""
    container = bootstrap(make_settings(events_queue_url=None))
    s3 = boto3.client(
        "s3", endpoint_url=stack.config.localstack_url, region_name=stack.config.region
    )
    yield Market(container, s3, container.settings.images_bucket)
    container.close()


def test_giftmarket_jobs_clean_images_prints_each_image_then_a_summary(
    local_market: Market, stack: Stack
) -> None:
    market = local_market
    seller, product = market.user(), market.product()
    old = market.image(seller, NOW - 2 * DAY)
    young = market.image(seller, NOW - HOUR)
    live = market.image(seller, NOW - 30 * DAY)
    market.ask(seller, product, live, NOW - 30 * DAY)
    old_line = f"{old} {market.key(old)} (abandoned_upload)"

    preview = giftmarket_cli(stack, "jobs", "clean-images", "--dry-run")

    assert preview.returncode == 0, preview.stderr
    lines = preview.stdout.splitlines()
    assert f"would delete {old_line}" in lines
    assert not any(image in preview.stdout for image in (young, live))
    assert lines[-1].startswith("dry run as of ") and lines[-1].endswith("nothing was changed")
    assert len(lines) - 1 == int(lines[-1].split("would delete ")[1].split(",")[0])
    assert market.status(old) == "PENDING" and market.stored(market.key(old))

    result = giftmarket_cli(stack, "jobs", "clean-images")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"deleted {old_line}" in lines
    assert lines[-1].startswith("as of ") and ": deleted " in lines[-1]
    assert len(lines) - 1 == int(lines[-1].split(": deleted ")[1].split(",")[0])
    assert market.status(old) == "DELETED" and not market.stored(market.key(old))
    assert (market.status(young), market.status(live)) == ("PENDING", "ATTACHED")
    assert market.stored(market.key(live))


@pytest.mark.parametrize(
    "as_of", ["2026-11-22T03:00:00", "next tuesday", "2026-13-01T00:00:00Z", "2999-01-01T00:00Z"]
)
def test_giftmarket_jobs_clean_images_refuses_a_bad_as_of_with_exit_2(
    stack: Stack, as_of: str
) -> None:
    result = giftmarket_cli(stack, "jobs", "clean-images", "--dry-run", "--as-of", as_of)
    assert result.returncode == 2, result.stdout
    assert "--as-of" in result.stderr and "Traceback" not in result.stderr
