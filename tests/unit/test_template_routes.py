"""template.yaml is the routing table: every route of PRODUCT.md reaches the right function."""

from __future__ import annotations

import pytest

from giftmarket_local.template import read_application

COMMANDS = [
    ("POST", "/api/auth/signup"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/points/charge"),
    ("POST", "/api/products"),
    ("POST", "/api/products/P1/likes"),
    ("DELETE", "/api/products/P1/likes"),
    ("POST", "/api/images"),
    ("POST", "/api/products/P1/sell-bids"),
    ("DELETE", "/api/sell-bids/S1"),
    ("POST", "/api/products/P1/buy-bids"),
    ("DELETE", "/api/buy-bids/B1"),
    ("POST", "/api/products/P1/buy-now"),
    ("POST", "/api/products/P1/sell-now"),
    ("POST", "/api/orders/O1/confirm"),
    ("POST", "/api/admin/coupons"),
    ("POST", "/api/orders/O1/dispute"),
    ("POST", "/api/admin/orders/O1/inspection"),
    ("POST", "/api/admin/orders/O1/resolution"),
]
QUERIES = [
    ("GET", "/api/products"),
    ("GET", "/api/products/P1"),
    ("GET", "/api/rankings"),
    ("GET", "/api/search"),
    ("GET", "/api/me/search-history"),
    ("GET", "/api/me"),
    ("GET", "/api/buy/history/bidding"),
    ("GET", "/api/sell/history/done"),
    ("GET", "/api/orders/O1"),
    ("GET", "/api/orders/O1/gifticon"),
    ("GET", "/api/me/coupons"),
    ("GET", "/api/me/settlements"),
    ("GET", "/api/health"),
    ("GET", "/api/admin/inspections"),
    ("GET", "/api/admin/disputes"),
]


@pytest.mark.parametrize(("method", "path"), COMMANDS)
def test_command_route_goes_to_the_command_function(method: str, path: str) -> None:
    resolved = read_application().resolve(method, path)
    assert resolved is not None
    assert resolved[0].function == "CommandApiFunction"


@pytest.mark.parametrize(("method", "path"), QUERIES)
def test_query_route_goes_to_the_query_function(method: str, path: str) -> None:
    resolved = read_application().resolve(method, path)
    assert resolved is not None
    assert resolved[0].function == "QueryApiFunction"


def test_path_parameters_are_extracted_by_name() -> None:
    resolved = read_application().resolve("POST", "/api/products/01ABC/sell-bids")
    assert resolved is not None
    route, params = resolved
    assert route.route_key == "POST /api/products/{product_id}/sell-bids"
    assert params == {"product_id": "01ABC"}


def test_literal_segment_wins_over_a_path_parameter() -> None:
    resolved = read_application().resolve("GET", "/api/me/coupons")
    assert resolved is not None
    assert resolved[0].path == "/api/me/coupons"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/nothing"), ("PUT", "/api/products"), ("GET", "/api/products/P1/extra")],
)
def test_unrouted_request_resolves_to_nothing(method: str, path: str) -> None:
    assert read_application().resolve(method, path) is None


def test_every_function_handler_file_exists() -> None:
    for spec in read_application().functions.values():
        assert spec.module_file.is_file(), spec
