"""The market a load run plays, as plain HTTP calls: who does what, how often, with which
prices, and which answers are the market's own (409 `no_matching_bid` for the buyer who came
second) rather than failures.

No locust import here and no giftmarket import either: this is a client of the HTTP API, run
by Locust (locustfile.py, in its own virtualenv) and, for the setup and the checks, by plain
urllib (`UrllibSend`, used by run.py in the project's virtualenv). Every request goes through
a `Send`, so the unit tests drive the sessions against a fake market.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import parse_qsl, quote

KST = timezone(timedelta(hours=9))
# The smallest body S3 and the API take as image/png: the attach step checks type and size.
PNG = b"\x89PNG\r\n\x1a\n" + b"load-test voucher" * 64
LOAD_EMAIL_DOMAIN = "load.giftmarket.test"
TOP_UP = 300_000  # points a buyer charges at a time
LOW_BALANCE = 60_000  # below this (available), a buyer charges again
COUPON_SHARE = 0.3  # buy-nows that use a coupon when the buyer has one
DISPUTE_SHARE = 0.03  # delivered orders the buyer disputes instead of confirming
MAX_OPEN_BIDS = 3  # a buyer's open buy bids; more are cancelled first
UPLOAD = "presigned S3 upload"


# -- one request and its answer ---------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # an API path, or an absolute URL (the presigned upload)
    json: Any = None
    token: str | None = None
    consistency: str | None = None  # X-Consistency-Token of the command read after
    data: bytes | None = None
    content_type: str | None = None
    # The 409 codes that are the market's answers here (someone else was faster): counted
    # apart, not as failures.
    conflicts: frozenset[str] = frozenset()
    # What a 2xx body must satisfy, else the request counts as failed: None when it does.
    check: Callable[[Any], str | None] | None = None
    idempotency_key: str | None = None

    @property
    def name(self) -> str:
        return route_name(self.path)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.consistency:
            headers["X-Consistency-Token"] = self.consistency
        if self.content_type:
            headers["Content-Type"] = self.content_type
        if self.idempotency_key:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no answer (connection refused, timeout)
    body: Any
    headers: Mapping[str, str]  # lower-case names

    @property
    def code(self) -> str | None:
        """The problem details' `code`, if the body is one."""
        code = self.body.get("code") if isinstance(self.body, dict) else None
        return code if isinstance(code, str) else None

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


class Send(Protocol):
    def __call__(self, call: Call) -> Reply: ...


Kind = Literal["ok", "conflict", "failure"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    detail: str | None = None  # the conflict's code, or why it failed


def verdict(call: Call, reply: Reply) -> Verdict:
    """How a load report counts an answer."""
    if 200 <= reply.status < 300:
        problem = call.check(reply.body) if call.check is not None else None
        return Verdict("failure", problem) if problem else Verdict("ok")
    if reply.status == 409 and reply.code in call.conflicts:
        return Verdict("conflict", reply.code)
    if reply.status == 0:
        return Verdict("failure", f"no answer: {reply.field('error') or 'connection failed'}")
    return Verdict("failure", f"HTTP {reply.status} {reply.code or ''}".strip())


_ABSOLUTE = re.compile(r"^https?://", re.IGNORECASE)
# ULIDs (Crockford base32, 26 characters) as a whole path segment.
_ID = re.compile(r"/[0-9A-HJKMNP-TV-Z]{26}(?=/|$)", re.IGNORECASE)
# Query parameters whose value names a different route (another sort, another ranking).
_SHOWN_VALUES = frozenset({"sort", "by"})


def route_name(path: str) -> str:
    """The name a request is counted under: ids and free values left out, so a report has
    one line per route, e.g. `/api/products/{id}` or `/api/products?category&sort=price`."""
    if _ABSOLUTE.match(path):
        return UPLOAD
    base, _, query = path.partition("?")
    base = _ID.sub("/{id}", base)
    if not query:
        return base
    shown = sorted(
        f"{key}={value}" if key in _SHOWN_VALUES else key
        for key, value in parse_qsl(query, keep_blank_values=True)
        if key != "limit"
    )
    return f"{base}?{'&'.join(shown)}" if shown else base


def retry_after(reply: Reply, default: float = 5.0, cap: float = 30.0) -> float:
    """The pause a refused client takes: the answer's Retry-After, within [0, cap]."""
    try:
        seconds = float(reply.headers.get("retry-after", default))
    except ValueError:
        seconds = default
    return min(max(seconds, 0.0), cap)


def balance_problem(me: Any) -> str | None:
    """/api/me's balances are never negative (nor missing)."""
    if not isinstance(me, dict):
        return "no JSON object"
    for bucket in ("available_points", "escrowed_points", "pending_points"):
        value = me.get(bucket)
        if not isinstance(value, int) or value < 0:
            return f"{bucket} is {value!r}"
    return None


def order_shown_to_buyer(order_id: str, buyer_id: str | None) -> Callable[[Any], str | None]:
    """The check of GET /api/orders/{id} read by the order's buyer."""

    def check(body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("order_id") != order_id:
            return "another order or none"
        if body.get("role") != "buyer" or (buyer_id and body.get("buyer_id") != buyer_id):
            return "not shown as the caller's purchase"
        return None

    return check


# -- the market's data ------------------------------------------------------------------------

# Gifticons people trade in Korea: (brand, item, category, face value in points).
CATALOG: tuple[tuple[str, str, str, int], ...] = (
    ("Starbucks", "Caffe Americano Tall", "cafe", 4_500),
    ("Starbucks", "Cake and Latte Set", "cafe", 12_500),
    ("Twosome Place", "Strawberry Choux Cake", "cafe", 33_000),
    ("Mega Coffee", "Iced Americano", "cafe", 2_000),
    ("Baskin Robbins", "Pint", "dessert", 9_800),
    ("Baskin Robbins", "Family Size", "dessert", 26_000),
    ("Dunkin", "Donut Voucher 5000", "dessert", 5_000),
    ("Paris Baguette", "Gift Card 10000", "bakery", 10_000),
    ("Tous les Jours", "Gift Card 20000", "bakery", 20_000),
    ("CU", "Mobile Voucher 5000", "convenience", 5_000),
    ("GS25", "Mobile Voucher 10000", "convenience", 10_000),
    ("Emart24", "Mobile Voucher 3000", "convenience", 3_000),
    ("BBQ", "Golden Olive Chicken and Cola", "dining", 23_000),
    ("Kyochon", "Honey Combo", "dining", 21_000),
    ("Outback", "Dining Voucher 50000", "dining", 50_000),
    ("Olive Young", "Gift Card 10000", "beauty", 10_000),
    ("Innisfree", "Gift Card 30000", "beauty", 30_000),
    ("CGV", "Movie Ticket 2D", "culture", 14_000),
    ("Megabox", "Movie Ticket and Combo", "culture", 22_000),
    ("Kyobo", "Book Voucher 10000", "culture", 10_000),
)
SEARCH_TERMS = (
    "starbucks",
    "americano",
    "cake",
    "voucher",
    "gift card",
    "chicken",
    "movie",
    "pint",
    "cu",
    "olive",
    "latte",
    "no such gifticon",
)


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    brand: str
    category: str
    face_value: int


def catalog(run_id: str, count: int) -> list[dict[str, Any]]:
    """The products a run creates (their POST /api/products bodies): CATALOG's items in turn,
    named after the run, so runs do not share an order book."""
    specs = []
    for i in range(count):
        brand, item, category, face_value = CATALOG[i % len(CATALOG)]
        edition = f" {i // len(CATALOG) + 1}" if i >= len(CATALOG) else ""
        specs.append(
            {
                "name": f"{brand} {item}{edition} (load {run_id})",
                "brand": brand,
                "category": category,
                "face_value": face_value,
            }
        )
    return specs


def kst_today(now: datetime) -> date:
    return now.astimezone(KST).date()


def voucher_facts(rng: random.Random, now: datetime) -> dict[str, str]:
    """A listing's voucher: a random 16-digit barcode and a last valid day 20 to 120 days
    after today in Korea (well past the listing minimum and buy-now's margin)."""
    barcode = "".join(rng.choice("0123456789") for _ in range(16))
    expires_on = kst_today(now) + timedelta(days=rng.randint(20, 120))
    return {"barcode": barcode, "expires_on": expires_on.isoformat()}


def _round(points: float) -> int:
    return max(100, int(points) // 100 * 100)


def ask_price(rng: random.Random, face_value: int, highest_bid: int | None) -> int:
    """A seller's ask: 80 to 97 % of the face value, and above the highest bid (an ask at or
    below it would cross the book: that seller sells now instead)."""
    price = _round(face_value * rng.uniform(0.80, 0.97))
    if highest_bid is not None and price <= highest_bid:
        price = highest_bid + 100 * rng.randint(1, 3)
    return price


def bid_price(
    rng: random.Random, face_value: int, lowest_ask: int | None, highest_bid: int | None
) -> int | None:
    """A buyer's bid below the lowest ask (one at or above it would cross the book), a little
    above the highest bid when there is room; None when the book leaves no room."""
    if lowest_ask is None:
        price = _round(face_value * rng.uniform(0.60, 0.80))
    else:
        price = lowest_ask - 100 * rng.randint(1, 5)
    if highest_bid is not None and price <= highest_bid:
        price = highest_bid + 100
    if price < 100 or (lowest_ask is not None and price >= lowest_ask):
        return None
    return price


def popularity_weights(count: int) -> list[float]:
    """Zipf-like: the k-th product is looked at and traded about 1/k as often as the first."""
    return [1 / (rank + 1) for rank in range(count)]


def think_time(
    setting: str | None, default: tuple[float, float] = (0.5, 2.5)
) -> tuple[float, float]:
    """`GM_LOAD_THINK` as "MIN,MAX" seconds between a user's actions (default 0.5 to 2.5)."""
    if not setting:
        return default
    low, sep, high = setting.partition(",")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError as exc:
        raise ValueError(f"GM_LOAD_THINK must be MIN,MAX seconds, got {setting!r}") from exc
    if not 0 <= pair[0] <= pair[1]:
        raise ValueError(f"GM_LOAD_THINK must be 0 <= MIN <= MAX, got {setting!r}")
    return pair


# -- what the run writes down for the checks --------------------------------------------------


class Journal:
    """JSON lines the checks read after the run: each signed-up user, each 2xx buy-now, and
    at the end the conflicts counted. It holds bearer tokens: a temporary file, never a
    report."""

    def __init__(self, path: Path | None) -> None:
        self._file = path.open("a", encoding="utf-8") if path is not None else None

    def write(self, entry: Mapping[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass
class Admin:
    email: str
    password: str


@dataclass
class Market:
    """What every simulated user of one load process shares."""

    products: list[Product] = field(default_factory=list)
    buyers: list[str] = field(default_factory=list)  # user ids, for the operator's coupons
    conflicts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    journal: Journal = field(default_factory=lambda: Journal(None))
    admin: Admin | None = None
    _weights: list[float] = field(default_factory=list)

    def set_products(self, products: Iterable[Product]) -> None:
        self.products = list(products)
        self._weights = popularity_weights(len(self.products))

    def pick(self, rng: random.Random) -> Product | None:
        if not self.products:
            return None
        return rng.choices(self.products, weights=self._weights)[0]

    def count(self, call: Call, outcome: Verdict) -> None:
        if outcome.kind == "conflict" and outcome.detail:
            self.conflicts[(call.method, call.name, outcome.detail)] += 1


# -- the simulated users ----------------------------------------------------------------------


class Session:
    """One simulated user: the calls it makes and what it remembers between them."""

    MIX: ClassVar[dict[str, int]] = {}  # task (a method name) -> weight
    role: ClassVar[str] = "visitor"

    def __init__(self, send: Send, market: Market, rng: random.Random | None = None) -> None:
        self.send = send
        self.market = market
        self.rng = rng or random.Random()
        self.token: str | None = None
        self.user_id: str | None = None
        self._signup: tuple[dict[str, str], str] | None = None  # body and Idempotency-Key
        self._retry_signup_at = 0.0  # time.monotonic()

    def call(self, method: str, path: str, **options: Any) -> Reply:
        return self.send(Call(method, path, token=self.token, **options))

    def start(self) -> None:
        """What the user does once, when it arrives."""

    # -- signing in ------------------------------------------------------------------------
    def sign_up(self) -> bool:
        """Sign up; a failed attempt is retried later with the same body and Idempotency-Key
        (a 503 does not say whether the account was made), after the Retry-After (5 s when
        none is given; 30 s at most), as a client should rather than pile onto a busy API."""
        if self._signup is None:
            email = f"{self.role}-{uuid.uuid4().hex[:20]}@{LOAD_EMAIL_DOMAIN}"
            body = {
                "email": email,
                "password": secrets.token_urlsafe(12),
                "nickname": f"{self.role}-{self.rng.randrange(10**6)}",
            }
            self._signup = (body, f"signup-{uuid.uuid4().hex}")
        body, key = self._signup
        reply = self.call("POST", "/api/auth/signup", json=body, idempotency_key=key)
        if reply.status not in (200, 201):
            self._retry_signup_at = time.monotonic() + retry_after(reply)
            return False
        self.token, self.user_id = reply.field("token"), reply.field("user_id")
        self.market.journal.write(
            {"kind": "user", "role": self.role, "user_id": self.user_id, "token": self.token}
        )
        self.signed_up()
        return True

    def signed_up(self) -> None:
        """What the user does right after its signup."""

    def signed_in(self) -> bool:
        """A user whose signup failed tries again before a signed-in action, once its pause
        is over (until then it skips the action)."""
        if self.token is not None:
            return True
        return time.monotonic() >= self._retry_signup_at and self.sign_up()

    # -- browsing (every user browses) -------------------------------------------------------
    def browse(self) -> None:
        """A page of products, sometimes one category's, sometimes the next page too."""
        sort = self.rng.choice(("popular", "popular", "latest", "price"))
        path = f"/api/products?sort={sort}&limit=20"
        if self.market.products and self.rng.random() < 0.4:
            path += f"&category={self.rng.choice(self.market.products).category}"
        page = self.call("GET", path)
        cursor = page.field("next_cursor")
        if isinstance(cursor, str) and self.rng.random() < 0.3:
            self.call("GET", f"{path}&cursor={quote(cursor)}")

    def product(self) -> None:
        product = self.market.pick(self.rng)
        if product is not None:
            self.view_product(product)

    def view_product(self, product: Product) -> dict[str, Any] | None:
        reply = self.call("GET", f"/api/products/{product.product_id}")
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    def search(self) -> None:
        term = quote(self.rng.choice(SEARCH_TERMS))
        self.call("GET", f"/api/search?q={term}&limit=20")

    def rankings(self) -> None:
        self.call("GET", f"/api/rankings?by={self.rng.choice(('likes', 'orders'))}&limit=10")

    def me(self) -> Reply | None:
        if not self.signed_in():
            return None
        return self.call("GET", "/api/me", check=balance_problem)


class Visitor(Session):
    """Browses without an account: lists, product pages, search, rankings."""

    MIX: ClassVar[dict[str, int]] = {"browse": 5, "product": 4, "search": 2, "rankings": 1}


class Buyer(Session):
    """Charges points, browses, likes, buys now (with a coupon sometimes), bids, and
    confirms (rarely disputes) what was delivered."""

    MIX: ClassVar[dict[str, int]] = {
        "browse": 3,
        "product": 2,
        "buy_now": 4,
        "place_bid": 2,
        "cancel_bid": 1,
        "confirm_orders": 3,
        "like": 2,
        "search": 2,
        "check_balance": 1,
        "coupons": 1,
    }
    role: ClassVar[str] = "buyer"

    def __init__(self, send: Send, market: Market, rng: random.Random | None = None) -> None:
        super().__init__(send, market, rng)
        self.coupon_ids: list[str] = []
        self.open_bids: list[str] = []

    def start(self) -> None:
        self.sign_up()

    def signed_up(self) -> None:
        assert self.user_id is not None
        self.market.buyers.append(self.user_id)
        self.charge()
        self.coupons()

    def charge(self) -> None:
        self.call("POST", "/api/points/charge", json={"amount": TOP_UP})

    def check_balance(self) -> None:
        reply = self.me()
        available = reply.field("available_points") if reply is not None else None
        if isinstance(available, int) and available < LOW_BALANCE:
            self.charge()

    def coupons(self) -> None:
        """The welcome coupon comes asynchronously after signup, the operator's any time."""
        if not self.signed_in():
            return
        reply = self.call("GET", "/api/me/coupons")
        items = reply.field("items") or []
        self.coupon_ids = [c["coupon_id"] for c in items if c.get("status") == "AVAILABLE"]

    def buy_now(self) -> None:
        product = self.market.pick(self.rng)
        if product is None or not self.signed_in():
            return
        detail = self.view_product(product)
        ask = detail.get("lowest_ask") if detail else None
        if not isinstance(ask, int):
            return
        body: dict[str, Any] = {"price": ask}
        if self.coupon_ids and self.rng.random() < COUPON_SHARE:
            body["coupon_id"] = self.coupon_ids.pop()
        reply = self.call(
            "POST",
            f"/api/products/{product.product_id}/buy-now",
            json=body,
            conflicts=frozenset({"no_matching_bid", "insufficient_points", "coupon_unavailable"}),
        )
        if reply.status == 201:
            order_id = reply.field("order_id")
            consistency = reply.headers.get("x-consistency-token")
            self.market.journal.write(
                {
                    "kind": "order",
                    "order_id": order_id,
                    "user_id": self.user_id,
                    "token": self.token,
                    "consistency": consistency,
                }
            )
            # The app shows the order it just made: read-your-writes through the token.
            self.call(
                "GET",
                f"/api/orders/{order_id}",
                consistency=consistency,
                check=order_shown_to_buyer(str(order_id), self.user_id),
            )
        elif reply.code == "insufficient_points":
            self.charge()

    def place_bid(self) -> None:
        product = self.market.pick(self.rng)
        if product is None or not self.signed_in():
            return
        detail = self.view_product(product)
        if detail is None:
            return
        price = bid_price(
            self.rng, product.face_value, detail.get("lowest_ask"), detail.get("highest_bid")
        )
        if price is None:
            return
        if len(self.open_bids) >= MAX_OPEN_BIDS:
            self.cancel_bid()
        reply = self.call(
            "POST",
            f"/api/products/{product.product_id}/buy-bids",
            json={"price": price},
            conflicts=frozenset({"crosses_book", "insufficient_points"}),
        )
        if reply.status == 201:
            self.open_bids.append(str(reply.field("buy_bid_id")))

    def cancel_bid(self) -> None:
        if not self.open_bids:
            return
        bid = self.open_bids.pop(self.rng.randrange(len(self.open_bids)))
        # bid_not_open: a seller sold into it meanwhile.
        self.call("DELETE", f"/api/buy-bids/{bid}", conflicts=frozenset({"bid_not_open"}))

    def confirm_orders(self) -> None:
        """Confirm the delivered purchases (PAID), or now and then dispute one."""
        if not self.signed_in():
            return
        reply = self.call("GET", "/api/buy/history/in_progress?limit=20")
        delivered = [
            item["order_id"]
            for item in reply.field("items") or []
            if item.get("order_id") and item.get("status") == "PAID"
        ]
        for order_id in delivered[:3]:
            if self.rng.random() < DISPUTE_SHARE:
                self.call(
                    "POST",
                    f"/api/orders/{order_id}/dispute",
                    json={"reason": "The store says this barcode was already used."},
                    conflicts=frozenset({"order_not_disputable"}),
                )
            else:
                self.call(
                    "POST",
                    f"/api/orders/{order_id}/confirm",
                    conflicts=frozenset({"order_not_confirmable"}),
                )

    def like(self) -> None:
        product = self.market.pick(self.rng)
        if product is None or not self.signed_in():
            return
        method = "POST" if self.rng.random() < 0.7 else "DELETE"
        self.call(method, f"/api/products/{product.product_id}/likes")


class Seller(Session):
    """Lists asks (asking for an upload slot, uploading the voucher's image to S3, then
    listing it), sells now into buy bids, cancels asks, looks at its sales."""

    MIX: ClassVar[dict[str, int]] = {
        "list_ask": 10,
        "sell_now": 2,
        "cancel_ask": 1,
        "sales": 3,
        "browse": 2,
        "check_balance": 1,
    }
    role: ClassVar[str] = "seller"

    def __init__(self, send: Send, market: Market, rng: random.Random | None = None) -> None:
        super().__init__(send, market, rng)
        self.open_asks: list[str] = []
        self.spare_image: str | None = None  # uploaded, not attached: the next listing's

    def start(self) -> None:
        self.sign_up()

    def check_balance(self) -> None:
        self.me()

    def upload_image(self) -> str | None:
        if self.spare_image is not None:
            image, self.spare_image = self.spare_image, None
            return image
        slot = self.call("POST", "/api/images", json={"content_type": "image/png"})
        image, url = slot.field("image_id"), slot.field("upload_url")
        if slot.status != 201 or not isinstance(url, str):
            return None
        put = self.send(Call("PUT", url, data=PNG, content_type="image/png"))
        return str(image) if 200 <= put.status < 300 else None

    def list_ask(self) -> None:
        product = self.market.pick(self.rng)
        if product is None or not self.signed_in():
            return
        detail = self.view_product(product)
        if detail is None:
            return
        image = self.upload_image()
        if image is None:
            return
        price = ask_price(self.rng, product.face_value, detail.get("highest_bid"))
        body = {"price": price, "image_id": image, **voucher_facts(self.rng, datetime.now(UTC))}
        reply = self.call(
            "POST",
            f"/api/products/{product.product_id}/sell-bids",
            json=body,
            conflicts=frozenset({"crosses_book"}),
        )
        if reply.status == 201:
            self.open_asks.append(str(reply.field("sell_bid_id")))
        else:
            self.spare_image = image

    def sell_now(self) -> None:
        product = self.market.pick(self.rng)
        if product is None or not self.signed_in():
            return
        detail = self.view_product(product)
        bid = detail.get("highest_bid") if detail else None
        if not isinstance(bid, int):
            return
        image = self.upload_image()
        if image is None:
            return
        body = {"price": bid, "image_id": image, **voucher_facts(self.rng, datetime.now(UTC))}
        reply = self.call(
            "POST",
            f"/api/products/{product.product_id}/sell-now",
            json=body,
            conflicts=frozenset({"no_matching_bid"}),
        )
        if reply.status != 201:
            self.spare_image = image

    def cancel_ask(self) -> None:
        if not self.open_asks or self.rng.random() < 0.5:
            return
        ask = self.open_asks.pop(self.rng.randrange(len(self.open_asks)))
        # bid_not_open: a buyer took it meanwhile.
        self.call("DELETE", f"/api/sell-bids/{ask}", conflicts=frozenset({"bid_not_open"}))

    def sales(self) -> None:
        if not self.signed_in():
            return
        state = self.rng.choice(("bidding", "in_progress", "done"))
        reply = self.call("GET", f"/api/sell/history/{state}?limit=20")
        if state == "bidding" and reply.status == 200:
            # What is still open, as the server knows it (buyers took some).
            self.open_asks = [i["sell_bid_id"] for i in reply.field("items") or []]


class Operator(Session):
    """The admin's share: the inspection queue (only fills with INSPECTION_MODE=manual: then
    orders wait here before a buyer can confirm them), disputes, and coupons for buyers."""

    MIX: ClassVar[dict[str, int]] = {"inspect": 4, "resolve_disputes": 2, "issue_coupon": 1}
    role: ClassVar[str] = "operator"

    def start(self) -> None:
        if self.market.admin is not None:
            self.log_in(self.market.admin)

    def log_in(self, admin: Admin) -> bool:
        reply = self.call(
            "POST", "/api/auth/login", json={"email": admin.email, "password": admin.password}
        )
        self.token, self.user_id = reply.field("token"), reply.field("user_id")
        return reply.status == 200

    def signed_in(self) -> bool:
        return self.token is not None

    def inspect(self) -> None:
        if not self.signed_in():
            return
        queue = self.call("GET", "/api/admin/inspections")
        for item in (queue.field("items") or [])[:10]:
            decision: dict[str, str] = {"result": "pass"}
            if self.rng.random() < 0.05:
                decision = {"result": "fail", "reason": "The image does not show a barcode."}
            self.call(
                "POST",
                f"/api/admin/orders/{item['order_id']}/inspection",
                json=decision,
                conflicts=frozenset({"order_not_pending"}),
            )

    def resolve_disputes(self) -> None:
        if not self.signed_in():
            return
        queue = self.call("GET", "/api/admin/disputes")
        for item in (queue.field("items") or [])[:10]:
            decision = self.rng.choice(("refund", "reject"))
            self.call(
                "POST",
                f"/api/admin/orders/{item['order_id']}/resolution",
                json={"decision": decision, "note": "Checked with the brand's store."},
                conflicts=frozenset({"order_not_pending"}),
            )

    def issue_coupon(self) -> None:
        if not self.signed_in() or not self.market.buyers:
            return
        expires_at = datetime.now(UTC) + timedelta(days=30)
        body = {
            "user_id": self.rng.choice(self.market.buyers),
            "name": "Thanks for trading",
            "discount_amount": self.rng.choice((500, 1000, 2000)),
            "expires_at": expires_at.isoformat(timespec="seconds"),
        }
        self.call("POST", "/api/admin/coupons", json=body)


SESSIONS: tuple[type[Session], ...] = (Visitor, Buyer, Seller, Operator)


# -- before the users arrive ------------------------------------------------------------------


def prepare_market(send: Send, market: Market, run_id: str, products: int) -> str:
    """The catalog the run trades: with an admin, `products` new products named after the
    run; without one, the stage's existing products (admin-only steps skipped). Returns a
    line for the report saying which."""
    if market.admin is not None:
        operator = Operator(send, market)
        if not operator.log_in(market.admin):
            raise RuntimeError(f"the admin {market.admin.email} could not log in")
        created: list[Product] = []
        token = None
        for spec in catalog(run_id, products):
            reply = operator.call("POST", "/api/products", json=spec)
            if reply.status != 201:
                raise RuntimeError(f"creating a product answered {reply.status}: {reply.body}")
            token = reply.headers.get("x-consistency-token")
            created.append(Product(product_id=str(reply.field("product_id")), **spec))
        if created:
            # Read-your-writes on the last one: the catalog is queryable before users arrive.
            operator.call("GET", f"/api/products/{created[-1].product_id}", consistency=token)
        market.set_products(created)
        return f"{len(created)} products created by the admin {market.admin.email}"
    found: list[Product] = []
    path = "/api/products?sort=popular&limit=100"
    for _ in range(3):
        page = send(Call("GET", path))
        for item in page.field("items") or []:
            found.append(
                Product(
                    product_id=item["product_id"],
                    name=item["name"],
                    brand=item["brand"],
                    category=item["category"],
                    face_value=item["face_value"],
                )
            )
        cursor = page.field("next_cursor")
        if not isinstance(cursor, str):
            break
        path = f"/api/products?sort=popular&limit=100&cursor={quote(cursor)}"
    market.set_products(found)
    return (
        f"no admin credentials: {len(found)} existing products traded; inspections, disputes"
        " and coupons (admin-only) skipped"
    )


# -- plain urllib, for the setup and the checks ----------------------------------------------


class UrllibSend:
    """A `Send` over urllib: the setup before the users arrive and the checks after them,
    which are not part of what is measured."""

    def __init__(self, base_url: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __call__(self, call: Call) -> Reply:
        url = call.path if _ABSOLUTE.match(call.path) else self.base_url + call.path
        data = call.data
        headers = call.headers()
        if call.json is not None:
            data = json.dumps(call.json).encode()
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(url, data=data, method=call.method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                return _reply(resp.status, resp.headers.items(), resp.read())
        except urllib.error.HTTPError as err:
            return _reply(err.code, err.headers.items(), err.read())
        except OSError as exc:
            return Reply(0, {"error": f"{type(exc).__name__}: {exc}"}, {})


def _reply(status: int, headers: Sequence[tuple[str, str]], content: bytes) -> Reply:
    lowered = {name.lower(): value for name, value in headers}
    return Reply(status, parse_body(lowered.get("content-type", ""), content), lowered)


def parse_body(content_type: str, content: bytes) -> Any:
    if "json" not in content_type or not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None
