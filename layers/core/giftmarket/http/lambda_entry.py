"""The Lambda handler around an ASGI app: Powertools logging, tracing and metrics.

Each function's app.py is then one line: `handler = lambda_handler(create_..._app(), ...)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from fastapi import FastAPI
from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
from mangum.types import LambdaCognitoIdentity, LambdaMobileClientContext

from giftmarket import snapstart
from giftmarket.observability import metrics, with_metrics, with_tracing

# Mangum and Powertools each type the context object; the runtime passes one object to both.
# A request that records no metric of its own (a health check) is normal, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(app: FastAPI, *, service: str) -> LambdaHandler:
    logger = Logger(service=service)
    # The metrics' service dimension comes from POWERTOOLS_SERVICE_NAME, set per function.
    # Problem details are text too: without this Mangum would base64-encode every error body.
    asgi = Mangum(
        app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/problem+json"]
    )

    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
    )
    @with_tracing(service)
    @with_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response: dict[str, Any] = asgi(event, context)
        return response

    @snapstart.before_snapshot
    def warm() -> None:
        # Straight to Mangum: through `handler` it would log and count as an invocation,
        # and use up Powertools' cold-start flag before the first real one.
        answer = asgi(PRIME_EVENT, PrimeContext())
        # Whatever it recorded would be flushed by every restored environment's first call.
        metrics.clear_metrics()
        if answer["statusCode"] != 404:
            raise RuntimeError(f"the priming request was answered {answer['statusCode']}")

    wrapped: LambdaHandler = handler
    return wrapped


# A request no route matches, so it touches no store: it runs Mangum, the middleware, the
# routing and a problem answer once before a SnapStart snapshot (snapstart.py).
PRIME_EVENT: dict[str, Any] = {
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/snapstart/prime",
    "rawQueryString": "",
    "headers": {"host": "snapstart.invalid", "accept": "application/json"},
    "requestContext": {
        "http": {
            "method": "GET",
            "path": "/snapstart/prime",
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "snapstart",
        },
        "requestId": "snapstart-prime",
        "routeKey": "$default",
        "stage": "$default",
    },
    "isBase64Encoded": False,
}


class PrimeContext:
    """The context object's attributes (mangum.types.LambdaContext); there is no invocation."""

    function_name = "snapstart-prime"
    function_version = "$LATEST"
    invoked_function_arn = ""
    memory_limit_in_mb = 0
    aws_request_id = "snapstart-prime"
    log_group_name = ""
    log_stream_name = ""
    identity: LambdaCognitoIdentity | None = None
    client_context: LambdaMobileClientContext | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 0
