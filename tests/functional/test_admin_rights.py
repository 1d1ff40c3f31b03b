"""Admin rights are an operator's to grant and revoke, recorded; signing up never grants
them on a stage without ADMIN_EMAILS, and a revoke takes effect on the next command."""

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

from giftmarket.commands import catalog
from giftmarket.commands.admins import (
    ListAdminRights,
    NoAccountForEmail,
    SetAdmin,
    list_admin_rights,
    set_admin,
)
from giftmarket.domain.errors import Forbidden, InvalidField
from giftmarket.domain.users import AdminAction


@pytest.fixture
def market() -> Market:
    """A market whose signups grant nothing (no ADMIN_EMAILS, as on a deployed stage)."""
    clock, images, passwords = FakeClock(), FakeImageStore(), FakePasswords()
    ctx = make_context(clock=clock, images=images, passwords=passwords, admin_emails=frozenset())
    return Market(FakeUnitOfWork(), ctx, clock, images, passwords)


def register_product(market: Market, user_id: str) -> str:
    command = catalog.RegisterProduct(user_id, "Latte", "Cafe", "coffee", 4500)
    return market.run(catalog.register_product, command)


def test_signing_up_with_the_usual_admin_address_grants_nothing(market: Market) -> None:
    user_id = market.signed_up("admin@giftmarket.local")
    assert not market.user(user_id).is_admin
    market.refused(
        catalog.register_product,
        catalog.RegisterProduct(user_id, "Latte", "Cafe", "coffee", 4500),
        Forbidden,
    )


def test_a_grant_makes_an_admin_and_is_recorded_with_who_and_when(market: Market) -> None:
    user_id = market.signed_up("Boss@Example.com")
    result = market.run(set_admin, SetAdmin("boss@example.com", True, "ops-kim"))
    assert result.is_admin and result.change is not None
    assert market.user(user_id).is_admin
    register_product(market, user_id)
    (change,) = market.store.admin_rights
    assert (change.user_id, change.email, change.action, change.actor) == (
        user_id,
        "boss@example.com",
        AdminAction.GRANT,
        "ops-kim",
    )
    assert change.recorded_at == market.clock.now


def test_a_revoke_takes_effect_on_the_next_command(market: Market) -> None:
    user_id = market.signed_up("boss@example.com")
    market.run(set_admin, SetAdmin("boss@example.com", True, "ops"))
    register_product(market, user_id)
    market.run(set_admin, SetAdmin("boss@example.com", False, "ops"))
    market.refused(
        catalog.register_product,
        catalog.RegisterProduct(user_id, "Mocha", "Cafe", "coffee", 4500),
        Forbidden,
    )
    actions = [c.action for c in market.store.admin_rights]
    assert actions == [AdminAction.GRANT, AdminAction.REVOKE]


def test_granting_twice_changes_and_records_nothing_the_second_time(market: Market) -> None:
    market.signed_up("boss@example.com")
    market.run(set_admin, SetAdmin("boss@example.com", True, "ops"))
    again = market.run(set_admin, SetAdmin("boss@example.com", True, "ops"))
    assert again.change is None and again.is_admin
    assert len(market.store.admin_rights) == 1


def test_an_email_with_no_account_is_refused_with_a_clear_message(market: Market) -> None:
    error = market.refused(
        set_admin, SetAdmin("nobody@example.com", True, "ops"), NoAccountForEmail
    )
    assert "nobody@example.com" in error.detail and "sign up" in NoAccountForEmail.default_detail


def test_a_change_needs_someone_to_have_asked_for_it(market: Market) -> None:
    market.signed_up("boss@example.com")
    market.refused(set_admin, SetAdmin("boss@example.com", True, "  "), InvalidField)


def test_the_list_shows_admins_and_the_record_newest_first(market: Market) -> None:
    a, b = market.signed_up("a@example.com"), market.signed_up("b@example.com")
    market.run(set_admin, SetAdmin("b@example.com", True, "ops"))
    market.run(set_admin, SetAdmin("a@example.com", True, "ops"))
    market.run(set_admin, SetAdmin("b@example.com", False, "ops"))
    with market.uow:
        rights = list_admin_rights(market.uow, ListAdminRights(), market.ctx)
    assert rights.admins == [(a, "a@example.com")]
    assert [(c.email, c.action) for c in rights.history] == [
        ("b@example.com", AdminAction.REVOKE),
        ("a@example.com", AdminAction.GRANT),
        ("b@example.com", AdminAction.GRANT),
    ]
    assert b not in {user_id for user_id, _ in rights.admins}
