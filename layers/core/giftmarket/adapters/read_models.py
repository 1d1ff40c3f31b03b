"""Redis read models (ElastiCache in AWS): response-shaped, idempotent, never going back.

Layout, under a generation prefix `rm:<g>:` (a rebuild fills a new generation and switches
the pointer `rm:layout:<LAYOUT>:generation` to it in one step):
- `user:<id>`, `product:<id>`, `order:<id>`, `ask:<id>`, `bid:<id>`, `coupon:<id>`,
  `settlement:<id>`: hashes, the response's fields plus `_v`, the version they reflect;
- `image:<id>`: a deleted voucher image's tombstone (`status` DELETED, expiring as a closed
  bid's); an order's image key is derived from its seller and image id, as the upload slot
  made it, so no image is stored otherwise;
- `asks:<product>`, `bids:<product>`: the open book, scored by price; `trades:<product>`:
  its orders, scored by creation time;
- `detail:<product>`: the product's detail as `product` returns it (field `json`) and its
  row of a product list (`summary`), rendered by the apply script whenever something they
  show changes, so that reading the detail is one HGET and a list page one per product;
- `list:<sort>:*` and `list:<sort>:c:<category>`: every product in the order of
  `/api/products`, as members of equal score whose bytes sort like the page does, so a
  cursor is a member and a page one `ZRANGEBYLEX`;
- `rank:likes`, `rank:orders`: sorted sets scored by the negated count (ties by id);
- `ladder:<product>`: the prices of its open asks; `ladder:<price>:<product>`: the open asks
  at that price, scored by their voucher's last valid day (YYYYMMDD);
- `hist:<buy|sell>:<state>:<user>`, `hist:sell:expired:<user>`, `coupons:<user>`,
  `settlements:<user>`: the caller's lists, newest first;
- `queue:inspections`, `queue:disputes`: the orders waiting for an admin, oldest first.

All writes go through one Lua script (`lua/apply.lua`), reads through another
(`lua/read.lua`); each query is one round trip. Outside the generations: `rm:seen:<outbox
id>` (an event was projected, for consistency tokens) and `sh:<user>` (search history,
which is this store's own data, not a projection).

Lua touches keys it derives itself, so the Redis must not be in cluster mode (an
ElastiCache replication group with cluster mode disabled, as the template has).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import redis

from giftmarket.domain.images import IMAGES_PREFIX
from giftmarket.read_ports import Document, Op, ReadModelStore, RebuildRunning

SEEN_TTL_SECONDS = 24 * 3600
# Longer than SQS keeps a message (at most 14 days): no late "placed" can outlive it.
TOMBSTONE_TTL_SECONDS = 15 * 24 * 3600
SEARCH_HISTORY_SIZE = 10
# What a product's rendered detail holds: its newest trades and its open asks' cheapest
# prices (at least what `queries.products` shows; it asks SQL for more).
DETAIL_TRADES = 10
DETAIL_PRICES = 10

# What a list item shows of each kind of document (the first field is never missing).
LISTED_FIELDS: dict[str, tuple[str, ...]] = {
    "order": ("product_id", "price", "discount", "paid", "status", "via", "created_at",
              "completed_at", "settled_at", "delivered_at", "barcode_last4", "expires_on"),
    "bid": ("product_id", "price", "status", "created_at"),
    "ask": ("product_id", "price", "status", "created_at", "barcode_last4", "expires_on"),
    "coupon": ("name", "discount_amount", "status", "expires_at"),
    "settlement": ("business_date", "order_count", "gross", "fee", "net"),
}  # fmt: skip

# The layout's version is in the pointers' names: code reading another layout finds no
# generation, answers from SQL, and the relay's `ensure_read_models` rebuilds one in its
# layout. Bump it with any change to what the scripts write or read. Generation numbers
# come from one sequence for every layout, so two layouts never share a prefix.
LAYOUT = 3
GENERATION_KEY = f"rm:layout:{LAYOUT}:generation"
BUILDING_KEY = f"rm:layout:{LAYOUT}:building"
SEQUENCE_KEY = "rm:generation:seq"
# The pointers of the older layouts (see `drop_older_layouts`).
LEGACY_GENERATION_KEYS = (
    "rm:generation",
    *(f"rm:layout:{n}:generation" for n in range(2, LAYOUT)),
)
POINTERS = [GENERATION_KEY, BUILDING_KEY]

BUILD_TIMEOUT_SECONDS = 3600

# Switches to the generation just built if it is still the one being built.
_SWITCH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return old or ''
"""

# Records one search: newest first, a repeated query moves to the front, at most N kept.
_RECORD_SEARCH = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
SEARCH_HISTORY_TTL_SECONDS = 90 * 24 * 3600


def _lua(name: str) -> str:
    """A script of `lua/`, after `lua/common.lua`: the helpers both scripts use (a script
    sent to Redis cannot load another)."""
    scripts = resources.files("giftmarket.adapters").joinpath("lua")
    return scripts.joinpath("common.lua").read_text() + scripts.joinpath(f"{name}.lua").read_text()


def _apply_args(
    target: str, batch: str, *, outbox_id: str | None = None, mode: str = ""
) -> list[Any]:
    """The apply script's ARGV (see its header): where, the operations' JSON, what to mark
    seen and for how long, the tombstones' life, the mode, and what a product's detail
    holds."""
    return [
        target,
        batch,
        outbox_id or "",
        SEEN_TTL_SECONDS,
        TOMBSTONE_TTL_SECONDS,
        mode,
        DETAIL_TRADES,
        DETAIL_PRICES,
    ]


def seen_key(outbox_id: str) -> str:
    return f"rm:seen:{outbox_id}"


def generation_prefix(generation: int | str) -> str:
    return f"rm:{generation}:"


class ReadModels(ReadModelStore):
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._apply = client.register_script(_lua("apply"))
        self._read = client.register_script(_lua("read"))
        self._switch = client.register_script(_SWITCH)
        self._record_search = client.register_script(_RECORD_SEARCH)

    @property
    def client(self) -> redis.Redis:
        return self._redis

    # -- writing (the projector, the rebuild) ------------------------------------------------
    def apply(self, ops: Sequence[Op], *, outbox_id: str | None = None) -> int:
        """Apply `ops` to the live generations (the current one and the one being built);
        remember `outbox_id` as projected. Returns how many generations were written."""
        batch = json.dumps(ops, separators=(",", ":"))
        return int(self._apply(keys=POINTERS, args=_apply_args("live", batch, outbox_id=outbox_id)))

    def apply_bulk(self, generation: int, batches: Iterable[str]) -> None:
        """Apply batches of operations, each a JSON array, to a generation being built, in one
        pipeline (the rebuild). Products are indexed (and their detail rendered) only by their
        own operations here, so the rebuild loads them after every ask, bid and order."""
        pipe = self._redis.pipeline(transaction=False)
        for batch in batches:
            self._apply(
                keys=POINTERS, args=_apply_args(str(generation), batch, mode="bulk"), client=pipe
            )
        pipe.execute()

    # -- generations -------------------------------------------------------------------------
    def generation(self) -> int | None:
        value = self._redis.get(GENERATION_KEY)
        return None if value is None else int(value)

    def building(self) -> int | None:
        value = self._redis.get(BUILDING_KEY)
        return None if value is None else int(value)

    def begin_generation(self) -> int:
        """A new, empty generation that the projector writes to from now on as well.
        Raises RebuildRunning while another one is being built (the mark expires after
        BUILD_TIMEOUT_SECONDS, so a crashed rebuild does not block the next forever)."""
        generation = int(self._redis.incr(SEQUENCE_KEY))
        if not self._redis.set(BUILDING_KEY, generation, nx=True, ex=BUILD_TIMEOUT_SECONDS):
            raise RebuildRunning(self.building())
        return generation

    def switch_to(self, generation: int) -> int | None:
        """Make `generation` the one queries read, atomically; the previous one, if any.
        Raises if another rebuild took over in the meantime."""
        old = self._switch(keys=[GENERATION_KEY, BUILDING_KEY], args=[generation])
        if old is None:
            raise RuntimeError(f"generation {generation} is no longer the one being built")
        text = _text(old)
        return int(text) if text else None

    def drop_older_layouts(self) -> int:
        """Delete the generation an older layout's code pointed to (after a deployment that
        changed the layout and rebuilt in the new one); returns the keys deleted. Code of
        the older layout still running then misses and answers from SQL."""
        removed = 0
        for pointer in LEGACY_GENERATION_KEYS:
            value = self._redis.get(pointer)
            if value is not None:
                removed += self.drop(int(value))
                self._redis.delete(pointer)
        return removed

    def abandon(self, generation: int) -> None:
        if self.building() == generation:
            self._redis.delete(BUILDING_KEY)
        self.drop(generation)

    def drop(self, generation: int, *, batch: int = 1000) -> int:
        """Delete a generation's keys (UNLINK: freed off the main thread). Returns the count."""
        removed = 0
        keys: list[bytes] = []
        for key in self._redis.scan_iter(match=f"{generation_prefix(generation)}*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                removed += int(self._redis.unlink(*keys))
                keys = []
        if keys:
            removed += int(self._redis.unlink(*keys))
        return removed

    # -- reading (the query API) -------------------------------------------------------------
    def all_seen(self, outbox_ids: Iterable[str]) -> bool:
        keys = [seen_key(i) for i in outbox_ids]
        return not keys or int(self._redis.exists(*keys)) == len(keys)

    def _query(self, *args: str | int) -> Any:
        raw = self._read(keys=[GENERATION_KEY], args=list(args))
        if raw is None:
            return None
        return json.loads(raw)

    # Each returns what the read model stores (None when it cannot answer: no generation, or
    # the entity not projected), with only Redis's encodings undone: fields by name, quotes
    # and counts from sorted-set scores. `giftmarket.queries` turns them into answers.

    def user(self, user_id: str) -> Document | None:
        """The user's document: `email`, `nickname` and the three balances, as stored."""
        found: Document | None = self._query("user", user_id)
        return found

    def product(self, product_id: str, *, recent_trades: int, ladder: int) -> Document | None:
        """The product's fields (`id`, `name`, ..., `lowest_ask`, `highest_bid`), its
        `order_count`, its newest `trades`, [price, created_at] each, newest first, and
        its open asks' `ladder`, [price, count, earliest expires_on or None] for each of
        the `ladder` lowest prices, cheapest first."""
        if recent_trades > DETAIL_TRADES or ladder > DETAIL_PRICES:
            return None  # more than the rendered detail holds
        found = self._query("product", product_id)
        if found is None:
            return None
        summary, order_count, trades, prices = found
        return {
            **_product(summary),
            "order_count": order_count,
            "trades": _list(trades)[:recent_trades],
            "ladder": [
                [_score(price), int(count), _day(earliest)]
                for price, count, earliest in _list(prices)[:ladder]
            ],
        }

    def products(
        self, *, sort: str, category: str | None, after: str | None, limit: int
    ) -> list[Document] | None:
        """Up to `limit` products after the list member `after` (fields as `product`'s,
        with `created_us`, which the cursor of the `latest` order needs)."""
        found = self._query("products", sort, category or "", after or "", limit)
        if found is None:
            return None
        return [_product(row) for row in _list(found[0])]

    def rankings(self, *, by: str, limit: int) -> list[Document] | None:
        """The best `limit` products by likes or orders: `id`, `name` and the count as
        `score`, best first."""
        found = self._query("rankings", by, limit)
        if found is None:
            return None
        return [
            {"id": product_id, "name": name, "score": -int(float(score))}
            for product_id, name, score in _list(found[0])
        ]

    def documents(
        self, user_id: str, lists: Sequence[tuple[str, str]], limit: int
    ) -> list[Document] | None:
        """The newest `limit` documents of the caller's `lists` ((name, kind of document)
        each), merged, newest first (None: not projected): the fields of LISTED_FIELDS,
        plus `id`, `kind` and, with a product, `product_name`."""
        args: list[str | int] = []
        for listing, kind in lists:
            args += [listing, kind, len(LISTED_FIELDS[kind]), *LISTED_FIELDS[kind]]
        found = self._query("list", user_id, limit, *args)
        if found is None:
            return None
        docs = []
        for listed, item_id, product_name, values in _list(found[0]):
            kind = lists[listed - 1][1]
            doc = {k: v for k, v in zip(LISTED_FIELDS[kind], values, strict=True) if v is not False}
            doc["id"] = item_id
            doc["kind"] = kind
            if product_name is not False:
                doc["product_name"] = product_name
            docs.append(doc)
        return docs

    def queue(self, name: str, limit: int) -> list[Document] | None:
        """The oldest `limit` orders of an admins' queue ("inspections", "disputes"): each
        order's document with `id`, `product_name` and `image_key` (its voucher image's S3
        key, absent when the image is gone)."""
        found = self._query("queue", name, limit, IMAGES_PREFIX)
        return None if found is None else _list(found[0])

    def order(self, order_id: str) -> Document | None:
        """The order's document (`product_name` added), as stored."""
        found: Document | None = self._query("order", order_id)
        return found

    def gifticon(self, order_id: str) -> tuple[str, str, str, str | None] | None:
        """(buyer id, seller id, the voucher image's S3 key, when it was delivered or None)
        of an order."""
        found = self._query("gifticon", order_id, IMAGES_PREFIX)
        return None if found is None else (found[0], found[1], found[2], found[3] or None)

    # -- search history (this store's own data) ----------------------------------------------
    def record_search(self, user_id: str, query: str, at: datetime) -> None:
        self._record_search(
            keys=[f"sh:{user_id}"],
            args=[
                query,
                int(at.timestamp() * 1_000_000),
                SEARCH_HISTORY_SIZE,
                SEARCH_HISTORY_TTL_SECONDS,
            ],
        )

    def search_history(self, user_id: str) -> list[tuple[str, datetime]]:
        """The user's recent searches and when each was made, newest first."""
        entries: list[tuple[bytes, float]] = self._redis.zrevrange(  # type: ignore[assignment]
            f"sh:{user_id}", 0, SEARCH_HISTORY_SIZE - 1, withscores=True
        )
        return [
            (_text(query), datetime.fromtimestamp(score / 1_000_000, UTC))
            for query, score in entries
        ]


def _list(value: Any) -> list[Any]:
    # Lua's JSON encoder writes an empty table as {}.
    return value if isinstance(value, list) else []


def _product(row: Sequence[str]) -> Document:
    """A product row of `lua/read.lua` (positional) by field name."""
    product_id, name, brand, category, face_value, lowest_ask, highest_bid, likes, created = row
    return {
        "id": product_id,
        "name": name,
        "brand": brand,
        "category": category,
        "face_value": face_value,
        "lowest_ask": _score(lowest_ask),
        "highest_bid": _score(highest_bid),
        "like_count": likes,
        "created_us": created,
    }


def _score(value: str) -> int | None:
    """A price from a sorted-set score ('' when the set is empty). Scores come back as Redis
    prints doubles ("12000", or "1.2e+19" if huge)."""
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        return int(float(value))
    return int(value)


def _day(value: str) -> str | None:
    """A YYYY-MM-DD date from a ladder score (YYYYMMDD; 99999999 for an unknown expiry)."""
    digits = str(_score(value))
    return None if digits == "99999999" else f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
