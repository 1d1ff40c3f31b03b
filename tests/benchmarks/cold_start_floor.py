"""The cold-start floor of an API handler of this stack (bench_cold_start.py's `floor`).

The least a handler can import and do on a first request that reaches its stores, given what
the stack is built from: bench_cold_start.py's baseline (a one-route FastAPI app in Mangum),
wrapped in Powertools' Logger, Tracer (X-Ray, the stack's traced libraries patched) and
Metrics as every function is; its one route runs `SELECT 1` through a SQLAlchemy engine over
PyMySQL and a GET through redis-py, both over TLS verified against the CA bundle, as the
template deploys the stores. Nothing of giftmarket is imported: the gap between a handler and
this floor is what the project's own code costs, and this floor over the baseline is what
the stack's parts cost whoever writes the code.

It reads the environment bench_cold_start.py gives every child (stores on a refused port), so
its first request fails fast and answers 503, as the handlers' do.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import redis
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mangum import Mangum
from sqlalchemy import URL, Engine, create_engine, text

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "giftmarket-floor")
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, patch_modules=["botocore", "pymysql"])
metrics = Metrics(namespace="giftmarket-floor")
app = FastAPI()
stores: list[tuple[Engine, redis.Redis]] = []


def build_stores() -> tuple[Engine, redis.Redis]:
    """Built by the first request, as a handler's container is."""
    if not stores:
        tls = ssl.create_default_context(cafile=os.environ["DB_SSL_CA"])
        engine = create_engine(
            URL.create(
                "mysql+pymysql",
                username="floor",
                password="floor",  # noqa: S106 - nothing answers on the refused port
                host=os.environ["DB_PRIMARY_HOST"],
                port=int(os.environ["DB_PRIMARY_PORT"]),
                database="giftmarket",
            ),
            connect_args={"ssl": tls, "connect_timeout": 1},
        )
        timeout = float(os.environ["REDIS_TIMEOUT_SECONDS"])
        cache = redis.Redis.from_url(
            os.environ["REDIS_URL"],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            ssl_cert_reqs="required",
            ssl_min_version=ssl.TLSVersion.TLSv1_2,
        )
        stores.append((engine, cache))
    return stores[0]


@app.get("/health")
def health() -> Any:
    engine, cache = build_stores()
    try:
        cache.get("floor")
    except redis.RedisError:
        pass  # a handler falls back to SQL
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return {"status": "ok"}


asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = asgi(event, context)
    return response
