"""The environment of a `python -m giftmarket_local run` the tests start as a process."""

from __future__ import annotations

import os

# Set by coverage.py (patch = ["subprocess"]) so that Python children trace themselves.
_COVERAGE_CHILD = "COVERAGE_PROCESS_CONFIG"


def runner_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`, untraced by coverage: a traced runner took
    16 s instead of 3 to start (every import of a whole stack's handlers traced), and the
    handlers' code it runs is measured in process by the integration tests. The short-lived
    children (the CLI, the jobs) stay traced."""
    env = {name: value for name, value in os.environ.items() if name != _COVERAGE_CHILD}
    return {**env, **(extra or {})}
