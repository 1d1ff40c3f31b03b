"""Runs one command as one unit of work on the primary and shapes the HTTP answer.

Around the handler it keeps three promises of the API:
- Idempotency-Key: the key is claimed in the command's own transaction and the response
  stored there too, so a retry gets the first response and the effect happens once — a
  crash can never leave an effect without its record or a record without its effect.
- X-Consistency-Token on every response, naming what the command wrote.
- Deadlocks, lock-wait timeouts and stale rows are retried a few times, then answered
  503 with Retry-After; never a 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from giftmarket.adapters.db import mysql_error_code
from giftmarket.adapters.repositories import StaleAggregate
from giftmarket.bootstrap import Container
from giftmarket.commands.context import CommandContext
from giftmarket.commands.ports import StoredResponse, UnitOfWork
from giftmarket.consistency import HEADER as CONSISTENCY_HEADER
from giftmarket.consistency import ConsistencyToken
from giftmarket.http.deps import ContainerDep

log = logging.getLogger(__name__)

R = TypeVar("R")

# 1213: deadlock victim, 1205: lock wait timeout — the transaction can simply run again.
RETRYABLE_MYSQL_ERRORS = frozenset({1205, 1213})
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
ANONYMOUS_SCOPE = "anonymous"


class InvalidIdempotencyKey(Exception):
    """The Idempotency-Key header is not 1–255 printable ASCII characters (→ 422)."""


class CommandContention(Exception):
    """Still deadlocking after every retry (→ 503 with Retry-After)."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StaleAggregate):
        return True
    return isinstance(exc, DBAPIError) and mysql_error_code(exc) in RETRYABLE_MYSQL_ERRORS


def fingerprint(method: str, path: str, body: BaseModel | None) -> str:
    payload = body.model_dump(mode="json") if body is not None else None
    canonical = json.dumps([method, path, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class CommandRunner:
    container: Container
    request: Request
    idempotency_key: str | None

    def __call__(
        self,
        handler: Callable[[UnitOfWork, CommandContext], R],
        *,
        status: int,
        present: Callable[[R], dict[str, Any] | None],
        scope: str = ANONYMOUS_SCOPE,
        body: BaseModel | None = None,
    ) -> Response:
        key = self.idempotency_key
        if key is not None and not _KEY.match(key):
            raise InvalidIdempotencyKey()
        request_hash = fingerprint(self.request.method, self.request.url.path, body)
        ctx = self.container.command_context
        attempts = self.container.settings.command_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._run_once(handler, ctx, status, present, scope, key, request_hash)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                if attempt == attempts:
                    raise CommandContention() from exc
                log.info("command retried after %s (attempt %d)", type(exc).__name__, attempt)
                time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    def _run_once(
        self,
        handler: Callable[[UnitOfWork, CommandContext], R],
        ctx: CommandContext,
        status: int,
        present: Callable[[R], dict[str, Any] | None],
        scope: str,
        key: str | None,
        request_hash: str,
    ) -> Response:
        with self.container.unit_of_work() as uow:
            if key is not None:
                stored = uow.idempotency.claim(
                    scope,
                    key,
                    self.request.method,
                    self.request.url.path,
                    request_hash,
                    ctx.clock(),
                )
                if stored is not None:
                    return _replay(stored)
            result = handler(uow, ctx)
            content = present(result)
            written = uow.flush()
            token = ConsistencyToken(written.last_outbox_id, written.versions).encode()
            response = StoredResponse(
                status=status,
                body="" if content is None else json.dumps(content, separators=(",", ":")),
                headers={CONSISTENCY_HEADER: token},
            )
            if key is not None:
                uow.idempotency.complete(scope, key, response)
            uow.commit()
        return _respond(response)


def _respond(stored: StoredResponse, extra: dict[str, str] | None = None) -> Response:
    headers = {**stored.headers, **(extra or {})}
    if not stored.body:
        return Response(status_code=stored.status, headers=headers)
    return Response(
        content=stored.body,
        status_code=stored.status,
        headers=headers,
        media_type="application/json",
    )


def _replay(stored: StoredResponse) -> Response:
    return _respond(stored, {"Idempotent-Replayed": "true"})


def command_runner(
    container: ContainerDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> CommandRunner:
    return CommandRunner(container, request, idempotency_key)


Run = Annotated[CommandRunner, Depends(command_runner)]
