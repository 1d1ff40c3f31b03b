"""The runner builds API Gateway HTTP API 2.0 events and reads responses as AWS does."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from giftmarket_local.runner import build_http_api_event, response_from_result
from giftmarket_local.template import Route

ROUTE = Route("POST", "/api/products/{product_id}/buy-now", "CommandApiFunction")


def event(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "method": "POST",
        "raw_path": "/api/products/P1/buy-now",
        "raw_query": "",
        "headers": [("Content-Type", "application/json"), ("Host", "127.0.0.1:3000")],
        "body": b'{"price": 4500}',
        "route": ROUTE,
        "path_parameters": {"product_id": "P1"},
        "now": datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
    }
    args.update(overrides)
    return build_http_api_event(**args)  # type: ignore[arg-type]


def test_event_carries_route_key_path_parameters_and_text_body() -> None:
    e = event()
    assert e["version"] == "2.0"
    assert e["routeKey"] == "POST /api/products/{product_id}/buy-now"
    assert e["pathParameters"] == {"product_id": "P1"}
    assert e["body"] == '{"price": 4500}' and e["isBase64Encoded"] is False
    context = e["requestContext"]
    assert isinstance(context, dict)
    assert context["http"]["method"] == "POST"
    assert context["timeEpoch"] == 1795316400000
    assert context["time"] == "22/Nov/2026:03:00:00 +0000"


def test_headers_are_lower_cased_and_repeats_joined_with_commas() -> None:
    e = event(headers=[("X-Trace", "a"), ("x-trace", "b"), ("Content-Type", "application/json")])
    assert e["headers"] == {"x-trace": "a,b", "content-type": "application/json"}


def test_cookies_move_out_of_the_headers() -> None:
    e = event(headers=[("Cookie", "a=1; b=2")])
    assert e["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in e["headers"]  # type: ignore[operator]


def test_repeated_query_parameters_are_joined_and_raw_string_kept() -> None:
    e = event(raw_query="limit=10&sort=price&sort=latest")
    assert e["rawQueryString"] == "limit=10&sort=price&sort=latest"
    assert e["queryStringParameters"] == {"limit": "10", "sort": "price,latest"}


def test_binary_body_is_base64_encoded() -> None:
    payload = bytes(range(256))
    e = event(headers=[("Content-Type", "image/png")], body=payload)
    assert e["isBase64Encoded"] is True
    assert base64.b64decode(str(e["body"])) == payload


def test_absent_parts_are_left_out() -> None:
    e = event(body=b"", path_parameters={}, raw_query="")
    assert "body" not in e and "pathParameters" not in e and "queryStringParameters" not in e


def test_full_response_keeps_status_headers_and_cookies() -> None:
    response = response_from_result(
        {
            "statusCode": 201,
            "headers": {"content-type": "application/json", "x-consistency-token": "t"},
            "cookies": ["session=1; HttpOnly"],
            "body": '{"ok": true}',
            "isBase64Encoded": False,
        }
    )
    assert response.status == 201
    assert ("set-cookie", "session=1; HttpOnly") in response.headers
    assert ("x-consistency-token", "t") in response.headers
    assert json.loads(response.body) == {"ok": True}


def test_base64_response_body_is_decoded() -> None:
    raw = b"\x89PNG\r\n"
    response = response_from_result(
        {"statusCode": 200, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    )
    assert response.body == raw


def test_bare_return_value_becomes_200_json() -> None:
    response = response_from_result({"hello": "world"})
    assert (response.status, json.loads(response.body)) == (200, {"hello": "world"})
