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

from giftmarket.observability import with_metrics, with_tracing

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

    wrapped: LambdaHandler = handler
    return wrapped
