"""The process's Powertools metrics, shared by the handler wrapper and the HTTP layer."""

from __future__ import annotations

import os

from aws_lambda_powertools import Metrics

NAMESPACE = "giftmarket"

# Powertools keeps one metric set per process; every module records into this instance and
# the handler wrapper flushes it once per invocation.
metrics = Metrics(namespace=NAMESPACE)


def metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "false").strip().lower() in ("1", "true")
