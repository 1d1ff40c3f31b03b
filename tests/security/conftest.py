"""The security probes' client: commands through the command Lambda handler and queries
through the query Lambda handler, invoked in-process as API Gateway would (as in
tests/e2e/test_query_api.py), against the test stack's MariaDB, Redis and LocalStack S3.

Before a query the client lets the projector catch up with the outbox, so that what an
owner can see is really in the read models when a stranger is refused it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from tests.handler_client import HandlerClient, handler_client

from giftmarket.domain.ids import new_id
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

# An admin of these probes' own: the usual admin address may have been signed up by an
# earlier test with another password.
ADMIN_EMAIL = f"security-admin-{uuid.uuid4().hex[:12]}@probe.test"
PASSWORD = "security-probe-password-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"voucher" * 100


@dataclass(frozen=True)
class User:
    user_id: str
    token: str
    email: str


class Client(HandlerClient):
    def sign_up(self, email: str | None = None) -> User:
        email = email or f"{uuid.uuid4().hex}@security.test"
        body = {"email": email, "password": PASSWORD, "nickname": "probe"}
        reply = self.call("POST", "/api/auth/signup", body)
        if reply.status == 409:  # the admin, signed up earlier in the session
            reply = self.call("POST", "/api/auth/login", {"email": email, "password": PASSWORD})
        assert reply.status in (200, 201), reply
        return User(reply.body["user_id"], reply.body["token"], email)

    def new_product(self, admin: User) -> str:
        body = {
            "name": f"Probe {uuid.uuid4().hex[:10]}",
            "brand": "Security Bakery",
            "category": f"sec-{uuid.uuid4().hex[:8]}",
            "face_value": 6000,
        }
        return str(self.command("POST", "/api/products", body, admin.token)["product_id"])

    def uploaded_image(self, owner: User) -> str:
        slot = self.command("POST", "/api/images", {"content_type": "image/png"}, owner.token)
        status, _ = http_put(slot["upload_url"], PNG, "image/png")
        assert status == 200
        return str(slot["image_id"])

    def sql(self, statement: str) -> str:
        """One value (or tab-separated row) read from the primary."""
        return self.stack.primary.sql(statement)


def http_put(url: str, data: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - LocalStack
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def missing_id() -> str:
    """A well-formed id that names no row."""
    return new_id()


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Client]:
    # No events queue: the client projects the outbox itself.
    settings = make_settings(
        events_queue_url=None, replica_check_interval_seconds=0, admin_emails=ADMIN_EMAIL
    )
    with handler_client(Client, settings, stack) as client:
        yield client


@pytest.fixture(scope="module")
def admin(client: Client) -> User:
    return client.sign_up(ADMIN_EMAIL)
