"""`giftmarket` run as a real process against the test stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from giftmarket_local.stack import Stack


def test_giftmarket_health_reports_the_stack_it_is_pointed_at(stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "giftmarket.cli", "health"],
        env={**os.environ, **stack.config.app_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["primary"], report["replica"], report["cache"]) == ("ok", "ok", "ok")
