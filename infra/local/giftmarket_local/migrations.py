"""Apply the Alembic migrations to a stack's primary (the replica follows by replication)."""

from __future__ import annotations

import os
import subprocess
import sys

from giftmarket_local.stack import REPO_ROOT, StackConfig

ALEMBIC_INI = REPO_ROOT / "infra" / "migrations" / "alembic.ini"


def upgrade(config: StackConfig, revision: str = "head") -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "upgrade", revision],
        env={**os.environ, **config.app_env()},
        check=True,
        cwd=REPO_ROOT,
    )
