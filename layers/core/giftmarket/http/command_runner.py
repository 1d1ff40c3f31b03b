"""Runs one command for an HTTP request and shapes the answer.

The command executor owns the transaction and the retries; this adds what HTTP promises:
- Idempotency-Key: claimed, with the response stored, in the command's own transaction, so
  a retry gets the first response and the effect happens once.
- X-Consistency-Token on every command response, naming what the command wrote.

Nothing secret is kept in an idempotency record: the request is remembered by a keyed
fingerprint (an HMAC with a server-side key, so a database copy does not allow guessing the
passwords a body held), and the routes that answer with a bearer token (signup, login,
social sign-in) store their answer without it: a replay issues a fresh token, and only after
the credentials verify again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from giftmarket.bootstrap import Container
from giftmarket.commands.accounts import Account
from giftmarket.commands.executor import Command, IdempotencyClaim
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


def fingerprint(key: bytes, method: str, path: str, body: BaseModel | None) -> str:
    """The request's HMAC-SHA256 under the server's fingerprint key, hex."""
    payload = body.model_dump(mode="json") if body is not None else None
    canonical = json.dumps([method, path, payload], sort_keys=True, separators=(",", ":"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """What a route that answers with a bearer token adds to the runner. The command's
    answer (what is stored) holds `user_id`; the token is added to each answer, never
    stored."""

    # Run again on a replay: the request's credentials must still sign in as the stored
    # answer's user, else the replay is refused with `refused`.
    check: Command[Account]
    issue_token: Callable[[str], str]
    refused: Callable[[], Exception]


@dataclass
class CommandRunner:
    container: Container
    request: Request
    idempotency_key: str | None

    def __call__(
        self,
        command: Command[R],
        *,
        present: Callable[[R], dict[str, Any] | None],
        scope: str = ANONYMOUS_SCOPE,
        body: BaseModel | None = None,
        credentials: Credentials | None = None,
        status_of: Callable[[R], int] | None = None,
    ) -> Response:
        """`body` is what an Idempotency-Key remembers the request by (as a keyed
        fingerprint); `status_of` chooses the success status by result, where the route's
        own is not the only one."""
        status = route_status(self.request)

        def respond(result: R, written: Committed) -> StoredResponse:
            content = present(result)
            token = ConsistencyToken(written.outbox_ids, written.versions).encode()
            return StoredResponse(
                status=status if status_of is None else status_of(result),
                body="" if content is None else json.dumps(content, separators=(",", ":")),
                headers={CONSISTENCY_HEADER: token},
            )

        metrics.add_metric(name="Commands", unit=MetricUnit.Count, value=1)
        executor = self.container.command_executor
        key = self.idempotency_key
        if key is None:
            result, committed = executor.execute(command)
            return _http(_with_token(respond(result, committed), credentials))
        if not _KEY.match(key):
            raise InvalidIdempotencyKey()
        method, path = self.request.method, self.request.url.path
        request_hash = fingerprint(self.container.fingerprint_key, method, path, body)
        claim = IdempotencyClaim(scope, key, method, path, request_hash)
        outcome = executor.execute_idempotent(command, claim, respond)
        if outcome.replayed and credentials is not None:
            # The same body, so the same credentials: still checked again (a password may
            # have changed since), and answered as a failed sign-in would be if they fail.
            account, _ = executor.execute(credentials.check)
            if account.user_id != _stored_user_id(outcome.response):
                raise credentials.refused()
        extra = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
        return _http(_with_token(outcome.response, credentials), extra)


def route_status(request: Request) -> int:
    """The success status of the matched route: stated once, in its decorator (FastAPI
    answers 200 for a route that states none)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        raise RuntimeError("a command runs only inside a FastAPI route")
    return route.status_code if route.status_code is not None else 200


def _stored_user_id(stored: StoredResponse) -> str:
    return str(json.loads(stored.body)["user_id"])


def _with_token(stored: StoredResponse, credentials: Credentials | None) -> StoredResponse:
    """The answer with a freshly issued bearer token for its user, on credential routes."""
    if credentials is None:
        return stored
    content = json.loads(stored.body)
    content["token"] = credentials.issue_token(str(content["user_id"]))
    return StoredResponse(stored.status, json.dumps(content, separators=(",", ":")), stored.headers)


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
