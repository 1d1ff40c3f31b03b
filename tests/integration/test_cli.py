"""`giftmarket` run as a real process against the test stack."""

from __future__ import annotations

import json

from tests.conftest import giftmarket_cli

from giftmarket_local.stack import Stack


def test_giftmarket_health_reports_the_stack_it_is_pointed_at(stack: Stack) -> None:
    result = giftmarket_cli(stack, "health")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["primary"], report["replica"], report["cache"]) == ("ok", "ok", "ok")
