"""The load scenario's own logic (tests/load/scenario.py), against a fake API: how requests
are named and judged, the prices and vouchers it sends, what a buyer does with the answers.
No Locust run here: `make load` is that."""

from __future__ import annotations

import ast
import os
import random
import subprocess
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.load import run, scenario
from tests.load.scenario import Call, Reply

REPO = Path(__file__).resolve().parents[2]
LOAD = REPO / "tests" / "load"
ULID = "01JPRD" + "0" * 20  # ULIDs: Crockford base32, 26 characters
ORDER = "01J0RD" + "1" * 20


class FakeApi:
    """A `Send` answering by route name, recording every call."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[Call], Reply]]) -> None:
        self.routes = routes
        self.calls: list[Call] = []

    def __call__(self, call: Call) -> Reply:
        self.calls.append(call)
        answer = self.routes.get((call.method, call.name))
        return answer(call) if answer else Reply(404, {"code": "not_found"}, {})

    def named(self, method: str, name: str) -> list[Call]:
        return [c for c in self.calls if (c.method, c.name) == (method, name)]


def reply(status: int, body: Any = None, **headers: str) -> Callable[[Call], Reply]:
    return lambda call: Reply(status, body, headers)


def test_route_names_group_ids_and_free_values() -> None:
    assert scenario.route_name(f"/api/products/{ULID}/buy-now") == "/api/products/{id}/buy-now"
    assert scenario.route_name(f"/api/orders/{ULID.lower()}") == "/api/orders/{id}"
    assert (
        scenario.route_name("/api/products?sort=price&limit=20&category=cafe&cursor=abc")
        == "/api/products?category&cursor&sort=price"
    )
    assert scenario.route_name("/api/rankings?by=orders&limit=10") == "/api/rankings?by=orders"
    assert scenario.route_name("/api/buy/history/in_progress") == "/api/buy/history/in_progress"
    assert scenario.route_name("http://127.0.0.1:4566/bucket/images/x?X-Amz=1") == scenario.UPLOAD


def test_the_markets_409s_are_answers_and_everything_else_unexpected_fails() -> None:
    buy = Call("POST", "/api/products/x/buy-now", conflicts=frozenset({"no_matching_bid"}))
    assert scenario.verdict(buy, Reply(201, {}, {})).kind == "ok"
    taken = scenario.verdict(buy, Reply(409, {"code": "no_matching_bid"}, {}))
    assert (taken.kind, taken.detail) == ("conflict", "no_matching_bid")
    other = scenario.verdict(buy, Reply(409, {"code": "voucher_duplicate"}, {}))
    assert (other.kind, other.detail) == ("failure", "HTTP 409 voucher_duplicate")
    assert scenario.verdict(buy, Reply(500, None, {})).detail == "HTTP 500"
    assert scenario.verdict(buy, Reply(0, {"error": "refused"}, {})).kind == "failure"
    checked = Call("GET", "/api/me", check=scenario.balance_problem)
    negative = {"available_points": -1, "escrowed_points": 0, "pending_points": 0}
    assert scenario.verdict(checked, Reply(200, negative, {})).detail == "available_points is -1"


def test_asks_stay_above_the_highest_bid_and_bids_below_the_lowest_ask() -> None:
    rng = random.Random(7)
    for _ in range(200):
        assert 4_000 <= scenario.ask_price(rng, 5_000, None) <= 4_900
        assert scenario.ask_price(rng, 5_000, 4_950) > 4_950
        bid = scenario.bid_price(rng, 5_000, 4_500, 3_000)
        assert bid is not None and 3_000 < bid < 4_500 and bid % 100 == 0
    assert scenario.bid_price(rng, 5_000, 200, 100) is None  # no room between bid and ask
    assert scenario.bid_price(rng, 5_000, None, None) is not None


def test_voucher_facts_are_listable_in_korea() -> None:
    # 15:30 UTC is already the next day in Seoul.
    now = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)
    facts = [scenario.voucher_facts(random.Random(i), now) for i in range(50)]
    for fact in facts:
        assert fact["barcode"].isdigit() and len(fact["barcode"]) == 16
        days = (date.fromisoformat(fact["expires_on"]) - date(2026, 12, 7)).days
        assert 20 <= days <= 120
    assert len({f["barcode"] for f in facts}) == len(facts)


def test_think_time_setting() -> None:
    assert scenario.think_time(None) == (0.5, 2.5)
    assert scenario.think_time("0,0.2") == (0.0, 0.2)
    assert scenario.think_time("1") == (1.0, 1.0)
    for bad in ("fast", "2,1", "-1,1"):
        with pytest.raises(ValueError, match="GM_LOAD_THINK"):
            scenario.think_time(bad)


def test_catalog_names_each_product_after_the_run() -> None:
    specs = scenario.catalog("r1", 45)
    assert len({s["name"] for s in specs}) == 45
    assert all("(load r1)" in s["name"] and s["face_value"] > 0 for s in specs)


def test_popular_products_are_picked_more_often() -> None:
    market = scenario.Market()
    market.set_products(scenario.Product(str(i), "n", "b", "c", 1000) for i in range(10))
    rng = random.Random(1)
    picks = [market.pick(rng) for _ in range(3000)]
    counts = [sum(1 for p in picks if p and p.product_id == str(i)) for i in (0, 9)]
    assert counts[0] > 4 * counts[1]


def market_with_one_product(tmp_path: Path) -> scenario.Market:
    market = scenario.Market(journal=scenario.Journal(tmp_path / "journal.jsonl"))
    market.set_products([scenario.Product(ULID, "Americano", "Starbucks", "cafe", 4500)])
    return market


def test_a_buyer_buys_the_lowest_ask_and_reads_its_order_with_the_token(tmp_path: Path) -> None:
    market = market_with_one_product(tmp_path)
    api = FakeApi(
        {
            ("GET", "/api/products/{id}"): reply(200, {"lowest_ask": 4100, "highest_bid": 3000}),
            ("POST", "/api/products/{id}/buy-now"): reply(
                201, {"order_id": ORDER}, **{"x-consistency-token": "tok"}
            ),
            ("GET", "/api/orders/{id}"): reply(200, {"order_id": ORDER, "role": "buyer"}),
        }
    )
    buyer = scenario.Buyer(api, market, random.Random(3))
    buyer.token, buyer.user_id = "jwt", "01JBYR" + "2" * 20
    buyer.coupon_ids = []

    buyer.buy_now()

    (buy,) = api.named("POST", "/api/products/{id}/buy-now")
    assert buy.json == {"price": 4100} and buy.token == "jwt"
    (read,) = api.named("GET", "/api/orders/{id}")
    assert read.path == f"/api/orders/{ORDER}" and read.consistency == "tok"
    market.journal.close()
    (entry,) = scenario.read_journal(tmp_path / "journal.jsonl")
    assert (entry["kind"], entry["order_id"], entry["consistency"]) == ("order", ORDER, "tok")


def test_a_buyer_beaten_to_the_ask_reads_no_order_and_one_short_of_points_charges(
    tmp_path: Path,
) -> None:
    market = market_with_one_product(tmp_path)
    answers = iter(["no_matching_bid", "insufficient_points"])
    api = FakeApi(
        {
            ("GET", "/api/products/{id}"): reply(200, {"lowest_ask": 4100}),
            ("POST", "/api/products/{id}/buy-now"): lambda call: Reply(
                409, {"code": next(answers)}, {}
            ),
            ("POST", "/api/points/charge"): reply(200, {"available_points": 1}),
        }
    )
    buyer = scenario.Buyer(api, market, random.Random(3))
    buyer.token = "jwt"

    buyer.buy_now()
    assert not api.named("GET", "/api/orders/{id}") and not api.named("POST", "/api/points/charge")
    buyer.buy_now()
    assert len(api.named("POST", "/api/points/charge")) == 1
    market.journal.close()
    assert scenario.read_journal(tmp_path / "journal.jsonl") == []


def test_a_seller_uploads_the_image_before_listing_and_keeps_it_when_refused(
    tmp_path: Path,
) -> None:
    market = market_with_one_product(tmp_path)
    listed = iter([409, 201])
    api = FakeApi(
        {
            ("GET", "/api/products/{id}"): reply(200, {"highest_bid": 4400}),
            ("POST", "/api/images"): reply(
                201, {"image_id": "img-1", "upload_url": "http://s3.local/b/k?sig=1"}
            ),
            ("PUT", scenario.UPLOAD): reply(200),
            ("POST", "/api/products/{id}/sell-bids"): lambda call: Reply(
                status := next(listed),
                {"sell_bid_id": "ask-1"} if status == 201 else {"code": "crosses_book"},
                {},
            ),
        }
    )
    seller = scenario.Seller(api, market, random.Random(5))
    seller.token = "jwt"

    seller.list_ask()
    seller.list_ask()

    (put,) = api.named("PUT", scenario.UPLOAD)  # the refused listing's image was reused
    assert put.content_type == "image/png" and put.data == scenario.PNG
    first, second = api.named("POST", "/api/products/{id}/sell-bids")
    assert first.json["image_id"] == second.json["image_id"] == "img-1"
    assert first.json["price"] > 4400 and seller.open_asks == ["ask-1"]


def test_a_refused_signup_is_retried_after_its_pause_with_the_same_body_and_key() -> None:
    answers = iter([{"retry-after": "0"}, {"retry-after": "30"}])
    api = FakeApi(
        {("POST", "/api/auth/signup"): lambda call: Reply(503, {"code": "x"}, next(answers))}
    )
    seller = scenario.Seller(api, scenario.Market())

    assert not seller.sign_up()
    assert not seller.signed_in()  # Retry-After 0: tried again at once, refused for 30 s
    assert not seller.signed_in()  # within those 30 s: not tried

    first, second = api.calls
    assert first.json == second.json and first.idempotency_key == second.idempotency_key
    assert first.idempotency_key is not None


def test_without_an_admin_the_run_trades_the_existing_products() -> None:
    item = {"product_id": ULID, "name": "n", "brand": "b", "category": "c", "face_value": 900}
    api = FakeApi({("GET", "/api/products?sort=popular"): reply(200, {"items": [item]})})
    market = scenario.Market()

    note = scenario.prepare_market(api, market, "r", 40)

    assert [p.product_id for p in market.products] == [ULID]
    assert "skipped" in note and not api.named("POST", "/api/products")


def test_with_an_admin_the_run_creates_its_catalog() -> None:
    created = iter(range(100))
    api = FakeApi(
        {
            ("POST", "/api/auth/login"): reply(200, {"token": "admin-jwt", "user_id": "a"}),
            ("POST", "/api/products"): lambda call: Reply(
                201, {"product_id": f"P{next(created)}"}, {"x-consistency-token": "t"}
            ),
            ("GET", "/api/products/P4"): reply(200, {}),
        }
    )
    market = scenario.Market(admin=scenario.Admin("admin@x.test", "pw"))

    scenario.prepare_market(api, market, "r", 5)

    assert [p.product_id for p in market.products] == [f"P{i}" for i in range(5)]
    assert all(c.token == "admin-jwt" for c in api.named("POST", "/api/products"))


def test_a_run_lasts_the_arrivals_then_the_duration_with_every_user() -> None:
    assert [run.seconds(d) for d in ("90", "60s", "5m", "1h30m")] == [90, 60, 300, 5400]
    assert run.run_seconds(100, 2, "60s") == 110
    assert run.run_seconds(5, 2, "1m") == 63
    for bad in ("", "soon", "5 min", "-1s"):
        with pytest.raises(ValueError, match="duration"):
            run.seconds(bad)


@pytest.mark.parametrize("session", scenario.SESSIONS)
def test_every_task_of_the_mix_is_a_method_of_its_user(session: type[scenario.Session]) -> None:
    assert session.MIX
    for name, weight in session.MIX.items():
        assert callable(getattr(session, name, None)) and weight > 0, name


@pytest.mark.parametrize("module", ["scenario.py", "locustfile.py"])
def test_the_scenario_is_a_client_of_the_http_api_only(module: str) -> None:
    tree = ast.parse((LOAD / module).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert not {m for m in imported if m.split(".")[0] in ("giftmarket", "giftmarket_local")}


LOCUST_PYTHON = REPO / ".local" / "venvs" / "load" / "bin" / "python"


@pytest.mark.skipif(not LOCUST_PYTHON.exists(), reason="no Locust venv: `make load` makes it")
def test_the_locustfile_imports_in_locusts_virtualenv() -> None:
    users = "f.VisitorUser, f.BuyerUser, f.SellerUser, f.OperatorUser"
    probe = f"import locustfile as f; print(sorted(c.__name__ for c in ({users})))"
    result = subprocess.run(
        [str(LOCUST_PYTHON), "-c", probe],
        cwd=LOAD,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "BuyerUser" in result.stdout
