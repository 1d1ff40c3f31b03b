"""Runs one command for an HTTP request and shapes the answer.

The command executor owns the transaction and the retries; this adds what HTTP promises:
- Idempotency-Key: claimed, with the response stored, in the command's own transaction, so
  a retry gets the first response and the effect happens once.
- X-Consistency-Token on every command response, naming what the command wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel

from giftmarket.bootstrap import Container
from giftmarket.commands.executor import Handler, IdempotencyClaim
from giftmarket.commands.ports import Committed, StoredResponse
from giftmarket.consistency import HEADER as CONSISTENCY_HEADER
from giftmarket.consistency import ConsistencyToken
from giftmarket.http.deps import ContainerDep
from giftmarket.observability import metrics

R = TypeVar("R")

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
ANONYMOUS_SCOPE = "anonymous"


class InvalidIdempotencyKey(Exception):
    """The Idempotency-Key header is not 1–255 printable ASCII characters (→ 422)."""


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
        handler: Handler[R],
        *,
        status: int,
        present: Callable[[R], dict[str, Any] | None],
        scope: str = ANONYMOUS_SCOPE,
        body: BaseModel | None = None,
    ) -> Response:
        def respond(result: R, written: Committed) -> StoredResponse:
            content = present(result)
            token = ConsistencyToken(written.outbox_ids, written.versions).encode()
            return StoredResponse(
                status=status,
                body="" if content is None else json.dumps(content, separators=(",", ":")),
                headers={CONSISTENCY_HEADER: token},
            )

        metrics.add_metric(name="Commands", unit=MetricUnit.Count, value=1)
        executor = self.container.command_executor
        key = self.idempotency_key
        if key is None:
            result, committed = executor.execute(handler)
            return _http(respond(result, committed))
        if not _KEY.match(key):
            raise InvalidIdempotencyKey()
        method, path = self.request.method, self.request.url.path
        claim = IdempotencyClaim(scope, key, method, path, fingerprint(method, path, body))
        outcome = executor.execute_idempotent(handler, claim, respond)
        return _http(outcome.response, {"Idempotent-Replayed": "true"} if outcome.replayed else {})


def _http(stored: StoredResponse, extra: dict[str, str] | None = None) -> Response:
    headers = {**stored.headers, **(extra or {})}
    if not stored.body:
        return Response(status_code=stored.status, headers=headers)
    return Response(
        content=stored.body,
        status_code=stored.status,
        headers=headers,
        media_type="application/json",
    )


async def command_runner(
    container: ContainerDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> CommandRunner:
    return CommandRunner(container, request, idempotency_key)


Run = Annotated[CommandRunner, Depends(command_runner)]
