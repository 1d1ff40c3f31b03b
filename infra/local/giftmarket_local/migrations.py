"""Apply the Alembic migrations to a stack's primary (the replica follows by replication)."""

from __future__ import annotations

import os
import subprocess
import sys

from giftmarket_local.stack import REPO_ROOT, StackConfig

ALEMBIC_INI = REPO_ROOT / "infra" / "migrations" / "alembic.ini"


def _alembic(config: StackConfig, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), *args],
        env={**os.environ, **config.app_env()},
        check=True,
        cwd=REPO_ROOT,
    )


def upgrade(config: StackConfig, revision: str = "head") -> None:
    _alembic(config, "upgrade", revision)


def reset(config: StackConfig) -> None:
    """Drop every table through the migrations and create them again: an empty schema,
    and a proof that the migrations work both ways."""
    _alembic(config, "downgrade", "base")
    _alembic(config, "upgrade", "head")
