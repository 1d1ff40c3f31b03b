"""Fixtures of the functional tests: the command handlers on in-memory fakes."""

from __future__ import annotations

import pytest
from tests.support.fakes import (
    FakeClock,
    FakeImageStore,
    FakePasswords,
    FakeUnitOfWork,
    make_context,
)
from tests.support.market import Market


@pytest.fixture
def market() -> Market:
    clock, images, passwords = FakeClock(), FakeImageStore(), FakePasswords()
    ctx = make_context(clock=clock, images=images, passwords=passwords)
    return Market(FakeUnitOfWork(), ctx, clock, images, passwords)
