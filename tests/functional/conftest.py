"""Fixtures of the functional tests: the command handlers on in-memory fakes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.fakes import (
    FakeClock,
    FakeImageStore,
    FakePasswords,
    FakeUnitOfWork,
    make_context,
)
from tests.support.market import Market, money_is_conserved, new_market

from giftmarket.domain.vouchers import InspectionMode, VoucherRules


@pytest.fixture
def market() -> Market:
    clock, images, passwords = FakeClock(), FakeImageStore(), FakePasswords()
    ctx = make_context(clock=clock, images=images, passwords=passwords)
    return Market(FakeUnitOfWork(), ctx, clock, images, passwords)


@pytest.fixture
def manual() -> Market:
    """A market whose orders an admin inspects (INSPECTION_MODE=manual)."""
    return new_market(vouchers=VoucherRules(inspection=InspectionMode.MANUAL))


@pytest.fixture
def money_checked(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test, each market it used (`market`, `manual`) still agrees with its
    ledger; a module opts in with `pytestmark = pytest.mark.usefixtures("money_checked")`."""
    used = [request.getfixturevalue(n) for n in ("market", "manual") if n in request.fixturenames]
    yield
    for market in used:
        money_is_conserved(market)
