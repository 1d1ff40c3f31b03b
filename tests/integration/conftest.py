"""Fixtures of the integration tests beyond the shared ones (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.migrations import APP, MASTER

from giftmarket_local.stack import Stack


@pytest.fixture
def master_user(stack: Stack) -> Iterator[str]:
    """A user with RDS's master rights (everything, and granting it)."""
    password = "master-Passw0rd-for-tests"
    host = stack.config.host
    stack.primary.sql(
        f"CREATE USER IF NOT EXISTS '{MASTER}'@'{host}' IDENTIFIED BY '{password}';"
        f"GRANT ALL PRIVILEGES ON *.* TO '{MASTER}'@'{host}' WITH GRANT OPTION;"
    )
    yield password
    stack.primary.sql(f"DROP USER IF EXISTS '{MASTER}'@'{host}'; DROP USER IF EXISTS '{APP}'@'%';")
