"""The giftmarket console script, wired with fakes."""

from __future__ import annotations

import json
import os
from pathlib import Path
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


def _stack_json(root: Path, env: dict[str, str]) -> None:
    (root / "run").mkdir(parents=True)
    (root / "run" / "stack.json").write_text(json.dumps({"profile": "run", "env": env}))


def test_without_an_environment_the_cli_takes_the_local_run_stacks_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stack_json(tmp_path, {"ENVIRONMENT": "local", "REDIS_URL": "redis://h:1/0", "DB_NAME": "x"})
    monkeypatch.setenv("GM_LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DB_NAME", "mine")
    cli.use_local_stack_settings()
    assert os.environ["REDIS_URL"] == "redis://h:1/0"
    assert os.environ["ENVIRONMENT"] == "local"
    assert os.environ["DB_NAME"] == "mine"  # what the caller set wins


def test_with_an_environment_set_the_cli_reads_no_local_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stack_json(tmp_path, {"REDIS_URL": "redis://h:1/0"})
    monkeypatch.setenv("GM_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("ENVIRONMENT", "aws")
    monkeypatch.delenv("REDIS_URL", raising=False)
    cli.use_local_stack_settings()
    assert "REDIS_URL" not in os.environ
