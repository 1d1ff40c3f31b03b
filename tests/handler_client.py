"""Calling the Lambda handlers in-process as API Gateway would, with the projector fed by
hand: the client the end-to-end and security tests drive the whole application with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select
from tests.conftest import fresh_read_models, outbox_envelopes

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
    ) -> Reply:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if authorization is not None:
            headers["authorization"] = authorization
        data = b"" if body is None else json.dumps(body).encode()
        return self.invoker.http(method, path, body=data, headers=headers)

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
