"""The process's Powertools metrics, shared by the handler wrapper and the HTTP layer."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Metrics

H = TypeVar("H", bound=Callable[..., Any])

NAMESPACE = "giftmarket"

# Powertools keeps one metric set per process; every module records into this instance and
# the handler wrapper flushes it once per invocation.
metrics = Metrics(namespace=NAMESPACE)


def metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "false").strip().lower() in ("1", "true")


def with_metrics(handler: H) -> H:
    """Powertools' log_metrics (one EMF record per invocation, cold start included), plus
    what it lacks: with metrics disabled nothing is flushed, so nothing is cleared, and a
    warm container's metric set would grow forever; it is cleared after each invocation."""
    logged = metrics.log_metrics(handler, capture_cold_start_metric=True)

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return logged(*args, **kwargs)
        finally:
            if metrics_disabled():
                metrics.clear_metrics()

    return wrapper  # type: ignore[return-value]
