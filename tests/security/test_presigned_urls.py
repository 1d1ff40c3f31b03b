"""Presigned S3 URLs: the upload URL of POST /api/images and the download URL of
GET /api/orders/{id}/gifticon each name exactly one key (the image's, images/<owner>/<id>),
live a few minutes, and sign that key, that method and (for uploads) that content type.

LocalStack does not check presigned signatures (its S3_SKIP_SIGNATURE_VALIDATION defaults to
on), so a PUT to another key would succeed there and prove nothing. The signature is
checked here instead, the way S3 checks it (SigV4 query auth, recomputed with the stack's
credentials): the genuine request verifies, and the same signature on another key, another
method, another content type or a longer expiry does not. The genuine URLs are also used
against LocalStack, to show they are the real thing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import pytest
from tests.support.handler_client import PNG, User, http_put
from tests.support.security import Client, missing_id

from giftmarket.adapters.images import (
    DOWNLOAD_URL_TTL_SECONDS,
    UPLOAD_URL_TTL_SECONDS,
    build_s3_client,
)

pytestmark = pytest.mark.e2e

A_FEW_MINUTES = 15 * 60


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def signature_valid(method: str, url: str, headers: dict[str, str] | None = None) -> bool:
    """Whether S3 would accept this request's SigV4 query signature (unsigned payload)."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    given = params.pop("X-Amz-Signature")
    signed = params["X-Amz-SignedHeaders"].split(";")
    sent = {"host": parts.netloc, **{k.lower(): v for k, v in (headers or {}).items()}}
    canonical = "\n".join(
        [
            method,
            quote(unquote(parts.path), safe="/-_.~"),
            "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params.items())),
            "".join(f"{name}:{sent.get(name, '').strip()}\n" for name in signed),
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in scope.split("/"):
        key = _hmac(key, part)
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), given)


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params[name] = value
    return urlunsplit(parts._replace(query=urlencode(params)))


def check_lifetime(url: str, ttl: int) -> None:
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert int(params["X-Amz-Expires"]) == ttl <= A_FEW_MINUTES
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - signed_at) < timedelta(minutes=1)


def image_key(client: Client, image_id: str) -> str:
    return client.sql(f"SELECT s3_key FROM giftmarket.images WHERE id = '{image_id}'")


def test_the_upload_url_signs_one_key_one_method_one_type_for_minutes(client: Client) -> None:
    owner, other = client.sign_up(), client.sign_up()
    slot = client.command("POST", "/api/images", {"content_type": "image/png"}, owner.token)
    url, image_id = slot["upload_url"], slot["image_id"]
    key = f"images/{owner.user_id}/{image_id}"
    assert image_key(client, image_id) == key
    bucket = client.container.settings.images_bucket
    path = urlsplit(url).path
    assert path == f"/{bucket}/{key}", url
    check_lifetime(url, UPLOAD_URL_TTL_SECONDS)
    signed_headers = dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"].split(";")
    assert {"host", "content-type"} <= set(signed_headers)

    png = {"Content-Type": "image/png"}
    assert signature_valid("PUT", url, png)  # the control: the verifier accepts the real thing
    forged = {
        "another image of the owner": with_path(url, f"/{bucket}/images/{owner.user_id}/x"),
        "the same id under another owner": with_path(
            url, f"/{bucket}/images/{other.user_id}/{image_id}"
        ),
        "outside images/": with_path(url, f"/{bucket}/settlements/{image_id}"),
        "the owner's prefix": with_path(url, f"/{bucket}/images/{owner.user_id}/"),
        "another bucket": with_path(url, f"/other-bucket/{key}"),
        "a week's expiry": with_param(url, "X-Amz-Expires", "604800"),
    }
    for name, forged_url in forged.items():
        assert not signature_valid("PUT", forged_url, png), name
    assert not signature_valid("PUT", url, {"Content-Type": "text/html"})
    assert not signature_valid("GET", url, png)
    assert not signature_valid("DELETE", url, png)

    # The genuine URL uploads to exactly that key.
    assert http_put(url, PNG, "image/png")[0] == 200
    s3 = build_s3_client("us-east-1", client.stack.config.localstack_url)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"images/{owner.user_id}/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]


def _trade(client: Client, admin: User) -> tuple[User, str, str]:
    seller, buyer = client.sign_up(), client.sign_up()
    product = client.new_product(admin)
    client.command("POST", "/api/points/charge", {"amount": 10_000}, buyer.token)
    image_id = client.uploaded_image(seller)
    ask = {"price": 5000, "image_id": image_id, **client.voucher()}
    client.command("POST", f"/api/products/{product}/sell-bids", ask, seller.token)
    order = client.command("POST", f"/api/products/{product}/buy-now", {"price": 5000}, buyer.token)
    return buyer, str(order["order_id"]), image_key(client, image_id)


def test_the_gifticon_url_signs_one_key_for_reading_for_minutes(
    client: Client, admin: User
) -> None:
    buyer, order, key = _trade(client, admin)
    url = client.query(f"/api/orders/{order}/gifticon", buyer.token)["download_url"]
    bucket = client.container.settings.images_bucket
    assert urlsplit(url).path == f"/{bucket}/{key}", url
    check_lifetime(url, DOWNLOAD_URL_TTL_SECONDS)

    assert signature_valid("GET", url)
    other_key = key.rsplit("/", 1)[0] + "/" + missing_id()
    assert not signature_valid("GET", with_path(url, f"/{bucket}/{other_key}"))
    assert not signature_valid("GET", with_path(url, f"/{bucket}/images/"))
    assert not signature_valid("GET", with_param(url, "X-Amz-Expires", "604800"))
    assert not signature_valid("PUT", url, {"Content-Type": "image/png"})
    assert not signature_valid("DELETE", url)

    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - LocalStack
        assert resp.read() == PNG
