"""RFC 9457 problem details: every error leaves the API through this one module.

Typed exceptions map to a status and a machine-readable `code` here and nowhere else;
nothing matches on error text.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from giftmarket.adapters.errors import DatabaseUnavailable
from giftmarket.commands.context import InvalidCredentials, Unauthenticated
from giftmarket.commands.ports import (
    CommandContention,
    IdempotencyKeyReused,
    InvalidToken,
    ProviderUnavailable,
)
from giftmarket.domain.errors import DomainError, Forbidden, InvalidField, NotFound
from giftmarket.domain.sign_in import TooManyAttempts
from giftmarket.http.auth import NotAuthenticated
from giftmarket.http.command_runner import InvalidIdempotencyKey
from giftmarket.lazy import lazy
from giftmarket.observability import metrics

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 2

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


# -- what routes declare they may answer (OpenAPI `responses`), for both APIs -------------------

Responses = dict[int | str, dict[str, Any]]


def problem_responses(descriptions: dict[int, str]) -> Responses:
    """OpenAPI `responses` for statuses answered with problem details."""
    return {
        status: {"description": text, "content": {PROBLEM_JSON: {}}}
        for status, text in descriptions.items()
    }


def with_conflicts(responses: Responses, *conflicts: type[DomainError]) -> Responses:
    """`responses` whose 409 names, by `code`, the conflicts the route may answer."""
    codes = ", ".join(f"`{conflict.code}`" for conflict in conflicts)
    return responses | problem_responses({409: f"Business conflict; `code` is one of {codes}"})


_NOT_SIGNED_IN = "Not signed in, or the token is invalid or expired"
_INVALID = "Invalid request"

COMMAND_ERRORS = problem_responses(
    {
        400: "The body is not JSON",
        401: _NOT_SIGNED_IN,
        404: "Not found (including other users' objects)",
        409: "Business conflict; see `code`",
        422: _INVALID,
        503: "The primary database is unavailable; retry after Retry-After seconds",
    }
)
ADMIN_ERRORS = COMMAND_ERRORS | problem_responses({403: "Signed in, but not an admin"})
LOGIN_ERRORS = COMMAND_ERRORS | {
    429: {
        "description": "Too many failed logins for this email or from this address",
        "content": {PROBLEM_JSON: {}},
        "headers": {
            "Retry-After": {
                "description": "Seconds until the failures' window has passed",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
}
SOCIAL_SIGN_IN_ERRORS = COMMAND_ERRORS | problem_responses(
    {
        401: "The ID token is not valid (`invalid_token`): forged, expired, or for another "
        "application or issuer",
        404: "No such provider",
        503: "The provider's keys or the primary database cannot be reached; retry after "
        "Retry-After seconds",
    }
)
QUERY_ERRORS = problem_responses(
    {
        401: _NOT_SIGNED_IN,
        404: "Not found (including other users' orders)",
        422: _INVALID,
        503: "No database can answer now; retry after Retry-After seconds",
    }
)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://giftmarket.example/problems/{code.replace('_', '-')}",
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only location, message and type: the raw input may be huge or hold secrets.
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    return problem(422, "validation_error", "The request is not valid.", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return problem(exc.status_code, code, detail, headers=dict(exc.headers or {}))


def unavailable(code: str, detail: str, *, metric: str, cause: Exception) -> JSONResponse:
    """A 503 for a part the request needs that is out of reach for now: retry later."""
    log.warning("%s: %s", code, cause)
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    return problem(503, code, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DatabaseUnavailable)
    detail = f"The {exc.role} database is unavailable; retry shortly."
    return unavailable("database_unavailable", detail, metric="DatabaseUnavailable", cause=exc)


async def _cache_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Only what lives in Redis alone (search history) gets here: read models fall back to SQL.
    detail = "The cache is unavailable; retry shortly."
    return unavailable("cache_unavailable", detail, metric="CacheUnavailable", cause=exc)


# Domain errors by class (most specific first); any other DomainError is a 409 conflict.
_STATUS_BY_DOMAIN_ERROR: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (InvalidField, 422),
    (InvalidCredentials, 401),
    (InvalidToken, 401),
    (Unauthenticated, 401),
)
_BEARER = {"WWW-Authenticate": 'Bearer realm="giftmarket"'}


def status_of(error: DomainError) -> int:
    return next((s for cls, s in _STATUS_BY_DOMAIN_ERROR if isinstance(error, cls)), 409)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = status_of(exc)
    metrics.add_metric(name="RequestsRefused", unit=MetricUnit.Count, value=1)
    headers = _BEARER if status == 401 else None
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidField):
        extra["errors"] = [{"loc": ["body", exc.field], "msg": exc.detail, "type": exc.code}]
    return problem(status, exc.code, exc.detail, headers=headers, **extra)


async def _too_many_attempts(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyAttempts)
    metrics.add_metric(name="SignInLockouts", unit=MetricUnit.Count, value=1)
    retry_after = {"Retry-After": str(exc.retry_after_seconds)}
    return problem(429, exc.code, exc.detail, headers=retry_after)


async def _provider_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProviderUnavailable)
    log.warning("provider_unavailable: %s", exc)
    metrics.add_metric(name="ProviderUnavailable", unit=MetricUnit.Count, value=1)
    detail = "The sign-in provider's keys cannot be reached; retry shortly."
    retry_after = {"Retry-After": str(exc.retry_after_seconds)}
    return problem(503, "provider_unavailable", detail, headers=retry_after)


async def _not_authenticated(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotAuthenticated)
    return problem(401, "unauthorized", exc.detail, headers=_BEARER)


async def _invalid_idempotency_key(request: Request, exc: Exception) -> JSONResponse:
    return problem(
        422,
        "invalid_idempotency_key",
        "Idempotency-Key must be 1 to 255 printable ASCII characters.",
    )


async def _idempotency_key_reused(request: Request, exc: Exception) -> JSONResponse:
    return problem(
        422,
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request; use a new key.",
    )


async def _contention(request: Request, exc: Exception) -> JSONResponse:
    log.warning("command gave up after retries: %r", exc.__cause__)
    metrics.add_metric(name="CommandContention", unit=MetricUnit.Count, value=1)
    return problem(
        503,
        "contention",
        "Too many concurrent changes to the same data; retry shortly.",
        headers={"Retry-After": "1"},
    )


def _is_secret_unreadable(exc: Exception) -> bool:
    """Secrets Manager could not be read (through Powertools Parameters). Its errors are
    told apart by class without importing Powertools' parameters package here (a third
    of a second of cold start): if it was never imported, none of its errors was raised."""
    module = sys.modules.get("aws_lambda_powertools.utilities.parameters.exceptions")
    return module is not None and isinstance(
        exc, (module.GetParameterError, module.TransformParameterError)
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if _is_secret_unreadable(exc):
        # A key or a password the request needs is out of reach for now (throttling, an
        # endpoint down): as for a database outage, the client should retry, not give up.
        detail = "A secret this request needs cannot be read right now; retry shortly."
        return unavailable("secrets_unavailable", detail, metric="SecretsUnavailable", cause=exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    metrics.add_metric(name="UnhandledErrors", unit=MetricUnit.Count, value=1)
    return problem(500, "internal_error", "An unexpected error occurred.")


class ProblemApp(FastAPI):
    """A FastAPI app answering its errors with problem details (`install_problem_handlers`).

    Redis errors get their answer (503 cache_unavailable) when the app builds its middleware
    on its first request, not when it is made: their class is redis's, and importing redis
    at import time would be a cold-start cost even of the command API, which never uses it.
    """

    def build_middleware_stack(self) -> ASGIApp:
        self.add_exception_handler(redis.RedisError, _cache_unavailable)
        return super().build_middleware_stack()


def install_problem_handlers(app: ProblemApp) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    # redis.RedisError → _cache_unavailable: ProblemApp.build_middleware_stack
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(TooManyAttempts, _too_many_attempts)  # a DomainError, but 429
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(ProviderUnavailable, _provider_unavailable)
    app.add_exception_handler(InvalidIdempotencyKey, _invalid_idempotency_key)
    app.add_exception_handler(IdempotencyKeyReused, _idempotency_key_reused)
    app.add_exception_handler(CommandContention, _contention)
    app.add_exception_handler(Exception, _unexpected)
