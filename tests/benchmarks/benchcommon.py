"""Shared by the benchmark programs: the stack they run on, percentiles, results, plots."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from giftmarket.settings import Settings
from giftmarket_local.migrations import reset, upgrade
from giftmarket_local.stack import REPO_ROOT, Stack, StackConfig

OUT = REPO_ROOT / "bench-results"


@contextmanager
def bench_stack(*, fresh_schema: bool = True) -> Iterator[Stack]:
    """The test profile's stack, started if needed and stopped again if we started it."""
    stack = Stack(StackConfig.for_profile("test"))
    started = stack.up()
    try:
        if fresh_schema:
            reset(stack.config)
        else:
            upgrade(stack.config, "head")
        yield stack
    finally:
        stack.stop(started)


def bench_settings(stack: Stack, **overrides: Any) -> Settings:
    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    return stack.config.app_settings(**overrides)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def write_result(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
