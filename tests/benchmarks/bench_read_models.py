"""Read models against SQL: rebuild, Redis memory, query latency at 10^5 (and 10^4, 10^6) orders.

A marketplace is seeded behind the application's back, from a child process of its own (see
seed_elsewhere), by LOAD DATA LOCAL INFILE on the primary (files of 200 000 rows, unique
and foreign key checks off): 10^4 users, 10^3 products in 20 categories with likes, 2x10^4
open asks and 2x10^4 open buy bids, 10^5 orders (PAID, COMPLETED and SETTLED; buy-now ones
each with their matched ask and its voucher image, some paid partly with a coupon; sell-now
ones with their matched buy bid and the seller's image), the settlements of the SETTLED
ones, a few coupons per user and the double-entry ledger of all of it, so balances equal
their postings. Every ask and order carries its voucher's facts (last 4 digits, expiry:
open asks' vouchers valid long enough for buy-now) and every voucher its barcode registry
row; orders were delivered when placed (automatic inspection). Times are consistent
(72-hour auto-completion, settlement at 00:10 KST) and ids are ULIDs of their rows'
creation times. Then, in this process:

1. `rebuild.rebuild_read_models` loads all of it into Redis: rows/s (goal 50 000), and
   where the time goes: SQL streaming alone (the database builds each row's operation
   JSON), joining them into batches, and the Lua script's own time from INFO commandstats
   (plus cProfile below the goal).
2. Redis memory: INFO used_memory before and after, and MEMORY USAGE of ~200 keys of each
   family of the new generation, extrapolated to bytes per entity (an order's share of
   the history and trade sets included).
3. Latency of the query Lambda handler (in-process, as API Gateway calls it) answering from
   the read models against the same handler whose read models always miss, so it answers
   from SQL on the replica: like with like; and the raw reads (one Lua read against one
   SQL view) beside them. The SQL stores first, then the read models' on as many
   entities, each store answering blocks of 50 in a row (see time_route), after warm-up,
   on entities drawn beforehand; every drawn entity's answers are compared first
   (both handlers' bodies byte for byte, both raw answers as values). Then the product
   detail against its floor (the handler answering with no store, plus one Redis GET),
   the three interleaved: goal p50 <= 1.5x the floor.
4. Latency against data size (--sizes, 10^4, 10^5 and 10^6 orders by default, the marketplace
   scaled with them): for each size in turn an empty schema, the seed, one rebuild, the
   same verification, then the handler from the read models against the handler by SQL
   (--size-samples per store; at most --route-budget seconds of timed requests per route,
   as SQL slows with the data; the read models answer them --redis-passes times over, their
   p99 pooled). The main size's figures (--orders) are those of 3. Goals:
   read-model p99 <= 2 ms at every size and flat (p99 at the largest size over the
   smallest's <= 1.5), SQL/read model >= 20x at 10^5. At 10^6 the seed takes ~6 GB in its
   child process while it is built, Redis ~1.6 GB.

Writes bench-results/read_models.{json,png} and read_models_by_size.png ("by_size" and
"by_size_goals" in the JSON).

Run: make bench   (or .venv/bin/python tests/benchmarks/bench_read_models.py --orders 10000
--sizes 10000 for the main measurement alone)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import itertools
import json
import multiprocessing
import operator
import os
import pstats
import random
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

import redis
from benchcommon import (
    OUT,
    SEEDED_KID,
    bench_settings,
    bench_stack,
    percentile,
    pyplot,
    write_result,
)
from sqlalchemy import Connection, Engine, Table, create_engine
from sqlalchemy.pool import NullPool

from giftmarket.adapters import tables
from giftmarket.adapters.cache import BULK_TIMEOUT_SECONDS, build_redis
from giftmarket.adapters.db import mysql_tls_context
from giftmarket.adapters.read_models import SEQUENCE_KEY, ReadModels, generation_prefix
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.domain.ids import encode_ulid
from giftmarket.domain.images import s3_key_for
from giftmarket.http.auth import TokenService
from giftmarket.projections.rebuild import (
    SOURCES,
    RebuildReport,
    batch_of,
    rebuild_read_models,
    start_snapshot,
)
from giftmarket.queries import products as product_queries
from giftmarket.queries import trades
from giftmarket.read_ports import Op, ReadModelReader, ReadModelStore
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.migrations import reset
from giftmarket_local.runner import route_request
from giftmarket_local.stack import Stack

GOAL_ROWS_PER_SECOND = 50_000
GOAL_RATIO = 20.0  # SQL / read model, product detail and history
GOAL_HANDLER_P99_MS = 2.0
# Product detail via the handler, p50, over the floor (no-store answer + one Redis GET).
GOAL_OVER_FLOOR = 1.5
LOAD_CHUNK = 200_000  # rows per LOAD DATA file
MEMORY_SAMPLE = 200
# As the rebuild does (rebuild.py's defaults): rows per script call, calls per pipeline.
BATCH_ROWS, PIPELINE_BATCHES = 500, 16
# Across data sizes: the read-model handler's p99 at the largest size over the smallest's.
GOAL_FLATNESS = 1.5
MIN_SAMPLES = 300  # timed requests per route however slow SQL gets (see --route-budget)
# time_route: entities each store answers in a row, and of those the first answered again
# untimed before the block is timed.
BLOCK, REWARM = 50, 3

EPOCH = datetime(1970, 1, 1)
MICROSECOND, MILLISECOND = timedelta(microseconds=1), timedelta(milliseconds=1)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
KST = timedelta(hours=9)  # Korea: UTC+9 all year
CATEGORIES = (
    "coffee", "bakery", "convenience", "dessert", "chicken", "pizza", "burger", "ice-cream",
    "beauty", "books", "movies", "fuel", "department", "restaurant", "tea", "juice", "donut",
    "fast-food", "cinema", "mart",
)  # fmt: skip
FACE_VALUES = (5_000, 10_000, 20_000, 30_000, 50_000)
ORDER_STATUSES, ORDER_STATUS_WEIGHTS = ("PAID", "COMPLETED", "SETTLED"), (15, 10, 75)
ORDER_VERSION = {"PAID": 1, "COMPLETED": 2, "SETTLED": 3}
INSERT_ORDER: tuple[Table, ...] = (
    tables.users,
    tables.products,
    tables.product_likes,
    tables.images,
    tables.sell_bids,
    tables.buy_bids,
    tables.coupons,
    tables.settlements,
    tables.orders,
    tables.voucher_registry,
    tables.ledger_entries,
)
Row = dict[str, Any]
Answer = dict[str, Any]


# -- seeding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    orders: int
    users: int
    products: int
    asks: int
    bids: int
    heavy_buyers: int

    @classmethod
    def for_orders(cls, orders: int) -> Scale:
        return cls(
            orders=orders,
            users=max(1000, orders // 10),
            products=1000,
            asks=max(1000, orders // 5),
            bids=max(1000, orders // 5),
            # Enough purchases each for full pages of history at every size (a page is 50):
            # 100 of them at 10^4 orders had 16-48 finished, so their history answers were
            # smaller than at 10^6, and p99 "against size" compared unequal pages.
            heavy_buyers=max(10, min(100, orders // 400)),
        )


def kst_date(instant: datetime) -> date:
    return (instant + KST).date()


def kst_midnight(day: date) -> datetime:
    """00:00 KST of `day`, as naive UTC."""
    return datetime.combine(day, day_time()) - KST


@dataclass
class Seeded:
    users: list[str]
    products: list[str]
    heavy_buyers: list[str]  # the users with the most finished purchases, most first
    rows: dict[str, int]
    seconds: float = 0.0
    insert_seconds: dict[str, float] = field(default_factory=dict)


class Seeder:
    """Builds every row in memory (valid, consistent data), then inserts table by table.

    bench_settlement.py seeds its own mix with it: `order_status_weights` and the sellers
    orders are drawn from (`pick_seller`) are the knobs."""

    order_status_weights: tuple[int, ...] = ORDER_STATUS_WEIGHTS

    def __init__(self, scale: Scale, *, fee_bps: int, seed: int = 7) -> None:
        self.scale = scale
        self.fee_bps = fee_bps
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC).replace(tzinfo=None)
        self.rows: dict[str, list[Row]] = {t.name: [] for t in INSERT_ORDER}
        self.users: list[str] = []
        self.user_row: dict[str, Row] = {}
        self.products: list[str] = []
        self.product_row: dict[str, Row] = {}
        self._product_weights: list[float] = []
        self.coupons_of: defaultdict[str, list[Row]] = defaultdict(list)
        # What the ledger says each user got and gave, for balances equal to postings.
        self.spent = Counter[str]()  # buy-now payments (available → ...)
        self.escrowed_all = Counter[str]()  # every buy bid ever escrowed
        self.escrowed_open = Counter[str]()  # open buy bids' escrow
        self.sold = Counter[str]()  # sellers' proceeds credited to pending
        self.settled_gross = Counter[str]()
        self.settled_net = Counter[str]()
        self.finished_purchases = Counter[str]()
        self.ask_ids: set[str] = set()  # the asks' ids, to tell their vouchers from orders'

    # -- helpers --
    def between(self, start: datetime, end: datetime) -> datetime:
        """A random time in [start, end), 1 in 100 on a whole second (ISO text without a
        fraction), as rows written in the same second would be."""
        span = max(1, (end - start) // MICROSECOND)
        at = start + self.rng.randrange(span) * MICROSECOND
        if self.rng.random() < 0.01 and at.replace(microsecond=0) >= start:
            at = at.replace(microsecond=0)
        return at

    def ulid(self, at: datetime) -> str:
        return encode_ulid((at - EPOCH) // MILLISECOND, self.rng.getrandbits(80))

    def pick_products(self, k: int) -> list[str]:
        return self.rng.choices(self.products, cum_weights=self._product_weights, k=k)

    def price(self, product_id: str, low: float, high: float) -> int:
        face = int(self.product_row[product_id]["face_value"])
        return max(10, round(face * self.rng.uniform(low, high) / 10) * 10)

    def ledger(
        self,
        reason: str,
        ref_type: str,
        ref_id: str | None,
        at: datetime,
        *postings: tuple[str, str, int],
    ) -> None:
        txn = self.ulid(at)
        self.rows["ledger_entries"] += [
            {
                "txn_id": txn,
                "account_owner": owner,
                "bucket": bucket,
                "amount": amount,
                "reason": reason,
                "ref_type": ref_type,
                "ref_id": ref_id or txn,
                "created_at": at,
            }
            for owner, bucket, amount in postings
            if amount  # as the domain does: a zero movement is not posted
        ]

    def image(self, owner: str, created: datetime, attached: datetime) -> str:
        image_id = self.ulid(created)
        self.rows["images"].append(
            {
                "id": image_id,
                "owner_id": owner,
                "s3_key": s3_key_for(owner, image_id),  # as the upload slot makes it
                "content_type": "image/png",
                "status": "ATTACHED",
                "size_bytes": self.rng.randint(20_000, 400_000),
                "version": 2,
                "created_at": created,
                "attached_at": attached,
            }
        )
        return image_id

    def voucher(self, listing_id: str, listed: datetime, valid_from: date) -> Row:
        """The voucher listed as `listing_id` (an ask, or a sell-now order): its facts for
        that row, and its registry row. Made from the id, not the random stream, so the rest
        of the marketplace is the one seeded before vouchers. Valid 3 days to a year after
        `valid_from`."""
        digest = hashlib.sha256(listing_id.encode()).hexdigest()
        expires_on = valid_from + (3 + int(digest[8:16], 16) % 363) * DAY
        self.rows["voucher_registry"].append(
            {
                "kid": SEEDED_KID,
                "digest": digest,
                "sell_bid_id": listing_id if listing_id in self.ask_ids else None,
                "order_id": None if listing_id in self.ask_ids else listing_id,
                "expires_on": expires_on,
                "registered_at": listed,
            }
        )
        return {"barcode_last4": f"{int(digest[:8], 16) % 10_000:04d}", "expires_on": expires_on}

    # -- the marketplace --
    def build(self) -> None:
        self._users()
        self._products()
        self._likes()
        self._coupons()
        self._open_asks()
        self._open_bids()
        self._orders()
        self._balances()

    def _users(self) -> None:
        for i in range(self.scale.users):
            # Everyone signed up before the first order of the seeded history.
            created = self.between(self.now - 200 * DAY, self.now - 95 * DAY)
            user_id = self.ulid(created)
            row: Row = {
                "id": user_id,
                "email": f"user{i}@bench.local",
                "nickname": f"user{i}",
                "password_hash": "x",
                "is_admin": False,
                "available_points": 0,
                "escrowed_points": 0,
                "pending_points": 0,
                "version": 1,
                "created_at": created,
                "updated_at": created,
            }
            self.users.append(user_id)
            self.user_row[user_id] = row
            self.rows["users"].append(row)

    def _products(self) -> None:
        brands = [f"brand{i:02d}" for i in range(50)]
        for i in range(self.scale.products):
            created = self.between(self.now - 300 * DAY, self.now - 201 * DAY)
            product_id = self.ulid(created)
            category = CATEGORIES[i % len(CATEGORIES)]
            face = self.rng.choice(FACE_VALUES)
            brand = self.rng.choice(brands)
            row: Row = {
                "id": product_id,
                "name": f"{brand} {category} {face // 1000}k voucher #{i}",
                "brand": brand,
                "category": category,
                "face_value": face,
                "like_count": 0,
                "version": 1,
                "created_at": created,
            }
            self.products.append(product_id)
            self.product_row[product_id] = row
            self.rows["products"].append(row)
        # Popularity: Zipf-like over a random order, for likes and orders alike.
        ranks = list(range(len(self.products)))
        self.rng.shuffle(ranks)
        self._product_weights = list(itertools.accumulate(1 / (r + 1) ** 0.9 for r in ranks))

    def _likes(self) -> None:
        for user_id in self.users:
            for product_id in set(self.pick_products(self.rng.choice((0, 0, 0, 1, 1, 2, 3, 5)))):
                product = self.product_row[product_id]
                start = max(self.user_row[user_id]["created_at"], product["created_at"])
                self.rows["product_likes"].append(
                    {
                        "user_id": user_id,
                        "product_id": product_id,
                        "created_at": self.between(start, self.now),
                    }
                )
                product["like_count"] += 1
                product["version"] += 1

    def _coupons(self) -> None:
        def coupon(
            user_id: str, created: datetime, name: str, amount: int, kind: str, key: str | None
        ) -> None:
            row: Row = {
                "id": self.ulid(created),
                "user_id": user_id,
                "name": name,
                "discount_amount": amount,
                "kind": kind,
                "status": "AVAILABLE",  # past expires_at it is shown EXPIRED
                "expires_at": created + 30 * DAY,
                "issue_key": key,
                "order_id": None,
                "version": 1,
                "created_at": created,
                "used_at": None,
            }
            self.coupons_of[user_id].append(row)
            self.rows["coupons"].append(row)

        for user_id in self.users:
            created = self.user_row[user_id]["created_at"]
            coupon(user_id, created, "Welcome coupon", 1000, "welcome", f"welcome:{user_id}")
            for _ in range(self.rng.choice((0, 1, 1, 2, 3))):
                amount = self.rng.choice((500, 1000, 2000, 3000))
                at = self.between(self.now - 90 * DAY, self.now)
                coupon(user_id, at, f"Event coupon {amount}", amount, "admin", None)
        for rows in self.coupons_of.values():
            rows.sort(key=lambda r: r["created_at"])

    def _open_asks(self) -> None:
        for product_id in self.pick_products(self.scale.asks):
            seller = self.rng.choice(self.users)
            created = self.between(self.now - 30 * DAY, self.now)
            ask_id = self.ulid(created)
            self.ask_ids.add(ask_id)
            self.rows["sell_bids"].append(
                {
                    "id": ask_id,
                    "product_id": product_id,
                    "seller_id": seller,
                    # Asks above every buy bid (below): the book is not crossed.
                    "price": self.price(product_id, 0.80, 0.98),
                    "image_id": self.image(seller, created, created),
                    # Open: buy-now may take it today (its expiry margin is a day).
                    **self.voucher(ask_id, created, kst_date(self.now)),
                    "status": "OPEN",
                    "version": 1,
                    "created_at": created,
                    "updated_at": created,
                }
            )

    def _open_bids(self) -> None:
        for product_id in self.pick_products(self.scale.bids):
            buyer = self.rng.choice(self.users)
            created = self.between(self.now - 30 * DAY, self.now)
            bid_id, price = self.ulid(created), self.price(product_id, 0.60, 0.79)
            self.rows["buy_bids"].append(
                {
                    "id": bid_id,
                    "product_id": product_id,
                    "buyer_id": buyer,
                    "price": price,
                    "status": "OPEN",
                    "version": 1,
                    "created_at": created,
                    "updated_at": created,
                }
            )
            self._escrow(buyer, bid_id, price, created)
            self.escrowed_open[buyer] += price

    def _escrow(self, buyer: str, bid_id: str, price: int, at: datetime) -> None:
        self.ledger(
            "buy_bid_escrow", "buy_bid", bid_id, at,
            (buyer, "available", -price), (buyer, "escrowed", price),
        )  # fmt: skip
        self.escrowed_all[buyer] += price

    def _order_times(self, status: str) -> tuple[datetime, datetime | None]:
        """(created_at, completed_at) that the status allows: PAID within the 72 hours,
        COMPLETED not settled yet (completed today, KST), SETTLED completed by the day
        before yesterday (KST), so its 00:10 KST settlement has run."""
        today = kst_midnight(kst_date(self.now))
        if status == "PAID":
            return self.between(self.now - 72 * HOUR + timedelta(seconds=1), self.now), None
        if status == "COMPLETED":
            start = today if self.now - today > timedelta(minutes=10) else today - DAY
            completed = self.between(start, self.now)
        else:
            completed = self.between(self.now - 90 * DAY, today - DAY)
        return self.between(completed - 72 * HOUR, completed), completed

    def _usable_coupon(self, user_id: str, at: datetime) -> Row | None:
        for row in self.coupons_of[user_id]:
            if row["status"] == "AVAILABLE" and row["created_at"] <= at < row["expires_at"]:
                return row
        return None

    def _orders(self) -> None:
        heavy = self.rng.sample(self.users, self.scale.heavy_buyers)
        plans = []
        for _ in range(self.scale.orders):
            status = self.rng.choices(ORDER_STATUSES, weights=self.order_status_weights)[0]
            plans.append((*self._order_times(status), status))
        plans.sort(key=lambda p: p[0])  # coupons are used in time order
        settling: defaultdict[tuple[str, date], list[Row]] = defaultdict(list)
        for (created, completed, status), product_id in zip(
            plans, self.pick_products(len(plans)), strict=True
        ):
            buyer = self.rng.choice(heavy if self.rng.random() < 0.3 else self.users)
            seller = self.pick_seller(buyer)
            order = self._order(product_id, buyer, seller, created, completed, status)
            self.rows["orders"].append(order)
            if status != "PAID":
                self.finished_purchases[buyer] += 1
            if status == "SETTLED":
                assert completed is not None
                settling[(seller, kst_date(completed))].append(order)
        for (seller, business_date), orders in settling.items():
            self._settle(seller, business_date, orders)

    def pick_seller(self, buyer: str) -> str:
        seller = self.rng.choice(self.users)
        while seller == buyer:
            seller = self.rng.choice(self.users)
        return seller

    def _order(
        self,
        product_id: str,
        buyer: str,
        seller: str,
        created: datetime,
        completed: datetime | None,
        status: str,
    ) -> Row:
        order_id = self.ulid(created)
        via = self.rng.choice(("buy_now", "sell_now"))
        discount, coupon_id, sell_bid_id, buy_bid_id = 0, None, None, None
        since = max(created - 30 * DAY, self.product_row[product_id]["created_at"])
        if via == "buy_now":
            # The ask it bought: placed earlier, with its voucher image, now MATCHED.
            price = self.price(product_id, 0.80, 0.98)
            placed = self.between(max(since, self.user_row[seller]["created_at"]), created)
            image_id = self.image(seller, placed, placed)
            sell_bid_id = self.ulid(placed)
            self.ask_ids.add(sell_bid_id)
            voucher = self.voucher(sell_bid_id, placed, kst_date(placed))
            self.rows["sell_bids"].append(
                {
                    "id": sell_bid_id,
                    "product_id": product_id,
                    "seller_id": seller,
                    "price": price,
                    "image_id": image_id,
                    **voucher,
                    "status": "MATCHED",
                    "version": 2,
                    "created_at": placed,
                    "updated_at": created,
                }
            )
            coupon = self._usable_coupon(buyer, created) if self.rng.random() < 0.3 else None
            if coupon is not None:
                discount = min(int(coupon["discount_amount"]), price)
                coupon_id = coupon["id"]
                coupon.update(status="USED", order_id=order_id, used_at=created, version=2)
            self.spent[buyer] += price - discount
            self.ledger(
                "buy_now", "order", order_id, created,
                (buyer, "available", -(price - discount)),
                ("platform", "coupon_subsidy", -discount),
                (seller, "pending", price),
            )  # fmt: skip
        else:
            # The buy bid it sold into, escrowed when placed, now MATCHED; the seller's image.
            price = self.price(product_id, 0.60, 0.79)
            placed = self.between(max(since, self.user_row[buyer]["created_at"]), created)
            buy_bid_id = self.ulid(placed)
            self.rows["buy_bids"].append(
                {
                    "id": buy_bid_id,
                    "product_id": product_id,
                    "buyer_id": buyer,
                    "price": price,
                    "status": "MATCHED",
                    "version": 2,
                    "created_at": placed,
                    "updated_at": created,
                }
            )
            self._escrow(buyer, buy_bid_id, price, placed)
            uploaded = self.between(created - timedelta(minutes=10), created)
            image_id = self.image(seller, uploaded, created)
            voucher = self.voucher(order_id, created, kst_date(created))
            self.ledger(
                "sell_now", "order", order_id, created,
                (buyer, "escrowed", -price), (seller, "pending", price),
            )  # fmt: skip
        self.sold[seller] += price
        return {
            "id": order_id,
            "product_id": product_id,
            "buyer_id": buyer,
            "seller_id": seller,
            "sell_bid_id": sell_bid_id,
            "buy_bid_id": buy_bid_id,
            "coupon_id": coupon_id,
            "image_id": image_id,
            "price": price,
            "discount": discount,
            "paid": price - discount,
            "status": status,
            "via": via,
            **voucher,
            "settlement_id": None,
            "version": ORDER_VERSION[status],
            "created_at": created,
            "delivered_at": created,  # automatic inspection: delivered when placed
            "completed_at": completed,
            "settled_at": None,
        }

    def _settle(self, seller: str, business_date: date, orders: list[Row]) -> None:
        """The 00:10 KST run of the next day, as `Settlement.of_orders` computes it."""
        at = kst_midnight(business_date + DAY) + timedelta(minutes=10)
        at += self.rng.randrange(300_000_000) * MICROSECOND
        settlement_id = self.ulid(at)
        gross = sum(int(o["price"]) for o in orders)
        fee = sum(int(o["price"]) * self.fee_bps // 10_000 for o in orders)
        self.rows["settlements"].append(
            {
                "id": settlement_id,
                "seller_id": seller,
                "business_date": business_date,
                "order_count": len(orders),
                "gross": gross,
                "fee": fee,
                "net": gross - fee,
                "version": 1,
                "created_at": at,
            }
        )
        for order in orders:
            order.update(settlement_id=settlement_id, settled_at=at)
        self.ledger(
            "settlement", "settlement", settlement_id, at,
            (seller, "pending", -gross), (seller, "available", gross - fee),
            ("platform", "fees", fee),
        )  # fmt: skip
        self.settled_gross[seller] += gross
        self.settled_net[seller] += gross - fee

    def _balances(self) -> None:
        """Each user charged (at sign-up) what they spend plus some; balances = postings."""
        for user_id in self.users:
            row = self.user_row[user_id]
            need = self.spent[user_id] + self.escrowed_all[user_id]
            charge = need + self.rng.randrange(1, 2000) * 100
            self.ledger(
                "charge", "charge", None, row["created_at"],
                ("external", "charges", -charge), (user_id, "available", charge),
            )  # fmt: skip
            row.update(
                available_points=charge - need + self.settled_net[user_id],
                escrowed_points=self.escrowed_open[user_id],
                pending_points=self.sold[user_id] - self.settled_gross[user_id],
            )

    def insert(self, writer: Engine, settings: Settings) -> dict[str, float]:
        """Table by table, by LOAD DATA LOCAL INFILE of tab-separated files of LOAD_CHUNK
        rows in primary key order, on a session with unique and foreign key checks off (the
        rows are consistent by construction), the secondary indexes no foreign key needs
        dropped before and built again after (sorted: with the stack's 256 MB buffer pool,
        maintaining them row by row makes 10^6 orders several times slower). Replicated as
        any write is; each table's definition is checked to be unchanged afterwards."""
        seconds: dict[str, float] = {}
        engine = create_engine(
            writer.url,
            poolclass=NullPool,
            # TLS as the application's own connections (the stack refuses plain TCP).
            connect_args={"local_infile": True, "ssl": mysql_tls_context(settings)},
        )
        try:
            with tempfile.TemporaryDirectory(prefix="gm-seed-") as folder, engine.connect() as conn:
                raw: Any = conn.connection.dbapi_connection
                cursor = raw.cursor()
                cursor.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
                path = f"{folder}/rows.tsv"
                for table in INSERT_ORDER:
                    began = time.perf_counter()
                    rows = self.rows[table.name]
                    if not rows:
                        continue
                    columns = list(rows[0])
                    if "id" in columns:
                        rows = sorted(rows, key=operator.itemgetter("id"))
                    definition = show_create_table(cursor, table.name)
                    deferred = deferrable_indexes(definition)
                    if deferred:
                        drops = ", ".join(f"DROP INDEX `{name}`" for name in deferred)
                        cursor.execute(f"ALTER TABLE {table.name} {drops}")
                    for start in range(0, len(rows), LOAD_CHUNK):
                        with open(path, "w", encoding="utf-8", newline="") as file:
                            file.writelines(
                                "\t".join([tsv_cell(row[c]) for c in columns]) + "\n"
                                for row in rows[start : start + LOAD_CHUNK]
                            )
                        cursor.execute(
                            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table.name} "
                            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
                            f"LINES TERMINATED BY '\\n' ({', '.join(columns)})"
                        )
                        loaded = cursor.rowcount
                        cursor.execute("SHOW WARNINGS LIMIT 3")
                        warnings = cursor.fetchall()
                        if warnings or loaded != len(rows[start : start + LOAD_CHUNK]):
                            raise RuntimeError(f"{table.name}: loaded {loaded} rows, {warnings}")
                        raw.commit()
                    if deferred:
                        adds = ", ".join(f"ADD {index}" for index in deferred.values())
                        cursor.execute(f"ALTER TABLE {table.name} {adds}")
                        after = show_create_table(cursor, table.name)
                        if sorted(after.splitlines()) != sorted(definition.splitlines()):
                            raise RuntimeError(f"{table.name} changed:\n{definition}\n{after}")
                    seconds[table.name] = round(time.perf_counter() - began, 2)
        finally:
            engine.dispose()
        return seconds


def show_create_table(cursor: Any, table: str) -> str:
    """The table's definition, one line per column, index and constraint (no commas), but
    for the AUTO_INCREMENT counter."""
    cursor.execute(f"SHOW CREATE TABLE {table}")
    definition: str = re.sub(r" AUTO_INCREMENT=\d+", "", cursor.fetchone()[1])
    return "\n".join(line.rstrip(",") for line in definition.splitlines())


def deferrable_indexes(definition: str) -> dict[str, str]:
    """name → definition of the secondary indexes whose first column is no foreign key's
    (those a foreign key needs cannot be dropped)."""
    foreign = set(re.findall(r"FOREIGN KEY \(`(\w+)`", definition))
    found: dict[str, str] = {}
    for match in re.finditer(r"^\s*((?:UNIQUE )?KEY `(\w+)` \(`(\w+)`.*)$", definition, re.M):
        index, name, first = match.groups()
        if first not in foreign:
            found[name] = index
    return found


def tsv_cell(value: Any) -> str:
    """One value as LOAD DATA reads it: NULL as \\N, booleans as 0/1, datetimes and dates
    as their ISO text with a space, backslash, tab and newline escaped."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "1" if value else "0"
    text = str(value)
    if isinstance(value, str) and ("\\" in text or "\t" in text or "\n" in text):
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return text


def seed_elsewhere(settings: Settings, scale: Scale) -> Seeded:
    """`seed` in a child process of its own, which ends with it: the process that times the
    handler never holds the rows (~6 GB at 10^6 orders) nor the heap they leave behind, as a
    Lambda's never does. In a process that had built 3 GB of rows first (a twentieth kept),
    product detail's p50 at 10^4 read 1.36 and 1.40 ms, against 1.05 and 0.94 ms."""
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        seeded: Seeded = pool.apply(_seed_in_child, (settings.model_dump(), scale))
    return seeded


def _seed_in_child(settings: dict[str, Any], scale: Scale) -> Seeded:
    container = bootstrap(Settings.model_validate(settings))
    try:
        return seed(container, scale)
    finally:
        container.close()


def seed(container: Container, scale: Scale) -> Seeded:
    began = time.perf_counter()
    seeder = Seeder(scale, fee_bps=container.settings.seller_fee_bps)
    seeder.build()
    built = time.perf_counter() - began
    insert_seconds = seeder.insert(container.database.writer, container.settings)
    insert_seconds["_build_rows_in_python"] = round(built, 2)
    heavy = [user for user, _ in seeder.finished_purchases.most_common(scale.heavy_buyers)]
    return Seeded(
        users=seeder.users,
        products=seeder.products,
        heavy_buyers=heavy,
        rows={name: len(rows) for name, rows in seeder.rows.items()},
        seconds=time.perf_counter() - began,
        insert_seconds=insert_seconds,
    )


# -- the rebuild and what it costs -----------------------------------------------------------


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """INFO commandstats: command → (calls, microseconds). Commands a script runs are
    counted too, and their time is inside the script's (EVALSHA's) own."""
    info: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"])) for name, s in info.items()
    }


def stats_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, dict[str, float]]:
    delta = {}
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0))
        if calls > calls0:
            delta[name] = {"calls": calls - calls0, "seconds": round((usec - usec0) / 1e6, 3)}
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]["seconds"]))


def script_seconds(delta: dict[str, dict[str, float]]) -> float:
    return sum(delta.get(name, {}).get("seconds", 0.0) for name in ("evalsha", "eval"))


def wait_lazyfree(client: redis.Redis, timeout: float = 60.0) -> None:
    """UNLINK frees off the main thread: wait until it has, before measuring anything."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(client.info("memory").get("lazyfree_pending_objects", 0)) == 0:
            return
        time.sleep(0.05)


def timed_rebuild(container: Container) -> tuple[RebuildReport, dict[str, dict[str, float]]]:
    before = command_stats(container.redis)
    report = rebuild_read_models(container.settings, container.database)
    delta = stats_delta(before, command_stats(container.redis))
    wait_lazyfree(container.redis)
    return report, delta


def rebuild_breakdown(container: Container) -> dict[str, Any]:
    """The rebuild's parts timed apart, from the same snapshot the same way: streaming the
    rows (each already an operation's JSON, built by the database), joining them into
    batches, then applying the batches alone (into a scratch generation, dropped
    afterwards) with the script's server time."""
    engine, role = container.database.caught_up_reader()
    per_source: dict[str, dict[str, float]] = {}
    batches: dict[str, list[str]] = {}
    with engine.connect() as conn:
        conn = start_snapshot(conn)
        for source in SOURCES:
            fetch = join = 0.0
            rows = 0
            batches[source.name] = []
            began = time.perf_counter()
            result = conn.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
                source.query
            )
            partitions = iter(result.partitions())
            fetch += time.perf_counter() - began
            while True:
                t0 = time.perf_counter()
                part = next(partitions, None)
                t1 = time.perf_counter()
                fetch += t1 - t0
                if part is None:
                    break
                batches[source.name].append(batch_of(source, part))
                join += time.perf_counter() - t1
                rows += len(part)
            per_source[source.name] = {
                "rows": rows,
                "sql_fetch_s": round(fetch, 3),
                "join_s": round(join, 3),
            }
        conn.rollback()
    client = build_redis(container.settings, timeout=BULK_TIMEOUT_SECONDS)
    rm = ReadModels(client)
    scratch = int(client.incr(SEQUENCE_KEY))  # never current, never building: nobody reads it
    try:
        for name, source_batches in batches.items():
            before = command_stats(client)
            began = time.perf_counter()
            for i in range(0, len(source_batches), PIPELINE_BATCHES):
                rm.apply_bulk(scratch, source_batches[i : i + PIPELINE_BATCHES])
            wall = time.perf_counter() - began
            delta = stats_delta(before, command_stats(client))
            per_source[name]["redis_apply_wall_s"] = round(wall, 3)
            per_source[name]["redis_script_server_s"] = round(script_seconds(delta), 3)
    finally:
        rm.drop(scratch)
        wait_lazyfree(client)
        client.close()
    keys = ("rows", "sql_fetch_s", "join_s", "redis_apply_wall_s", "redis_script_server_s")
    totals = {key: round(sum(s[key] for s in per_source.values()), 3) for key in keys}
    totals["rows"] = int(totals["rows"])
    # The apply's wall time minus the script: the pipeline and the socket.
    totals["redis_client_and_network_s"] = round(
        totals["redis_apply_wall_s"] - totals["redis_script_server_s"], 3
    )
    return {"reader": role, "per_source": per_source, "totals": totals}


def profile_rebuild(container: Container, top: int = 25) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    report = rebuild_read_models(container.settings, container.database)
    profiler.disable()
    wait_lazyfree(container.redis)
    stats = pstats.Stats(profiler)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]

    def where(key: tuple[str, int, str]) -> str:
        path, line, name = key
        parts = path.split("/")
        short = "/".join(parts[-3:]) if len(parts) > 3 else path
        return f"{short}:{line}({name})"

    def ranked(index: int) -> list[dict[str, Any]]:
        rows = sorted(entries.items(), key=lambda kv: -kv[1][index])[:top]
        return [
            {
                "function": where(key),
                "calls": value[1],
                "tottime_s": round(value[2], 3),
                "cumtime_s": round(value[3], 3),
            }
            for key, value in rows
        ]

    return {
        "note": "cProfile slows Python down, not Redis or MariaDB: shares, not absolute times",
        "rebuild": report.as_dict(),
        "by_tottime": ranked(2),
        "by_cumtime": ranked(3),
    }


# -- Redis memory ----------------------------------------------------------------------------


def key_family(rest: str) -> str:
    """`product:<id>` → product; `hist:buy:done:<user>` → hist:buy:done; `list:popular:*`
    and `list:popular:c:<category>` → list; `rank:likes` → rank; `image:<id>` (a
    deleted image's tombstone) → image."""
    parts = rest.split(":")
    if parts[0] == "hist":
        return ":".join(parts[:3])
    return parts[0]


def memory_report(
    client: redis.Redis,
    generation: int,
    rows: dict[str, int],
    before: int,
    after: int,
    rng: random.Random,
) -> dict[str, Any]:
    prefix = generation_prefix(generation)
    keys_by_family: defaultdict[str, list[bytes]] = defaultdict(list)
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        keys_by_family[key_family(key.decode()[len(prefix) :])].append(key)
    families: dict[str, dict[str, Any]] = {}
    for family, keys in sorted(keys_by_family.items()):
        sample = rng.sample(keys, min(MEMORY_SAMPLE, len(keys)))
        pipe = client.pipeline(transaction=False)
        for key in sample:
            pipe.memory_usage(key, samples=0)  # every element counted, not estimated
            pipe.type(key)
        answers = pipe.execute()
        sizes = [int(b or 0) for b in answers[0::2]]
        kind = answers[1].decode() if answers else ""
        mean = statistics.fmean(sizes)
        entry: dict[str, Any] = {
            "type": kind,
            "keys": len(keys),
            "sampled": len(sample),
            "mean_bytes_per_key": round(mean),
            "estimated_bytes": round(mean * len(keys)),
        }
        if kind == "zset":
            pipe = client.pipeline(transaction=False)
            for key in sample:
                pipe.zcard(key)
            members = sum(int(n) for n in pipe.execute())
            entry["mean_members_per_key"] = round(members / len(sample), 1)
            entry["bytes_per_member"] = round(sum(sizes) / members, 1) if members else None
        families[family] = entry

    def total(*names: str) -> float:
        return float(sum(families.get(n, {}).get("estimated_bytes", 0) for n in names))

    def per(count_of: str, *names: str) -> float | None:
        count = rows.get(count_of, 0)
        return round(total(*names) / count) if count else None

    order_sets = (
        "trades",
        "hist:buy:in_progress",
        "hist:buy:done",
        "hist:sell:in_progress",
        "hist:sell:done",
    )
    per_entity = {
        "user": per("users", "user"),
        "product": per("products", "product", "detail", "list", "rank"),
        "open_ask": per("asks", "ask", "asks", "hist:sell:bidding"),
        "open_bid": per("bids", "bid", "bids", "hist:buy:bidding"),
        "order": per("orders", "order", *order_sets),
        # Only deleted images are stored (an order's image key is derived): a share of the set.
        "image": per("images", "image", "images"),
        "coupon": per("coupons", "coupon", "coupons"),
        "settlement": per("settlements", "settlement", "settlements"),
    }
    if per_entity["order"] is not None and rows.get("orders"):
        # Every order has its voucher image, read for the gifticon link.
        images = total("image", "images") / max(1, rows.get("images", 0))
        per_entity["order_with_its_image"] = round(per_entity["order"] + images)
    estimated = sum(f["estimated_bytes"] for f in families.values())
    total_rows = sum(rows.values())
    return {
        "generation": generation,
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_delta": after - before,
        "keys": sum(len(k) for k in keys_by_family.values()),
        "memory_usage_estimate_total": estimated,
        "used_memory_delta_per_row": round((after - before) / total_rows) if total_rows else None,
        "bytes_per_entity": per_entity,
        "families": families,
    }


# -- latency ---------------------------------------------------------------------------------


class MissingReadModels(ReadModelStore):
    """Read models that never have the answer: the query handler then answers every request
    by SQL on the replica, through exactly the code a real miss takes (Reads.answer). Nothing
    writes to them: they have no generation and refuse every write."""

    def apply(self, ops: Sequence[Op], *, outbox_id: str | None = None) -> int:
        raise NotImplementedError("the SQL side's read models are never written")

    def generation(self) -> int | None:
        return None

    def building(self) -> int | None:
        return None

    def begin_generation(self) -> int:
        raise NotImplementedError("the SQL side's read models are never rebuilt")

    def apply_bulk(self, generation: int, batches: Iterable[str]) -> None:
        raise NotImplementedError("the SQL side's read models are never rebuilt")

    def switch_to(self, generation: int) -> int | None:
        raise NotImplementedError("the SQL side's read models are never rebuilt")

    def abandon(self, generation: int) -> None:
        raise NotImplementedError("the SQL side's read models are never rebuilt")

    def drop(self, generation: int, *, batch: int = 1000) -> int:
        raise NotImplementedError("the SQL side's read models are never rebuilt")

    def record_search(self, user_id: str, query: str, at: datetime) -> None:
        pass

    def search_history(self, user_id: str) -> list[tuple[str, datetime]]:
        return []

    def user(self, user_id: str) -> None:
        return None

    def product(self, product_id: str, *, recent_trades: int, ladder: int) -> None:
        return None

    def products(self, *, sort: str, category: str | None, after: str | None, limit: int) -> None:
        return None

    def rankings(self, *, by: str, limit: int) -> None:
        return None

    def documents(self, user_id: str, lists: Sequence[tuple[str, str]], limit: int) -> None:
        return None

    def queue(self, name: str, limit: int) -> None:
        return None

    def order(self, order_id: str) -> None:
        return None

    def gifticon(self, order_id: str) -> None:
        return None

    def all_seen(self, outbox_ids: Iterable[str]) -> bool:
        return True


@dataclass(frozen=True)
class Route:
    name: str
    entities: list[str]  # one per timed request, drawn beforehand
    target: Callable[[str], str]
    user: Callable[[str], str | None]  # who signs the request; None: anonymous
    read_model: Callable[[ReadModelReader, str], Answer | None]
    sql: Callable[[Connection, str], Answer | None]


def routes(seeded: Seeded, rng: random.Random, n: int) -> list[Route]:
    def anonymous(_: str) -> None:
        return None

    def caller(user_id: str) -> str:
        return user_id

    products = rng.choices(seeded.products, k=n)
    buyers = rng.choices(seeded.heavy_buyers, k=n)
    categories = rng.choices(CATEGORIES, k=n)
    return [
        Route(
            "product_detail",
            products,
            lambda p: f"/api/products/{p}",
            anonymous,
            lambda rm, p: product_queries.product_detail_from_read_model(rm, p),
            lambda s, p: product_queries.product_detail_from_sql(s, p),
        ),
        Route(
            "buy_history_done",
            buyers,
            lambda _: "/api/buy/history/done",
            caller,
            lambda rm, u: trades.history_from_read_model(
                rm, u, "done", side=trades.BUYER, limit=50
            ),
            lambda s, u: trades.history_from_sql(s, u, "done", side=trades.BUYER, limit=50),
        ),
        Route(
            "product_list_popular",
            [""] * n,
            lambda _: "/api/products?sort=popular",
            anonymous,
            lambda rm, _: product_queries.product_list_from_read_model(
                rm, sort="popular", category=None, after=None, limit=20
            ),
            lambda s, _: product_queries.product_list_from_sql(
                s, sort="popular", category=None, after=None, limit=20
            ),
        ),
        Route(
            "product_list_popular_category",
            categories,
            lambda c: f"/api/products?sort=popular&category={c}",
            anonymous,
            lambda rm, c: product_queries.product_list_from_read_model(
                rm, sort="popular", category=c, after=None, limit=20
            ),
            lambda s, c: product_queries.product_list_from_sql(
                s, sort="popular", category=c, after=None, limit=20
            ),
        ),
        Route(
            "rankings_likes",
            [""] * n,
            lambda _: "/api/rankings?by=likes",
            anonymous,
            lambda rm, _: product_queries.rankings_from_read_model(rm, by="likes", limit=20),
            lambda s, _: product_queries.rankings_from_sql(s, by="likes", limit=20),
        ),
        Route(
            "rankings_orders",
            [""] * n,
            lambda _: "/api/rankings?by=orders",
            anonymous,
            lambda rm, _: product_queries.rankings_from_read_model(rm, by="orders", limit=20),
            lambda s, _: product_queries.rankings_from_sql(s, by="orders", limit=20),
        ),
    ]


STORES = ("redis_handler", "sql_handler", "redis_read", "sql_view")
HANDLER_STORES = ("redis_handler", "sql_handler")  # at the other sizes: the handler's figures
STORE_DESCRIPTIONS = {
    "redis_handler": "query Lambda handler in-process (LocalInvoker), read model hit",
    "sql_handler": "the same handler, read models always missing: SQL on the replica",
    "redis_read": "the read model call alone (Lua read script + shaping in Python)",
    "sql_view": "the SQL view alone: database.run_query(views....) on the replica",
}


class Bench:
    """The four ways to answer one route's request, each a call taking the entity."""

    def __init__(self, redis_side: Container, sql_side: Container, tokens: TokenService) -> None:
        self.redis_side, self.sql_side = redis_side, sql_side
        self.invoker = LocalInvoker()
        self.tokens = tokens
        self._headers: dict[str | None, dict[str, str]] = {None: {}}

    def headers(self, user: str | None) -> dict[str, str]:
        if user not in self._headers:
            assert user is not None
            self._headers[user] = {"authorization": f"Bearer {self.tokens.issue(user)}"}
        return self._headers[user]

    def handler(self, container: Container, route: Route, entity: str) -> Reply:
        set_container(container)
        reply = self.invoker.http(
            "GET", route.target(entity), headers=self.headers(route.user(entity))
        )
        if reply.status != 200:
            raise RuntimeError(f"{route.name} {route.target(entity)}: {reply}")
        return reply

    def calls(self, route: Route) -> dict[str, Callable[[str], Any]]:
        rm: ReadModelReader = self.redis_side.read_models
        database = self.redis_side.database
        return {
            "redis_handler": lambda e: self.handler(self.redis_side, route, e),
            "sql_handler": lambda e: self.handler(self.sql_side, route, e),
            "redis_read": lambda e: route.read_model(rm, e),
            "sql_view": lambda e: database.run_query(lambda s: route.sql(s, e)),
        }


def differences(a: Any, b: Any, path: str = "$", limit: int = 5) -> list[str]:
    """Where two JSON values differ (the first few places)."""
    found: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{path}.{key}: only in {'read model' if key in a else 'SQL'}")
            else:
                found += differences(a[key], b[key], f"{path}.{key}", limit)
            if len(found) >= limit:
                break
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{path}: {len(a)} items (read model) vs {len(b)} (SQL)")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found += differences(x, y, f"{path}[{i}]", limit)
            if len(found) >= limit:
                break
    elif a != b or type(a) is not type(b):
        found.append(f"{path}: {a!r} (read model) vs {b!r} (SQL)")
    return found[:limit]


def verify(bench: Bench, route: Route) -> dict[str, Any]:
    """Every entity drawn for `route`: both handlers' bodies byte for byte, and the raw
    read model answer against the raw SQL view's."""
    call = bench.calls(route)
    checked = handler_mismatches = raw_mismatches = misses = 0
    examples: list[dict[str, Any]] = []
    items: list[int] = []  # a list's answers: how many items each has (the work it is)
    for entity in dict.fromkeys(route.entities):
        checked += 1
        a, b = call["redis_handler"](entity), call["sql_handler"](entity)
        body = a.body
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            items.append(len(body["items"]))
        if a.raw != b.raw:
            handler_mismatches += 1
            if len(examples) < 5:
                diff = differences(a.body, b.body) or ["same JSON, different bytes"]
                examples.append({"entity": entity, "where": "handler", "differences": diff})
        r, s = call["redis_read"](entity), call["sql_view"](entity)
        if r is None:
            misses += 1
        if r != s:
            raw_mismatches += 1
            if len(examples) < 5:
                examples.append(
                    {"entity": entity, "where": "raw", "differences": differences(r, s)}
                )
    return {
        "entities_checked": checked,
        "items_per_answer": round(statistics.fmean(items), 1) if items else None,
        "read_model_misses": misses,
        "handler_body_mismatches": handler_mismatches,
        "raw_answer_mismatches": raw_mismatches,
        "examples": examples,
    }


def summary(ms: Sequence[float]) -> dict[str, float]:
    values = list(ms)
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


def time_route(
    bench: Bench,
    route: Route,
    warmup: int,
    rng: random.Random,
    stores: Sequence[str] = STORES,
    budget_s: float | None = None,
    redis_passes: int = 1,
) -> dict[str, Any]:
    """`stores`' answers to the drawn entities, after `warmup` untimed requests: first the
    SQL stores', then the read models' for as many entities, each side in blocks (each store
    answers BLOCK entities in a row, the side's stores in a new order for each block).

    Not store by store per entity, nor SQL's blocks between the read models': a store timed
    after another's answers pays for their wake-up (caches, a sleeping core), and SQL's grow
    with the data. At 10^5 orders the ranking by orders from the read model took 1.1 ms
    timed alone and 1.8 ms after each 17 ms SQL answer (2.1 ms with a 10 ms pause instead:
    not the replica still busy); at 10^6, in blocks between 43 ms SQL answers, the popular
    list took p50 1.52 / p99 3.06 ms, alone (another run) 0.93 / 1.73 ms. The first REWARM
    of each block go untimed. With `budget_s`, a side stops at the first block boundary past
    that many seconds (MIN_SAMPLES at least), and the other side times as many: the entities
    are drawn at random, so the first ones are as good a sample as all of them.

    The read models answer them `redis_passes` times over, one pass after another: their
    p99 is what the flatness goal compares across data sizes, and one pass of 1000 answers
    of ~1.5 ms puts it on the 10th slowest, which a moment of the machine's own work moves
    (product detail's flatness read 2.14x in one run, 0.87x in the next, its code the
    same). Each pass's p99 is kept beside the pooled one, so the spread shows in the
    report."""
    call = bench.calls(route)
    samples: dict[str, list[float]] = {store: [] for store in stores}
    untimed = warmup
    for entity in rng.choices(route.entities, k=warmup):
        for store in stores:
            call[store](entity)
    gc.collect()
    timed = len(route.entities)
    sql_first = (
        [store for store in stores if not store.startswith("redis")],
        [store for store in stores if store.startswith("redis")],
    )
    by_pass: dict[str, list[float]] = {}
    for order in (side for side in sql_first if side):
        rewarmed = 0
        passes = redis_passes if order[0].startswith("redis") else 1
        for pass_number in range(passes):
            timing_began = time.perf_counter()
            for at in range(0, timed, BLOCK):
                if (
                    budget_s is not None
                    and pass_number == 0  # later passes answer the same entities
                    and at >= MIN_SAMPLES
                    and time.perf_counter() - timing_began > budget_s
                ):
                    timed = at
                    break
                block = route.entities[at : min(at + BLOCK, timed)]
                rng.shuffle(order)  # each block's stores in a new order: none always goes first
                rewarmed += len(block[:REWARM])
                for store in order:
                    for entity in block[:REWARM]:
                        call[store](entity)
                    for entity in block:
                        began = time.perf_counter()
                        call[store](entity)
                        samples[store].append((time.perf_counter() - began) * 1000)
            if passes > 1:
                for store in order:
                    this_pass = samples[store][-timed:]
                    by_pass.setdefault(store, []).append(round(percentile(this_pass, 99), 3))
        untimed = max(untimed, warmup + rewarmed)
    result: dict[str, Any] = {store: summary(samples[store]) for store in stores}
    for store, p99s in by_pass.items():
        result[store]["p99_ms_by_pass"] = p99s
    result["samples"] = timed  # answers timed per store and pass: each entity once
    result["redis_passes"] = redis_passes
    result["untimed_per_store"] = untimed

    def ratio(sql: str, rm: str) -> dict[str, float]:
        return {
            k: round(result[sql][k] / result[rm][k], 1) for k in ("p50_ms", "p99_ms", "mean_ms")
        }

    result["ratio_sql_to_redis"] = {
        kind: ratio(sql, rm)
        for kind, sql, rm in (
            ("handler", "sql_handler", "redis_handler"),
            ("raw", "sql_view", "redis_read"),
        )
        if sql in stores and rm in stores
    }
    return result


def redis_get_floor(client: redis.Redis, n: int) -> dict[str, float]:
    for _ in range(200):
        client.get(SEQUENCE_KEY)
    ms = []
    for _ in range(n):
        began = time.perf_counter()
        client.get(SEQUENCE_KEY)
        ms.append((time.perf_counter() - began) * 1000)
    return summary(ms)


def handler_floors(bench: Bench, n: int) -> dict[str, dict[str, float]]:
    """What every handler request costs whatever answers it: a request refused before any
    store is asked (a product id that is not a ULID: 404 from the route), through the same
    invoker; and the invoker's own share (API Gateway's routing and event, made locally)."""
    set_container(bench.redis_side)
    target = "/api/products/not-a-product-id"
    application = bench.invoker.application
    for _ in range(200):
        bench.invoker.http("GET", target)
    handler, routing = [], []
    for _ in range(n):
        began = time.perf_counter()
        reply = bench.invoker.http("GET", target)
        handler.append((time.perf_counter() - began) * 1000)
        if reply.status != 404:
            raise RuntimeError(f"expected 404 from {target}: {reply}")
        began = time.perf_counter()
        route_request(application, "GET", target, [], b"")
        routing.append((time.perf_counter() - began) * 1000)
    return {"handler_404_no_store": summary(handler), "local_invoker_routing": summary(routing)}


def detail_near_floor(
    bench: Bench, route: Route, warmup: int, rng: random.Random
) -> dict[str, Any]:
    """Issue 18: the product detail via the handler against what any answer costs here, the
    handler answering with no store (a 404) plus one Redis round trip (GET). The three are
    timed interleaved, in a new order for each request, so that a busy machine weighs on
    them alike."""
    set_container(bench.redis_side)
    client = bench.redis_side.redis

    def no_store(_: str) -> None:
        if bench.invoker.http("GET", "/api/products/not-a-product-id").status != 404:
            raise RuntimeError("expected a 404 from a product id that is not a ULID")

    calls: dict[str, Callable[[str], Any]] = {
        "detail": lambda e: bench.handler(bench.redis_side, route, e),
        "no_store": no_store,
        "redis_get": lambda _: client.get(SEQUENCE_KEY),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for i, entity in enumerate(
        itertools.chain(rng.choices(route.entities, k=warmup), route.entities)
    ):
        rng.shuffle(order)
        for name in order:
            began = time.perf_counter()
            calls[name](entity)
            if i >= warmup:
                samples[name].append((time.perf_counter() - began) * 1000)
    figures = {name: summary(ms) for name, ms in samples.items()}
    floor_ms = figures["no_store"]["p50_ms"] + figures["redis_get"]["p50_ms"]
    detail_ms = figures["detail"]["p50_ms"]
    return {
        "route": route.name,
        "samples": len(samples["detail"]),
        "timed": figures,
        "handler_p50_ms": detail_ms,
        "floor_p50_ms": round(floor_ms, 3),
        "over_floor": round(detail_ms / floor_ms, 2),
        "goal_over_floor": GOAL_OVER_FLOOR,
        "met": detail_ms <= GOAL_OVER_FLOOR * floor_ms,
    }


def measure_latency(
    settings_container: Container,
    seeded: Seeded,
    samples: int,
    warmup: int,
    *,
    stores: Sequence[str] = STORES,
    budget_s: float | None = None,
    redis_passes: int = 1,
) -> dict[str, Any]:
    settings = settings_container.settings
    redis_side = bootstrap(settings)
    sql_side = bootstrap(settings, read_models=MissingReadModels())
    tokens = TokenService(redis_side.jwt_secret, timedelta(seconds=settings.jwt_ttl_seconds))
    bench = Bench(redis_side, sql_side, tokens)
    rng = random.Random(11)
    wall_began = time.perf_counter()
    try:
        chosen = routes(seeded, rng, samples)
        equality = {}
        for route in chosen:
            equality[route.name] = verify(bench, route)
            print(f"  verified {route.name}: {equality[route.name]}", flush=True)
        gc.collect()
        gc.freeze()  # what the setup left behind is not the GC's business while timing
        before = command_stats(redis_side.redis)
        timings = {}
        for route in chosen:
            began = time.perf_counter()
            timings[route.name] = time_route(
                bench, route, warmup, rng, stores, budget_s, redis_passes
            )
            print(
                f"  timed {route.name} in {time.perf_counter() - began:.0f}s: "
                f"{json.dumps(timings[route.name])}",
                flush=True,
            )
        delta = stats_delta(before, command_stats(redis_side.redis))
        floor = redis_get_floor(redis_side.redis, samples)
        floors = handler_floors(bench, samples)
        detail = next(route for route in chosen if route.name == "product_detail")
        near_floor = detail_near_floor(bench, detail, warmup, rng)
        gc.unfreeze()
        replica = redis_side.database.monitor.state() if redis_side.database.monitor else None
    finally:
        set_container(None)
        redis_side.close()
        sql_side.close()
    # Each read-model answer is one script call: fewer means some fell back to SQL.
    script_calls = sum(delta.get(name, {}).get("calls", 0) for name in ("evalsha", "eval"))
    redis_stores = sum(1 for store in stores if store.startswith("redis"))
    expected = sum(
        redis_stores * (t["samples"] * redis_passes + t["untimed_per_store"])
        for t in timings.values()
    )
    goals = {
        route: {
            "ratio_handler_p50": timings[route]["ratio_sql_to_redis"]["handler"]["p50_ms"],
            "ratio_raw_p50": timings[route]["ratio_sql_to_redis"].get("raw", {}).get("p50_ms"),
            "ratio_goal": GOAL_RATIO,
            "redis_handler_p99_ms": timings[route]["redis_handler"]["p99_ms"],
            "handler_p99_goal_ms": GOAL_HANDLER_P99_MS,
            "met": timings[route]["ratio_sql_to_redis"]["handler"]["p50_ms"] >= GOAL_RATIO
            and timings[route]["redis_handler"]["p99_ms"] <= GOAL_HANDLER_P99_MS,
        }
        for route in ("product_detail", "buy_history_done")
    }
    return {
        "wall_seconds": round(time.perf_counter() - wall_began, 1),  # verification and timing
        "samples_per_store": samples,
        "redis_passes": redis_passes,
        "warmup_per_route": warmup,
        "route_budget_s": budget_s,
        "stores": {store: STORE_DESCRIPTIONS[store] for store in stores},
        "redis_get_floor": floor,
        "handler_floors": floors,
        "routes": timings,
        "goals": goals,
        "near_floor": near_floor,
        "equality": equality,
        "checks": {
            "read_model_script_calls": script_calls,
            "expected_script_calls": expected,
            "replica": None if replica is None else replica.status,
        },
    }


# -- the program -----------------------------------------------------------------------------


def sizes_argument(text: str) -> list[int]:
    return sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--orders", type=int, default=100_000, help="orders seeded for the full measurement"
    )
    parser.add_argument(
        "--sizes",
        type=sizes_argument,
        default=[10_000, 100_000, 1_000_000],
        help="orders seeded in turn for latency against data size (--orders among them)",
    )
    parser.add_argument("--samples", type=int, default=2000, help="timed requests per store")
    parser.add_argument(
        "--size-samples", type=int, default=1000, help="timed requests per store, other sizes"
    )
    parser.add_argument(
        "--route-budget",
        type=float,
        default=120.0,
        help=f"seconds of timed requests per route at the other sizes ({MIN_SAMPLES} at least)",
    )
    parser.add_argument(
        "--redis-passes",
        type=int,
        default=3,
        help="times the read models answer the timed entities (their p99 pooled)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per route")
    parser.add_argument("--rebuilds", type=int, default=2, help="rebuilds timed")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile a rebuild (done anyway below the goal)"
    )
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    sizes = sorted(set(args.sizes) | {args.orders})
    by_size: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] = {}
    with bench_stack() as stack:
        for i, orders in enumerate(sizes):
            if i:
                reset(stack.config)  # an empty schema for the next size
            scale = Scale.for_orders(orders)
            print(f"== {orders:,} orders", flush=True)
            if orders == args.orders:
                result = run(stack, scale, args)
                by_size[str(orders)] = size_entry(
                    scale,
                    result["seed"],
                    result["rebuild"]["runs"][0],
                    result["redis_memory"]["used_memory_delta"],
                    result["latency"],
                )
            else:
                by_size[str(orders)] = run_size(stack, scale, args)
            print(f"  by size: {json.dumps(by_size[str(orders)])}", flush=True)
        stack_redis = build_redis(bench_settings(stack), timeout=BULK_TIMEOUT_SECONDS)
        stack_redis.flushdb(asynchronous=True)  # ~1.6 GB at 10^6 orders: not left behind
        stack_redis.close()
    result["by_size"] = by_size
    result["by_size_goals"] = size_goals(by_size, args.orders)
    write_result("read_models", result)
    plot(result)
    plot_by_size(result)


def size_entry(
    scale: Scale,
    seeded: dict[str, Any],
    rebuild: dict[str, Any],
    redis_bytes: int,
    latency: dict[str, Any],
) -> dict[str, Any]:
    """One data size's handler figures: read model against SQL on the replica, per route."""
    routes: dict[str, dict[str, Any]] = {}
    for name, t in latency["routes"].items():
        redis_side, sql_side = t["redis_handler"], t["sql_handler"]
        routes[name] = {
            "samples": t["samples"],
            "redis_p50_ms": redis_side["p50_ms"],
            "redis_p99_ms": redis_side["p99_ms"],
            "redis_p99_ms_by_pass": redis_side.get("p99_ms_by_pass"),
            "sql_p50_ms": sql_side["p50_ms"],
            "sql_p99_ms": sql_side["p99_ms"],
            "ratio_p50": t["ratio_sql_to_redis"]["handler"]["p50_ms"],
            "ratio_p99": t["ratio_sql_to_redis"]["handler"]["p99_ms"],
            # A page's cost is its items': a route whose answers are shorter at one size
            # than at another is not flat for that reason alone.
            "items_per_answer": latency["equality"][name].get("items_per_answer"),
        }
    equality = latency["equality"].values()
    checks = latency["checks"]
    return {
        "scale": asdict(scale),
        "seconds": {
            "seed": seeded["seconds"],
            "replica_catch_up": seeded["replica_catch_up_seconds"],
            "rebuild": rebuild["seconds"],
            "latency": latency["wall_seconds"],
        },
        "rebuild_rows": rebuild["total_rows"],
        "rebuild_rows_per_second": rebuild["rows_per_second"],
        "redis_used_memory_bytes": redis_bytes,
        "samples_per_store": latency["samples_per_store"],
        "redis_passes": latency["redis_passes"],
        "route_budget_s": latency["route_budget_s"],
        "routes": routes,
        # What the machine itself did meanwhile: a p99 that grows with these is not the data's.
        "floors_p99_ms": {
            "redis_get": latency["redis_get_floor"]["p99_ms"],
            "handler_no_store": latency["handler_floors"]["handler_404_no_store"]["p99_ms"],
        },
        "checks": {
            "handler_body_mismatches": sum(e["handler_body_mismatches"] for e in equality),
            "raw_answer_mismatches": sum(e["raw_answer_mismatches"] for e in equality),
            "read_model_misses": sum(e["read_model_misses"] for e in equality),
            "read_model_script_calls": checks["read_model_script_calls"],
            "expected_script_calls": checks["expected_script_calls"],
        },
    }


def seed_into_empty_redis(container: Container, stack: Stack, scale: Scale) -> tuple[Seeded, float]:
    """Seed `scale`, wait for the replica to apply it (the index builds after a seed's load
    replay there only then, for minutes at 10^6 orders), and empty this stack's Redis (the
    previous size's data too); returns the seeding and the replica's catch-up seconds."""
    print(f"seeding {scale}", flush=True)
    seeded = seed_elsewhere(container.settings, scale)
    print(f"  seeded in {seeded.seconds:.1f}s: {seeded.insert_seconds}", flush=True)
    caught_up = stack.wait_replica_caught_up(timeout=3600)
    print(f"  replica caught up in {caught_up:.1f}s", flush=True)
    container.redis.flushdb(asynchronous=True)  # freed off Redis's main thread, no timeout
    wait_lazyfree(container.redis, timeout=600)
    return seeded, caught_up


def run_size(stack: Stack, scale: Scale, args: argparse.Namespace) -> dict[str, Any]:
    """Seed, rebuild once, verify and time the handler against SQL: the latency at this size
    (the rebuild, memory and profile sections are the main size's)."""
    container = bootstrap(bench_settings(stack))
    try:
        seeded, caught_up = seed_into_empty_redis(container, stack, scale)
        client = container.redis
        used_before = int(client.info("memory")["used_memory"])
        report, _ = timed_rebuild(container)
        used_after = int(client.info("memory")["used_memory"])
        print(f"  rebuild: {report.as_dict()}", flush=True)
        gc.collect()
        latency = measure_latency(
            container,
            seeded,
            args.size_samples,
            args.warmup,
            stores=HANDLER_STORES,
            budget_s=args.route_budget,
            redis_passes=args.redis_passes,
        )
    finally:
        set_container(None)
        container.close()
    seed_figures = {
        "seconds": round(seeded.seconds, 1),
        "replica_catch_up_seconds": round(caught_up, 1),
    }
    return size_entry(scale, seed_figures, report.as_dict(), used_after - used_before, latency)


def size_goals(by_size: dict[str, dict[str, Any]], main_orders: int) -> dict[str, Any]:
    """Per route: read-model handler p99 ≤ 2 ms at every size, flat in data size (p99 at
    the largest over p99 at the smallest ≤ GOAL_FLATNESS), SQL/read model ≥ 20× at the main
    size (p50, as the main goals)."""
    sizes = sorted(by_size, key=int)
    smallest, largest = by_size[sizes[0]]["routes"], by_size[sizes[-1]]["routes"]
    main = by_size[str(main_orders)]["routes"]
    goals: dict[str, Any] = {}
    for route in main:
        p99 = {size: by_size[size]["routes"][route]["redis_p99_ms"] for size in sizes}
        flatness = round(largest[route]["redis_p99_ms"] / smallest[route]["redis_p99_ms"], 2)
        goals[route] = {
            "redis_p99_ms": p99,
            "p99_goal_ms": GOAL_HANDLER_P99_MS,
            "p99_met_at_every_size": all(v <= GOAL_HANDLER_P99_MS for v in p99.values()),
            "flatness_p99_largest_over_smallest": flatness,
            "flatness_goal": GOAL_FLATNESS,
            "flat": flatness <= GOAL_FLATNESS,
            "ratio_p50_at_main": main[route]["ratio_p50"],
            "ratio_goal": GOAL_RATIO,
            "ratio_met": main[route]["ratio_p50"] >= GOAL_RATIO,
        }
    return {"sizes": [int(size) for size in sizes], "main": main_orders, "routes": goals}


def run(stack: Stack, scale: Scale, args: argparse.Namespace) -> dict[str, Any]:
    container = bootstrap(bench_settings(stack))
    try:
        seeded, caught_up = seed_into_empty_redis(container, stack, scale)
        client = container.redis
        used_before = int(client.info("memory")["used_memory"])
        runs: list[dict[str, Any]] = []
        scripts: list[dict[str, dict[str, float]]] = []
        memory: dict[str, Any] = {}
        for i in range(args.rebuilds):
            report, delta = timed_rebuild(container)
            runs.append(report.as_dict())
            scripts.append(delta)
            print(f"  rebuild {i + 1}: {report.as_dict()}", flush=True)
            if i == 0:  # one generation only (no previous one being freed)
                used_after = int(client.info("memory")["used_memory"])
                memory = memory_report(
                    client,
                    report.generation,
                    # Per image seeded: the rebuild loads only the deleted ones.
                    {**report.rows, "images": seeded.rows["images"]},
                    used_before,
                    used_after,
                    random.Random(3),
                )
        best = max(r["rows_per_second"] for r in runs)
        breakdown = rebuild_breakdown(container)
        print(f"  breakdown: {breakdown['totals']}", flush=True)
        profile = None
        if args.profile or best < GOAL_ROWS_PER_SECOND:
            profile = profile_rebuild(container)
        gc.collect()
        latency = measure_latency(
            container, seeded, args.samples, args.warmup, redis_passes=args.redis_passes
        )
    finally:
        set_container(None)
        container.close()
    return {
        "scale": asdict(scale),
        "seed": {
            "rows": seeded.rows,
            "seconds": round(seeded.seconds, 1),
            "insert_seconds": seeded.insert_seconds,
            "replica_catch_up_seconds": round(caught_up, 1),
        },
        "rebuild": {
            "runs": runs,
            "rows_per_second_first": runs[0]["rows_per_second"],
            "rows_per_second_best": best,
            "goal_rows_per_second": GOAL_ROWS_PER_SECOND,
            "met": best >= GOAL_ROWS_PER_SECOND,
            "script_seconds_server": [round(script_seconds(d), 3) for d in scripts],
            "redis_commands_first_run": dict(itertools.islice(scripts[0].items(), 12)),
            "breakdown": breakdown,
            "profile": profile,
        },
        "redis_memory": memory,
        "latency": latency,
        "durable": stack.config.durable,
    }


def plot(result: dict[str, Any]) -> None:
    plt = pyplot()
    timings: dict[str, dict[str, Any]] = result["latency"]["routes"]
    names = list(timings)
    colors = {"redis_handler": "C0", "sql_handler": "C3", "redis_read": "C9", "sql_view": "C1"}
    width = 0.2
    fig, ax = plt.subplots(figsize=(12, 5))
    for j, store in enumerate(STORES):
        xs = [i + (j - 1.5) * width for i in range(len(names))]
        p99 = [timings[n][store]["p99_ms"] for n in names]
        p50 = [timings[n][store]["p50_ms"] for n in names]
        ax.bar(xs, p99, width, color=colors[store], alpha=0.35)
        ax.bar(xs, p50, width, color=colors[store], label=f"{store} (p50; pale: p99)")
    floor = result["latency"]["redis_get_floor"]["p50_ms"]
    ax.axhline(floor, color="grey", linestyle=":", label=f"Redis GET round trip p50 {floor} ms")
    no_store = result["latency"]["handler_floors"]["handler_404_no_store"]["p50_ms"]
    ax.axhline(
        no_store, color="C2", linestyle="-.", label=f"handler, no store (404) p50 {no_store} ms"
    )
    ax.axhline(GOAL_HANDLER_P99_MS, color="black", linestyle="--", label="goal: handler p99 2 ms")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n", 2) for n in names], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    orders = result["scale"]["orders"]
    rate = result["rebuild"]["rows_per_second_best"]
    ax.set_title(f"Read model vs SQL, {orders:,} orders (rebuild {rate:,} rows/s)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(OUT / "read_models.png", dpi=110)
    plt.close(fig)


def plot_by_size(result: dict[str, Any]) -> None:
    """Per route, the handler's p50 and p99 from the read model and from SQL against the
    orders seeded (log-log), with the 2 ms goal; then the SQL/read-model ratio, and the
    read model's p99 relative to the smallest size (flatness)."""
    plt = pyplot()
    from matplotlib import ticker

    by_size: dict[str, dict[str, Any]] = result["by_size"]
    sizes = sorted(by_size, key=int)
    xs = [int(size) for size in sizes]
    names = list(by_size[sizes[0]]["routes"])
    cols = 4
    rows = -(-(len(names) + 2) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    panels = list(axes.flat)
    for ax, name in zip(panels, names, strict=False):
        for side, color, label in (("redis", "C0", "read model"), ("sql", "C3", "SQL")):
            for stat, style in (("p50", "-"), ("p99", "--")):
                ys = [by_size[size]["routes"][name][f"{side}_{stat}_ms"] for size in sizes]
                ax.plot(xs, ys, style, color=color, marker="o", label=f"{label} {stat}")
        ax.axhline(GOAL_HANDLER_P99_MS, color="black", linestyle=":", label="goal p99 2 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("orders", fontsize=8)
        ax.set_ylabel("handler ms (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    panels[0].legend(fontsize=6, loc="upper left")
    ratio_ax, flat_ax = panels[len(names)], panels[len(names) + 1]
    for i, name in enumerate(names):
        routes = [by_size[size]["routes"][name] for size in sizes]
        ratio_ax.plot(xs, [r["ratio_p50"] for r in routes], "-o", color=f"C{i}", label=name)
        ratio_ax.plot(xs, [r["ratio_p99"] for r in routes], ":", color=f"C{i}")
        base = routes[0]["redis_p99_ms"]
        flat_ax.plot(xs, [r["redis_p99_ms"] / base for r in routes], "-o", color=f"C{i}")
    ratio_ax.axhline(GOAL_RATIO, color="black", linestyle=":", label=f"goal {GOAL_RATIO:g}x")
    ratio_ax.set_title("SQL / read model (p50; dotted: p99)", fontsize=9)
    ratio_ax.set_yscale("log")
    ratio_ax.legend(fontsize=6, loc="upper left")
    flat_ax.axhline(GOAL_FLATNESS, color="black", linestyle=":", label=f"goal ≤ {GOAL_FLATNESS}x")
    flat_ax.axhline(1.0, color="grey", linewidth=0.5)
    flat_ax.set_title("read model p99 / p99 at the smallest size", fontsize=9)
    flat_ax.legend(fontsize=6, loc="upper left")
    for ax in (ratio_ax, flat_ax):
        ax.set_xscale("log")
        ax.set_xlabel("orders", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in panels[: len(names) + 2]:
        ax.set_xticks(xs, [f"{x:,}" for x in xs])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(which="minor", labelsize=6)
    for ax in panels[len(names) + 2 :]:
        ax.set_visible(False)
    fig.suptitle("Query handler: read model vs SQL on the replica, against data size")
    fig.tight_layout()
    fig.savefig(OUT / "read_models_by_size.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
