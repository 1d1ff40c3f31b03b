"""The SQL views of the query API on real MariaDB: shapes, values, pagination, authorization,
and that they run on the replica; then the same through the query Lambda handler.

Data is seeded with plain INSERTs on the primary (every status and time chosen exactly), in
categories and names made unique per run, so other tests' rows cannot change the answers.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from giftmarket.adapters import tables
from giftmarket.adapters.db import Database
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.domain.ids import new_id
from giftmarket.http.auth import TokenService
from giftmarket.projections.rebuild import rebuild_read_models as rebuild_read_models_of
from giftmarket.queries import account, params, products
from giftmarket.queries import trades as trade_queries
from giftmarket.queries.trades import BUYER, SELLER
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.stack import Stack

SettingsFactory = Callable[..., Settings]
REPLICA_ID = 2
BASE = datetime(2031, 3, 1, 9, 0, 0)  # naive UTC, as stored
VALID_UNTIL = date(2031, 6, 30)  # a voucher valid well past BASE


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def iso(value: datetime) -> str:
    return value.replace(tzinfo=UTC).isoformat()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@dataclass
class Seeder:
    """INSERTs on the primary; `sync()` waits until the replica has them."""

    engine: Engine
    stack: Stack
    products: dict[str, dict[str, Any]] = field(default_factory=dict)

    def insert(self, table: Any, **values: Any) -> str:
        values.setdefault("id", new_id())
        with self.engine.begin() as conn:
            conn.execute(table.insert().values(**values))
        return str(values["id"])

    def insert_many(self, table: Any, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.insert(), rows)

    def sync(self) -> None:
        self.stack.wait_replica_caught_up()

    def user(self, nickname: str = "nick", **balances: int) -> str:
        user_id = self.insert(
            tables.users,
            email=f"{uuid.uuid4().hex}@views.test",
            nickname=nickname,
            password_hash="x",
            created_at=BASE,
            updated_at=BASE,
            **balances,
        )
        # Each balance with its postings, as the ledger keeps it: tests sharing this stack
        # check that every user's balances equal their postings' sums.
        postings = []
        for column, amount in balances.items():
            if not amount:
                continue
            txn = new_id()
            bucket = column.removesuffix("_points")
            for owner, owner_bucket, signed in (
                ("external", "charges", -amount),
                (user_id, bucket, amount),
            ):
                postings.append(
                    {
                        "txn_id": txn,
                        "account_owner": owner,
                        "bucket": owner_bucket,
                        "amount": signed,
                        "reason": "charge",
                        "ref_type": "user",
                        "ref_id": user_id,
                        "created_at": BASE,
                    }
                )
        if postings:
            self.insert_many(tables.ledger_entries, postings)
        return user_id

    def product(
        self,
        name: str,
        *,
        brand: str = "brand",
        category: str = "coffee",
        face_value: int = 5000,
        like_count: int = 0,
        created_at: datetime = BASE,
        product_id: str | None = None,
    ) -> str:
        values = {
            "name": name,
            "brand": brand,
            "category": category,
            "face_value": face_value,
            "like_count": like_count,
            "created_at": created_at,
        }
        pid = self.insert(tables.products, id=product_id or new_id(), **values)
        self.products[pid] = {"product_id": pid, **values}
        return pid

    def image(self, owner: str, status: str = "ATTACHED") -> str:
        image_id = new_id()
        return self.insert(
            tables.images,
            id=image_id,
            owner_id=owner,
            s3_key=f"images/{owner}/{image_id}",
            content_type="image/png",
            status=status,
            created_at=BASE,
        )

    def ask(
        self,
        product: str,
        seller: str,
        price: int,
        status: str = "OPEN",
        created: float = 0,
        *,
        expires_on: date | None = VALID_UNTIL,
    ) -> str:
        return self.insert(
            tables.sell_bids,
            product_id=product,
            seller_id=seller,
            price=price,
            image_id=self.image(seller),
            barcode_last4="1234",
            expires_on=expires_on,
            status=status,
            created_at=at(created),
            updated_at=at(created),
        )

    def bid(
        self, product: str, buyer: str, price: int, status: str = "OPEN", created: float = 0
    ) -> str:
        return self.insert(
            tables.buy_bids,
            product_id=product,
            buyer_id=buyer,
            price=price,
            status=status,
            created_at=at(created),
            updated_at=at(created),
        )

    def order_row(
        self,
        product: str,
        buyer: str,
        seller: str,
        price: int,
        *,
        status: str = "PAID",
        created: float = 0,
        discount: int = 0,
        via: str = "buy_now",
        image_id: str | None = None,
    ) -> dict[str, Any]:
        completed = at(created + 60) if status in ("COMPLETED", "SETTLED") else None
        settled = at(created + 120) if status == "SETTLED" else None
        # Delivered when placed (automatic inspection), unless still being inspected.
        delivered = None if status in ("INSPECTING", "REFUNDED") else at(created)
        return {
            "id": new_id(),
            "product_id": product,
            "buyer_id": buyer,
            "seller_id": seller,
            "image_id": image_id or self.image(seller),
            "price": price,
            "discount": discount,
            "paid": price - discount,
            "status": status,
            "via": via,
            "created_at": at(created),
            "delivered_at": delivered,
            "completed_at": completed,
            "settled_at": settled,
        }

    def order(self, product: str, buyer: str, seller: str, price: int, **kw: Any) -> str:
        row = self.order_row(product, buyer, seller, price, **kw)
        return self.insert(tables.orders, **row)


@pytest.fixture(scope="module")
def seeder(make_settings: SettingsFactory, stack: Stack) -> Iterator[Seeder]:
    db = Database.from_settings(make_settings())
    yield Seeder(db.writer, stack)
    db.dispose()


Query = Callable[[Callable[[Connection], Any]], Any]


@pytest.fixture
def query(database: Database) -> Query:
    """Run a view as the API does, asserting it was answered by the replica."""

    def run(view: Callable[[Connection], Any]) -> Any:
        def on_server(session: Connection) -> tuple[int, Any]:
            server = int(session.execute(text("SELECT @@server_id")).scalar_one())
            return server, view(session)

        server, answer = database.run_query(on_server)
        assert server == REPLICA_ID, "the view was not answered by the replica"
        return answer

    return run


# -- /api/products ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    category: str
    summaries: dict[str, dict[str, Any]]  # what each product's list item must be
    created: dict[str, datetime]


@pytest.fixture(scope="module")
def catalog(seeder: Seeder) -> Catalog:
    """Eight products in their own category, with ties on every sort key."""
    category = unique("cat-")
    seller, buyer = seeder.user(), seeder.user()
    # (likes, created second, open asks, other asks, open bids)
    plan = [
        (5, 10, [3000, 3500], [1000], [2000]),
        (5, 10, [3000], [], []),
        (5, 20, [], [500], [2500, 2600]),
        (2, 20, [4000], [], []),
        (2, 30, [3000], [], [1500]),
        (0, 30, [], [], []),
        (0, 30, [4000], [], []),
        (9, 5, [], [], []),
    ]
    summaries: dict[str, dict[str, Any]] = {}
    created: dict[str, datetime] = {}
    for i, (likes, second, open_asks, closed_asks, open_bids) in enumerate(plan):
        pid = seeder.product(
            f"item {i}",
            brand=f"brand {i}",
            category=category,
            face_value=1000 * (i + 1),
            like_count=likes,
            created_at=at(second),
        )
        for price in open_asks:
            seeder.ask(pid, seller, price)
        for n, price in enumerate(closed_asks):
            seeder.ask(pid, seller, price, status=("CANCELLED", "MATCHED")[n % 2])
        for price in open_bids:
            seeder.bid(pid, buyer, price)
        seeder.bid(pid, buyer, 9_000_000, status="CANCELLED")  # never a quote
        created[pid] = at(second)
        summaries[pid] = {
            "product_id": pid,
            "name": f"item {i}",
            "brand": f"brand {i}",
            "category": category,
            "face_value": 1000 * (i + 1),
            "lowest_ask": min(open_asks) if open_asks else None,
            "highest_bid": max(open_bids) if open_bids else None,
            "like_count": likes,
        }
    seeder.sync()
    return Catalog(category, summaries, created)


def expected_order(catalog: Catalog, sort: str) -> list[str]:
    s = catalog.summaries
    if sort == "popular":
        return sorted(s, key=lambda p: (-s[p]["like_count"], p))
    if sort == "latest":
        return sorted(s, key=lambda p: (catalog.created[p], p), reverse=True)
    return sorted(s, key=lambda p: (s[p]["lowest_ask"] is None, s[p]["lowest_ask"] or 0, p))


@pytest.mark.parametrize("limit", [1, 2, 3, 8, 100])
@pytest.mark.parametrize("sort", ["popular", "latest", "price"])
def test_pages_list_every_product_once_in_sort_order_despite_ties(
    query: Query, catalog: Catalog, sort: params.ProductSort, limit: int
) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = query(
            partial(
                products.product_list_from_sql,
                sort=sort,
                category=catalog.category,
                after=after,
                limit=limit,
            )
        )
        pages += 1
        assert len(page["items"]) <= limit
        seen += [item["product_id"] for item in page["items"]]
        for item in page["items"]:
            assert item == catalog.summaries[item["product_id"]]
        if page["next_cursor"] is None:
            break
        assert len(page["items"]) == limit
        after = params.decode_cursor(page["next_cursor"])
        assert pages < 20, "pagination does not end"

    assert seen == expected_order(catalog, sort)
    assert pages == max(1, -(-len(catalog.summaries) // limit))


def test_price_sort_puts_products_without_asks_last(query: Query, catalog: Catalog) -> None:
    page = query(
        lambda s: products.product_list_from_sql(s, sort="price", category=catalog.category)
    )
    asks = [item["lowest_ask"] for item in page["items"]]
    assert asks == [3000, 3000, 3000, 4000, 4000, None, None, None]
    assert page["next_cursor"] is None


def test_category_filters_and_its_absence_does_not(
    query: Query, catalog: Catalog, seeder: Seeder
) -> None:
    newest = seeder.product(unique("newest "), category=unique("other-"), created_at=at(10**6))
    seeder.sync()
    everything = query(lambda s: products.product_list_from_sql(s, sort="latest", limit=1))
    assert [i["product_id"] for i in everything["items"]] == [newest]
    filtered = query(
        lambda s: products.product_list_from_sql(
            s, sort="latest", category=catalog.category, limit=100
        )
    )
    assert newest not in {i["product_id"] for i in filtered["items"]}


def test_cursor_of_another_sort_is_refused(query: Query, catalog: Catalog) -> None:
    page = query(
        lambda s: products.product_list_from_sql(
            s, sort="popular", category=catalog.category, limit=1
        )
    )
    cursor = params.decode_cursor(page["next_cursor"])
    with pytest.raises(params.InvalidCursor):
        query(lambda s: products.product_list_from_sql(s, sort="latest", after=cursor))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


TAMPERED = [
    "not base64!",
    "====",
    b64(b"not json"),
    b64(b'{"sort": "popular"}'),
    b64(json.dumps(["popular", 1]).encode()),
    b64(json.dumps(["cheapest", 1, "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["popular", "1", "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["popular", True, "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["popular", -1, "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["latest", 10**30, "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["latest", None, "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["price", 1.5, "01J00000000000000000000000"]).encode()),
    b64(json.dumps(["price", 1, "' OR 1=1 --"]).encode()),
    b64(json.dumps(["price", 1, 12345]).encode()),
    b64(b"\xff\xfe"),
]


@pytest.mark.parametrize("cursor", TAMPERED)
def test_tampered_cursor_is_invalid(cursor: str) -> None:
    with pytest.raises(params.InvalidCursor):
        params.decode_cursor(cursor)


def test_cursor_round_trips() -> None:
    for cursor in [
        params.ProductCursor("popular", 0, "01J00000000000000000000000"),
        params.ProductCursor("latest", 1_900_000_000_123_456, "01J00000000000000000000000"),
        params.ProductCursor("price", None, "01J00000000000000000000000"),
        params.ProductCursor("price", 2**63 - 1, "01J00000000000000000000000"),
    ]:
        encoded = params.encode_cursor(cursor)
        assert "=" not in encoded and "+" not in encoded and "/" not in encoded
        assert params.decode_cursor(encoded) == cursor


# -- /api/products/{id} ----------------------------------------------------------------------


def test_product_detail_has_quotes_counts_and_the_newest_ten_trades(
    query: Query, seeder: Seeder
) -> None:
    seller, buyer = seeder.user(), seeder.user()
    pid = seeder.product(unique("detail "), like_count=3, face_value=10_000)
    seeder.ask(pid, seller, 9000)
    seeder.ask(pid, seller, 9000, expires_on=date(2031, 4, 1))
    seeder.ask(pid, seller, 9500, expires_on=None)  # listed before vouchers
    seeder.ask(pid, seller, 8000, status="CANCELLED")
    seeder.ask(pid, seller, 8500, status="EXPIRED")
    seeder.bid(pid, buyer, 7000)
    seeder.bid(pid, buyer, 7500, status="MATCHED")
    rows = [
        seeder.order_row(pid, buyer, seller, 5000 + i * 100, created=i, status="PAID")
        for i in range(12)
    ]
    # Two trades in the same microsecond: the larger id counts as the newer.
    rows[11]["created_at"] = rows[10]["created_at"]
    rows.sort(key=lambda r: r["id"])
    seeder.insert_many(tables.orders, rows)
    seeder.sync()

    detail = query(lambda s: products.product_detail_from_sql(s, pid))

    newest = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)[:10]
    assert detail == {
        **{k: seeder.products[pid][k] for k in ("product_id", "name", "brand", "category")},
        "face_value": 10_000,
        "lowest_ask": 9000,
        "highest_bid": 7000,
        "like_count": 3,
        "order_count": 12,
        "last_trade_price": newest[0]["price"],
        "recent_trades": [{"price": r["price"], "traded_at": iso(r["created_at"])} for r in newest],
        "asks": [
            {"price": 9000, "count": 2, "earliest_expires_on": "2031-04-01"},
            {"price": 9500, "count": 1, "earliest_expires_on": None},
        ],
    }
    assert detail["recent_trades"][0]["traded_at"].endswith("+00:00")


def test_product_without_trades_or_quotes_has_nulls(query: Query, seeder: Seeder) -> None:
    pid = seeder.product(unique("quiet "))
    seeder.sync()
    detail = query(lambda s: products.product_detail_from_sql(s, pid))
    assert detail is not None
    assert (detail["lowest_ask"], detail["highest_bid"]) == (None, None)
    assert (detail["order_count"], detail["last_trade_price"], detail["recent_trades"]) == (
        0,
        None,
        [],
    )


@pytest.mark.parametrize("product_id", ["01J00000000000000000000000", "nope", "", "x" * 300])
def test_missing_or_malformed_product_is_none(query: Query, product_id: str) -> None:
    assert query(lambda s: products.product_detail_from_sql(s, product_id)) is None


# -- /api/rankings ---------------------------------------------------------------------------


def oracle_ranking(session: Connection, by: str) -> list[tuple[str, int]]:
    """Every product's score, computed the slow obvious way, ranked by hand."""
    p, o = tables.products, tables.orders
    if by == "likes":
        scores = {r.id: int(r.like_count) for r in session.execute(select(p.c.id, p.c.like_count))}
    else:
        scores = {
            pid: int(n)
            for pid, n in session.execute(
                select(o.c.product_id, func.count()).group_by(o.c.product_id)
            )
        }
    ranked = sorted(((pid, n) for pid, n in scores.items() if n > 0), key=lambda x: (-x[1], x[0]))
    return ranked


def test_rankings_by_likes_rank_by_like_count_then_id(query: Query, seeder: Seeder) -> None:
    top = 2_000_000_000  # far above any like count other tests make
    ids = [seeder.product(unique("liked "), like_count=n) for n in (top, top, top - 1)]
    seeder.sync()

    answer = query(lambda s: products.rankings_from_sql(s, by="likes", limit=100))
    oracle = query(lambda s: oracle_ranking(s, "likes"))[:100]

    assert [(i["product_id"], i["score"]) for i in answer["items"]] == oracle
    assert [i["rank"] for i in answer["items"]] == list(range(1, len(oracle) + 1))
    first_three = answer["items"][:3]
    assert [i["product_id"] for i in first_three] == sorted(ids[:2]) + [ids[2]]
    assert [i["score"] for i in first_three] == [top, top, top - 1]
    assert first_three[0]["name"] == seeder.products[first_three[0]["product_id"]]["name"]
    assert all(i["score"] > 0 for i in answer["items"])


def test_rankings_by_orders_count_every_order_of_a_product(query: Query, seeder: Seeder) -> None:
    buyer, seller = seeder.user(), seeder.user()
    counts = {seeder.product(unique("sold ")): n for n in (70, 70, 69)}
    assert len(counts) == 3
    image = seeder.image(seller)
    rows = [
        seeder.order_row(pid, buyer, seller, 1000, created=i, image_id=image)
        for pid, n in counts.items()
        for i in range(n)
    ]
    seeder.insert_many(tables.orders, rows)
    seeder.sync()

    answer = query(lambda s: products.rankings_from_sql(s, by="orders", limit=100))
    oracle = query(lambda s: oracle_ranking(s, "orders"))[:100]

    assert [(i["product_id"], i["score"]) for i in answer["items"]] == oracle
    mine = [(i["product_id"], i["score"]) for i in answer["items"] if i["product_id"] in counts]
    assert mine == sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    short = query(lambda s: products.rankings_from_sql(s, by="orders", limit=2))
    assert [i["rank"] for i in short["items"]] == [1, 2]


# -- /api/search -----------------------------------------------------------------------------


def test_search_matches_name_or_brand_in_any_case(query: Query, seeder: Seeder) -> None:
    token = unique("tok")
    by_name = seeder.product(f"Iced {token.upper()} Latte", brand="Mega", like_count=1)
    by_brand = seeder.product("Cake", brand=f"{token}-bakery", like_count=2)
    seeder.product("Unrelated", brand="Other")
    seeder.sync()

    answer = query(lambda s: products.search_from_sql(s, token.capitalize(), limit=20))

    assert [i["product_id"] for i in answer["items"]] == [by_brand, by_name]
    assert answer["items"][1] == {
        "product_id": by_name,
        "name": f"Iced {token.upper()} Latte",
        "brand": "Mega",
        "category": "coffee",
        "face_value": 5000,
        "lowest_ask": None,
        "highest_bid": None,
        "like_count": 1,
    }


@pytest.mark.parametrize("wildcard", ["%", "_", "/", "\\"])
def test_search_wildcards_match_only_themselves(
    query: Query, seeder: Seeder, wildcard: str
) -> None:
    token = unique("w")
    literal = seeder.product(f"{token}{wildcard}x")
    decoy = seeder.product(f"{token}yx")
    seeder.sync()

    exact = query(lambda s: products.search_from_sql(s, f"{token}{wildcard}", limit=100))
    assert [i["product_id"] for i in exact["items"]] == [literal]
    alone = query(lambda s: products.search_from_sql(s, wildcard, limit=100))
    found = {i["product_id"] for i in alone["items"]}
    assert literal in found and decoy not in found
    assert all(wildcard in i["name"] + i["brand"] for i in alone["items"])


def test_search_respects_the_limit(query: Query, seeder: Seeder) -> None:
    token = unique("many")
    for n in range(5):
        seeder.product(f"{token} {n}")
    seeder.sync()
    assert len(query(lambda s: products.search_from_sql(s, token, limit=3))["items"]) == 3


# -- the caller's own data -------------------------------------------------------------------


def test_me_has_profile_and_balances(query: Query, seeder: Seeder) -> None:
    user = seeder.user("buyer", available_points=700, escrowed_points=200, pending_points=90)
    seeder.sync()
    answer = query(lambda s: account.me_from_sql(s, user))
    assert answer is not None
    assert answer["user_id"] == user and answer["nickname"] == "buyer"
    assert answer["email"].endswith("@views.test")
    assert (answer["available_points"], answer["escrowed_points"], answer["pending_points"]) == (
        700,
        200,
        90,
    )
    assert query(lambda s: account.me_from_sql(s, "01J00000000000000000000000")) is None


@dataclass(frozen=True)
class Trades:
    buyer: str
    seller: str
    product: str
    bids: dict[str, str]  # status → buy bid id
    asks: dict[str, str]  # status → ask id
    orders: dict[str, str]  # status → order id


@pytest.fixture(scope="module")
def trades(seeder: Seeder) -> Trades:
    buyer, seller, stranger = seeder.user(), seeder.user(), seeder.user()
    pid = seeder.product(unique("traded "))
    bids = {
        s: seeder.bid(pid, buyer, 1000, status=s, created=n)
        for n, s in enumerate(["OPEN", "CANCELLED", "MATCHED"])
    }
    bids["OPEN2"] = seeder.bid(pid, buyer, 1100, created=10)
    asks = {
        s: seeder.ask(pid, seller, 5000, status=s, created=n)
        for n, s in enumerate(["OPEN", "CANCELLED", "MATCHED"])
    }
    asks["OPEN2"] = seeder.ask(pid, seller, 5100, created=10)
    orders = {
        s: seeder.order(pid, buyer, seller, 3000, status=s, created=100 + n, discount=500)
        for n, s in enumerate(["PAID", "COMPLETED", "SETTLED"])
    }
    # Someone else's activity on the same product never shows up in these histories.
    seeder.bid(pid, stranger, 1000)
    seeder.ask(pid, stranger, 5000)
    seeder.order(pid, stranger, stranger, 3000, status="PAID")
    seeder.sync()
    return Trades(buyer, seller, pid, bids, asks, orders)


BUY_STATES = {
    "bidding": ("buy_bid_id", ["OPEN2", "OPEN"]),
    "in_progress": ("order_id", ["PAID"]),
    "done": ("order_id", ["SETTLED", "COMPLETED"]),
}
SELL_STATES = {
    "bidding": ("sell_bid_id", ["OPEN2", "OPEN"]),
    "in_progress": ("order_id", ["COMPLETED", "PAID"]),
    "done": ("order_id", ["SETTLED"]),
}


@pytest.mark.parametrize("state", list(BUY_STATES))
def test_buy_history_shows_the_states_statuses_newest_first(
    query: Query, trades: Trades, state: params.HistoryState
) -> None:
    id_field, keys = BUY_STATES[state]
    source = trades.bids if id_field == "buy_bid_id" else trades.orders
    answer = query(lambda s: trade_queries.history_from_sql(s, trades.buyer, state, side=BUYER))
    assert [i[id_field] for i in answer["items"]] == [source[k] for k in keys]
    for item in answer["items"]:
        assert item["product_id"] == trades.product
        assert (
            item["product_name"]
            == query(lambda s: products.product_detail_from_sql(s, trades.product))["name"]
        )
        assert item["created_at"].endswith("+00:00")
    if id_field == "order_id":
        assert [i["status"] for i in answer["items"]] == list(keys)
        assert all(
            (i["price"], i["discount"], i["paid"]) == (3000, 500, 2500) for i in answer["items"]
        )
    else:
        assert {i["status"] for i in answer["items"]} == {"OPEN"}


@pytest.mark.parametrize("state", list(SELL_STATES))
def test_sell_history_shows_the_states_statuses_newest_first(
    query: Query, trades: Trades, state: params.HistoryState
) -> None:
    id_field, keys = SELL_STATES[state]
    source = trades.asks if id_field == "sell_bid_id" else trades.orders
    answer = query(lambda s: trade_queries.history_from_sql(s, trades.seller, state, side=SELLER))
    assert [i[id_field] for i in answer["items"]] == [source[k] for k in keys]
    if id_field == "order_id":
        for item in answer["items"]:
            assert item["price"] == 3000 and "paid" not in item
            completed = item["completed_at"] is not None
            assert completed == (item["status"] != "PAID")
            assert (item["settled_at"] is not None) == (item["status"] == "SETTLED")


def test_history_is_capped_by_the_limit(query: Query, trades: Trades) -> None:
    answer = query(
        lambda s: trade_queries.history_from_sql(s, trades.buyer, "bidding", side=BUYER, limit=1)
    )
    assert [i["buy_bid_id"] for i in answer["items"]] == [trades.bids["OPEN2"]]


def test_a_user_without_activity_has_empty_histories(query: Query, seeder: Seeder) -> None:
    nobody = seeder.user()
    seeder.sync()
    states: list[params.HistoryState] = ["bidding", "in_progress", "done"]
    for state in states:
        assert query(
            partial(trade_queries.history_from_sql, user_id=nobody, state=state, side=BUYER)
        ) == {"items": []}
        assert query(
            partial(trade_queries.history_from_sql, user_id=nobody, state=state, side=SELLER)
        ) == {"items": []}


def test_order_detail_shows_each_party_its_own_side(query: Query, trades: Trades) -> None:
    order_id = trades.orders["COMPLETED"]
    as_buyer = query(lambda s: trade_queries.order_detail_from_sql(s, order_id, trades.buyer))
    as_seller = query(lambda s: trade_queries.order_detail_from_sql(s, order_id, trades.seller))

    common = {
        "order_id": order_id,
        "product_id": trades.product,
        "price": 3000,
        "discount": 500,
        "paid": 2500,
        "status": "COMPLETED",
        "via": "buy_now",
        "created_at": iso(at(101)),
        "completed_at": iso(at(161)),
        "settled_at": None,
    }
    assert as_buyer is not None and as_seller is not None
    assert {k: as_buyer[k] for k in common} == common
    assert {k: as_seller[k] for k in common} == common
    assert as_buyer["role"] == "buyer" and as_buyer["buyer_id"] == trades.buyer
    assert "seller_id" not in as_buyer
    assert as_seller["role"] == "seller" and as_seller["seller_id"] == trades.seller
    assert "buyer_id" not in as_seller


def test_order_and_gifticon_are_none_for_anyone_else(
    query: Query, trades: Trades, seeder: Seeder
) -> None:
    stranger = seeder.user()
    seeder.sync()
    order_id = trades.orders["PAID"]
    assert query(lambda s: trade_queries.order_detail_from_sql(s, order_id, stranger)) is None
    assert query(lambda s: trade_queries.order_gifticon_key_from_sql(s, order_id, stranger)) is None
    assert query(lambda s: trade_queries.order_detail_from_sql(s, "bad id", trades.buyer)) is None


def test_gifticon_key_is_the_orders_image_for_both_parties(query: Query, trades: Trades) -> None:
    order_id = trades.orders["PAID"]
    key = query(lambda s: trade_queries.order_gifticon_key_from_sql(s, order_id, trades.buyer))
    assert key == query(
        lambda s: trade_queries.order_gifticon_key_from_sql(s, order_id, trades.seller)
    )
    image_key = query(
        lambda s: s.execute(
            select(tables.images.c.s3_key)
            .join(tables.orders, tables.orders.c.image_id == tables.images.c.id)
            .where(tables.orders.c.id == order_id)
        ).scalar_one()
    )
    assert key == image_key and key.startswith(f"images/{trades.seller}/")


def test_coupons_show_expired_ones_as_expired(query: Query, seeder: Seeder) -> None:
    user = seeder.user()
    now = datetime.now(UTC).replace(tzinfo=None)
    plan = [
        ("future", "AVAILABLE", now + timedelta(days=3), "AVAILABLE"),
        ("past", "AVAILABLE", now - timedelta(seconds=1), "EXPIRED"),
        ("used", "USED", now + timedelta(days=3), "USED"),
        ("marked", "EXPIRED", now - timedelta(days=3), "EXPIRED"),
    ]
    ids = []
    for n, (name, status, expires, _) in enumerate(plan):
        ids.append(
            seeder.insert(
                tables.coupons,
                user_id=user,
                name=name,
                discount_amount=1000 + n,
                kind="admin",
                status=status,
                expires_at=expires,
                created_at=at(n),
            )
        )
    seeder.insert(
        tables.coupons,
        user_id=seeder.user(),
        name="someone else's",
        discount_amount=5,
        kind="admin",
        status="AVAILABLE",
        expires_at=now + timedelta(days=1),
        created_at=at(9),
    )
    seeder.sync()

    answer = query(lambda s: account.my_coupons_from_sql(s, user))

    assert answer["items"] == [
        {
            "coupon_id": ids[n],
            "name": name,
            "discount_amount": 1000 + n,
            "status": shown,
            "expires_at": iso(expires),
        }
        for n, (name, _, expires, shown) in reversed(list(enumerate(plan)))
    ]


def test_coupon_status_at_the_expiry_instant_is_expired() -> None:
    expires = datetime(2030, 1, 1)
    assert account.coupon_status("AVAILABLE", expires, expires - timedelta(microseconds=1)) == (
        "AVAILABLE"
    )
    assert account.coupon_status("AVAILABLE", expires, expires) == "EXPIRED"
    assert account.coupon_status("USED", expires, expires) == "USED"


def test_settlements_newest_business_date_first(query: Query, seeder: Seeder) -> None:
    seller = seeder.user()
    for day, gross in (
        (date(2031, 1, 2), 10_000),
        (date(2031, 1, 5), 3_001),
        (date(2031, 1, 3), 7),
    ):
        fee = gross * 500 // 10_000
        seeder.insert(
            tables.settlements,
            seller_id=seller,
            business_date=day,
            order_count=2,
            gross=gross,
            fee=fee,
            net=gross - fee,
            created_at=BASE,
        )
    seeder.sync()

    answer = query(lambda s: account.my_settlements_from_sql(s, seller))

    assert answer["items"] == [
        {"business_date": "2031-01-05", "order_count": 2, "gross": 3001, "fee": 150, "net": 2851},
        {"business_date": "2031-01-03", "order_count": 2, "gross": 7, "fee": 0, "net": 7},
        {"business_date": "2031-01-02", "order_count": 2, "gross": 10000, "fee": 500, "net": 9500},
    ]


# -- the routes, through the query Lambda handler --------------------------------------------


@dataclass
class Api:
    invoker: LocalInvoker
    tokens: TokenService

    def get(self, target: str, user: str | None = None, **headers: str) -> Reply:
        if user is not None:
            headers["authorization"] = f"Bearer {self.tokens.issue(user)}"
        return self.invoker.http("GET", target, headers=headers)


@pytest.fixture(scope="module")
def api(make_settings: SettingsFactory) -> Iterator[Api]:
    container: Container = bootstrap(make_settings(replica_check_interval_seconds=0))
    set_container(container)
    try:
        tokens = TokenService(
            container.jwt_secret, timedelta(seconds=container.settings.jwt_ttl_seconds)
        )
        yield Api(LocalInvoker(), tokens)
    finally:
        set_container(None)
        container.close()


def rebuild_read_models(make_settings: SettingsFactory) -> Container:
    """The catalog was seeded behind the system's back (no events): a rebuild brings it
    into the read models. The caller closes the container."""
    container = bootstrap(make_settings())
    rebuild_read_models_of(container.settings, container.database)
    return container


def pages_from_redis(container: Container, category: str, sort: params.ProductSort) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = products.product_list_from_read_model(
            container.read_models, sort=sort, category=category, after=after, limit=3
        )
        assert page is not None
        seen += [item["product_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return seen
        after = params.decode_cursor(page["next_cursor"])


def test_product_pages_through_the_api_end_with_a_null_cursor(
    api: Api, catalog: Catalog, make_settings: SettingsFactory
) -> None:
    rebuild_read_models(make_settings).close()
    seen: list[str] = []
    target = f"/api/products?category={catalog.category}&sort=latest&limit=3"
    reply = api.get(target)
    while True:
        assert reply.status == 200, reply
        seen += [i["product_id"] for i in reply.body["items"]]
        if reply.body["next_cursor"] is None:
            break
        reply = api.get(f"{target}&cursor={reply.body['next_cursor']}")
    assert seen == expected_order(catalog, "latest")
    assert reply.body["items"][-1] == catalog.summaries[seen[-1]]


def test_product_pages_from_the_read_models_equal_the_sql_pages(
    api: Api, catalog: Catalog, make_settings: SettingsFactory
) -> None:
    container = rebuild_read_models(make_settings)
    try:
        for sort in ("popular", "latest", "price"):
            assert pages_from_redis(container, catalog.category, sort) == expected_order(
                catalog, sort
            )
    finally:
        container.close()


@pytest.mark.parametrize(
    "query_string",
    [
        "cursor=garbage",
        "cursor=" + TAMPERED[9],
        "sort=cheapest",
        "limit=0",
        "limit=101",
        "limit=ten",
        "category=" + "x" * 51,
    ],
)
def test_bad_list_parameters_are_422(api: Api, query_string: str) -> None:
    reply = api.get(f"/api/products?{query_string}")
    assert reply.status == 422, reply
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.body["code"] == "validation_error"


def test_cursor_of_another_sort_is_422_through_the_api(api: Api, catalog: Catalog) -> None:
    first = api.get(f"/api/products?category={catalog.category}&sort=popular&limit=1")
    cursor = first.body["next_cursor"]
    reply = api.get(f"/api/products?category={catalog.category}&sort=price&cursor={cursor}")
    assert reply.status == 422, reply


def test_product_detail_route_and_404s(api: Api, catalog: Catalog) -> None:
    pid = next(iter(catalog.summaries))
    reply = api.get(f"/api/products/{pid}")
    assert reply.status == 200
    body = dict(reply.body)
    ladder = body.pop("asks")
    assert body == {
        **catalog.summaries[pid],
        "order_count": 0,
        "last_trade_price": None,
        "recent_trades": [],
    }
    prices = [step["price"] for step in ladder]
    assert prices == sorted(set(prices)) and all(step["count"] >= 1 for step in ladder)
    assert (prices or [None])[0] == catalog.summaries[pid]["lowest_ask"]
    assert all(step["earliest_expires_on"] == VALID_UNTIL.isoformat() for step in ladder)
    for missing in ("01J00000000000000000000000", "not-an-id", "%00"):
        reply = api.get(f"/api/products/{missing}")
        assert reply.status == 404, reply
        assert reply.body["code"] == "not_found"


def test_rankings_and_search_routes_validate_and_answer(api: Api, seeder: Seeder) -> None:
    assert api.get("/api/rankings?by=likes&limit=5").status == 200
    assert len(api.get("/api/rankings?by=orders&limit=2").body["items"]) <= 2
    assert api.get("/api/rankings?by=views").status == 422
    token = unique("route")
    pid = seeder.product(f"{token} 50%")
    seeder.product(f"{token} 500")
    seeder.sync()
    found = api.get(f"/api/search?q={token}%2050%25")  # "<token> 50%"
    assert found.status == 200
    assert [i["product_id"] for i in found.body["items"]] == [pid]
    for bad in ("q=", "q=%20", "q=" + "a" * 101, "", "q=a&limit=0"):
        assert api.get(f"/api/search?{bad}").status == 422, bad


def test_search_takes_an_optional_token(api: Api, seeder: Seeder) -> None:
    user = seeder.user()
    seeder.sync()
    assert api.get("/api/search?q=x").status == 200
    assert api.get("/api/search?q=x", user=user).status == 200
    refused = api.get("/api/search?q=x", authorization="Bearer not-a-token")
    assert refused.status == 401
    assert refused.body["code"] == "unauthorized"


@pytest.mark.parametrize(
    "target",
    [
        "/api/me",
        "/api/me/coupons",
        "/api/me/settlements",
        "/api/buy/history/bidding",
        "/api/sell/history/done",
        "/api/orders/01J00000000000000000000000",
        "/api/orders/01J00000000000000000000000/gifticon",
    ],
)
def test_personal_routes_need_a_token(api: Api, target: str) -> None:
    reply = api.get(target)
    assert reply.status == 401, reply
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_me_route(api: Api, seeder: Seeder) -> None:
    user = seeder.user("route me", available_points=5)
    seeder.sync()
    reply = api.get("/api/me", user=user)
    assert reply.status == 200
    assert reply.body["user_id"] == user and reply.body["available_points"] == 5
    assert api.get("/api/me", user="01J00000000000000000000000").status == 404


def test_history_routes_refuse_unknown_states_and_limits(api: Api, trades: Trades) -> None:
    ok = api.get("/api/buy/history/in_progress", user=trades.buyer)
    assert ok.status == 200
    assert [i["order_id"] for i in ok.body["items"]] == [trades.orders["PAID"]]
    assert ok.body["items"][0]["paid"] == 2500
    sales = api.get("/api/sell/history/bidding?limit=1", user=trades.seller)
    assert [i["sell_bid_id"] for i in sales.body["items"]] == [trades.asks["OPEN2"]]
    for target in (
        "/api/buy/history/open",
        "/api/sell/history/DONE",
        "/api/buy/history/done?limit=101",
    ):
        assert api.get(target, user=trades.buyer).status == 422, target


def test_orders_and_gifticons_are_404_for_anyone_but_the_parties(
    api: Api, trades: Trades, seeder: Seeder
) -> None:
    stranger = seeder.user()
    seeder.sync()
    order_id = trades.orders["SETTLED"]

    as_seller = api.get(f"/api/orders/{order_id}", user=trades.seller)
    assert as_seller.status == 200
    assert as_seller.body["role"] == "seller" and "buyer_id" not in as_seller.body
    assert as_seller.body["settled_at"] is not None

    link = api.get(f"/api/orders/{order_id}/gifticon", user=trades.buyer)
    assert link.status == 200
    assert f"images/{trades.seller}/" in link.body["download_url"]
    assert "Signature" in link.body["download_url"] or "X-Amz-" in link.body["download_url"]

    for target in (f"/api/orders/{order_id}", f"/api/orders/{order_id}/gifticon"):
        hidden = api.get(target, user=stranger)
        missing = api.get(target.replace(order_id, "01J00000000000000000000000"), user=stranger)
        assert hidden.status == missing.status == 404
        assert hidden.body == missing.body  # existence is not revealed
    assert api.get("/api/orders/not-an-id", user=trades.buyer).status == 404


def test_coupon_and_settlement_routes(api: Api, seeder: Seeder) -> None:
    user = seeder.user()
    seeder.insert(
        tables.coupons,
        user_id=user,
        name="gone",
        discount_amount=100,
        kind="admin",
        status="AVAILABLE",
        expires_at=datetime(2001, 1, 1),
        created_at=datetime(2000, 1, 1),
    )
    seeder.sync()
    coupons = api.get("/api/me/coupons", user=user)
    assert coupons.status == 200
    assert [(c["name"], c["status"]) for c in coupons.body["items"]] == [("gone", "EXPIRED")]
    assert api.get("/api/me/settlements", user=user).body == {"items": []}
