"""Calling the Lambda handlers in-process as API Gateway would, with the projector fed by
hand: the client the end-to-end and security tests drive the whole application with."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select
from tests.support.outbox import outbox_envelopes
from tests.support.stack import fresh_read_models
from tests.support.vouchers import voucher_facts

from giftmarket.adapters import tables
from giftmarket.bootstrap import Container, bootstrap, set_container
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply
from giftmarket_local.stack import Stack


@dataclass
class HandlerClient:
    invoker: LocalInvoker
    stack: Stack
    container: Container
    projected_up_to: str

    def project(self) -> None:
        """Hand every outbox event since the last call to the projector (which may write
        more: the welcome coupon), until there are none."""
        database = self.container.database
        while events := outbox_envelopes(database, tables.outbox.c.id > self.projected_up_to):
            for envelope in events:
                self.container.projector.handle(envelope)
            self.projected_up_to = events[-1].outbox_id

    def settle(self) -> None:
        """Read models and replica hold every command so far."""
        self.project()
        self.stack.wait_replica_caught_up()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        *,
        authorization: str | None = None,
        headers: dict[str, str] | None = None,
        source_ip: str = "127.0.0.1",
    ) -> Reply:
        headers = {"content-type": "application/json", **(headers or {})}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if authorization is not None:
            headers["authorization"] = authorization
        data = b"" if body is None else json.dumps(body).encode()
        return self.invoker.http(method, path, body=data, headers=headers, source_ip=source_ip)

    def command(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        reply = self.call(method, path, body, token)
        assert reply.status in (200, 201, 204), reply
        return reply.body

    def query(self, path: str, token: str | None = None) -> Any:
        """Queries read the read models, or the replica: both get every command so far."""
        self.settle()
        reply = self.call("GET", path, token=token)
        assert reply.status == 200, reply
        assert reply.headers["content-type"] == "application/json"
        return reply.body


PASSWORD = "handler-client-password-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"voucher" * 100


@dataclass(frozen=True)
class User:
    user_id: str
    token: str
    email: str


class MarketClient(HandlerClient):
    """A HandlerClient that makes the market's parts: users, products, uploaded images."""

    def sign_up(self, email: str | None = None) -> User:
        email = email or f"{uuid.uuid4().hex}@client.test"
        body = {"email": email, "password": PASSWORD, "nickname": "client"}
        reply = self.call("POST", "/api/auth/signup", body)
        if reply.status == 409:  # an admin, signed up earlier in the session
            reply = self.call("POST", "/api/auth/login", {"email": email, "password": PASSWORD})
        assert reply.status in (200, 201), reply
        return User(reply.body["user_id"], reply.body["token"], email)

    def new_product(self, admin: User, category: str | None = None) -> str:
        body = {
            "name": f"Gift {uuid.uuid4().hex[:10]}",
            "brand": "Client Bakery",
            "category": category or f"cat-{uuid.uuid4().hex[:8]}",
            "face_value": 6000,
        }
        return str(self.command("POST", "/api/products", body, admin.token)["product_id"])

    def uploaded_image(self, owner: User) -> str:
        """An image slot, with its voucher PUT to the presigned URL (LocalStack S3)."""
        slot = self.command("POST", "/api/images", {"content_type": "image/png"}, owner.token)
        status, _ = http_put(slot["upload_url"], PNG, "image/png")
        assert status == 200
        return str(slot["image_id"])

    def voucher(self, days: int = 30) -> dict[str, str]:
        """A sell bid's or sell-now's voucher facts: a barcode no test used, valid `days`
        days after today in Korea."""
        return voucher_facts(days)


def http_put(url: str, data: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - LocalStack
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


C = TypeVar("C", bound=HandlerClient)


@contextmanager
def handler_client(kind: type[C], settings: Settings, stack: Stack) -> Iterator[C]:
    """A client over a container of `settings`, installed as the handlers' container. Redis
    first gets what earlier tests wrote to the database without projecting it."""
    fresh_read_models(settings)
    container = bootstrap(settings)
    set_container(container)
    with container.database.writer.connect() as conn:
        start = conn.execute(select(func.max(tables.outbox.c.id))).scalar() or ""
    try:
        yield kind(LocalInvoker(), stack, container, start)
    finally:
        set_container(None)
        container.close()
