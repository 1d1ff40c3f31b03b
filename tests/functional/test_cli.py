"""The giftmarket console script, wired with fakes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from giftmarket import cli


def test_health_prints_the_report_and_fails_when_no_database_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = {
        "status": "down",
        "primary": "unavailable (2003)",
        "replica": "unreachable",
        "replica_lag_seconds": None,
        "cache": "ok",
    }

    class FakeContainer:
        database: Any = None
        redis: Any = None

        def close(self) -> None:
            pass

    monkeypatch.setattr(cli, "bootstrap", FakeContainer)
    monkeypatch.setattr(cli, "system_health", lambda database, cache: report)
    result = CliRunner().invoke(cli.app, ["health"])
    assert result.exit_code == 1
    assert json.loads(result.output) == report
