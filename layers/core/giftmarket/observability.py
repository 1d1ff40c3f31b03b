"""The process's Powertools metrics, shared by the handler wrapper and the HTTP layer, and
the handlers' tracing."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from giftmarket import snapstart

H = TypeVar("H", bound=Callable[..., Any])

NAMESPACE = "giftmarket"


class LockedEMFProvider(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider, its metric set changed under one lock. Lambda runs one
    invocation at a time in a process, so the lock is never waited on there. The local
    runner's containers are threads of one process sharing this set: a flush could find
    it full, then serialize it after another container's flush had emptied it (Powertools
    raises SchemaValidationError: a 500 Lambda would not give), or iterate over it while a
    metric was added. Locally a record may still carry another container's metrics; no
    metric is lost or counted twice."""

    def __init__(self, **kwargs: Any) -> None:
        self._lock = threading.RLock()
        super().__init__(**kwargs)

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().add_metric(*args, **kwargs)

    def add_dimension(self, name: str, value: str) -> None:
        with self._lock:
            super().add_dimension(name, value)

    def add_metadata(self, key: str, value: Any) -> None:
        with self._lock:
            super().add_metadata(key, value)

    def clear_metrics(self) -> None:
        with self._lock:
            super().clear_metrics()

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        with self._lock:
            super().flush_metrics(raise_on_empty_metrics)


# One metric set per process; every module records into this instance and the handler
# wrapper flushes it once per invocation.
metrics = Metrics(provider=LockedEMFProvider(namespace=NAMESPACE))


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


# Only the libraries the functions use are patched: each patch costs cold-start time.
TRACED_MODULES = ("botocore", "pymysql")


def with_tracing(
    service: str, *, patch_modules: Sequence[str] = TRACED_MODULES
) -> Callable[[H], H]:
    """Powertools' `Tracer(service, patch_modules).capture_lambda_handler(capture_response=
    False)`, with the Tracer built when the first invocation arrives instead of at import.

    Building a Tracer imports the X-Ray SDK (and botocore with it) even when tracing is
    disabled: about 0.3 s of the HTTP handlers' import (bench_cold_start.py). The modules it
    patches are only called within invocations (clients and connections are made there,
    never at import), so patching just before the first one traces the same calls. With
    tracing on, the SDK's import moves to the first invocation; it is not saved."""

    def decorate(handler: H) -> H:
        lock = threading.Lock()
        traced: list[Callable[..., Any]] = []

        def build() -> Callable[..., Any]:
            with lock:
                if not traced:
                    tracer = Tracer(service=service, patch_modules=list(patch_modules))
                    traced.append(tracer.capture_lambda_handler(capture_response=False)(handler))
            return traced[0]

        # Under SnapStart the Tracer and its patches are built before the snapshot: the
        # SDK's import is then paid once per published version, not per environment.
        snapstart.before_snapshot(build)

        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return (traced[0] if traced else build())(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
