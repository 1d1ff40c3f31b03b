"""The process's metric set when invocations run at once in one process's threads, as the
local runner's containers and the in-process load tests run them (Lambda never does). A
read-outage test under six clients once got a 500 from Powertools' flush:
SchemaValidationError, "Must contain at least one metric"."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from giftmarket import observability
from giftmarket.observability import NAMESPACE, LockedEMFProvider

THREADS = 6
INVOCATIONS = 400


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switched every microsecond, so that the interleavings a loaded machine makes
    now and then happen in every run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_invocations_flushing_at_once_neither_fail_nor_lose_or_repeat_a_metric(
    frequent_switches: None, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = LockedEMFProvider(namespace=NAMESPACE)
    errors: list[BaseException] = []

    def container() -> None:
        try:
            for _ in range(INVOCATIONS):
                provider.add_metric(name="Commands", unit=MetricUnit.Count, value=1)
                provider.flush_metrics()  # as log_metrics does at the end of an invocation
        except Exception as exc:  # noqa: BLE001 - what a handler would have answered 500 with
            errors.append(exc)

    threads = [threading.Thread(target=container) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(len(r["Commands"]) for r in records) == THREADS * INVOCATIONS


def test_the_handlers_metrics_record_through_the_locked_provider() -> None:
    assert isinstance(observability.metrics.provider, LockedEMFProvider)
