"""Signing up, signing in, charging points and the welcome coupon. Every command handler runs the
way the command API runs it, on the in-memory fakes (tests/support/market.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.support.fakes import (
    ADMIN_EMAIL,
    make_context,
)
from tests.support.market import (
    PASSWORD,
    Market,
)

from giftmarket.commands import accounts
from giftmarket.commands.context import InvalidCredentials, Unauthenticated
from giftmarket.commands.ports import Committed
from giftmarket.domain import ledger
from giftmarket.domain.coupons import CouponKind
from giftmarket.domain.errors import (
    EmailTaken,
    InvalidAmount,
    InvalidField,
)
from giftmarket.domain.ledger import LedgerReason

# --- signing up ----------------------------------------------------------------------------


def test_sign_up_stores_a_hashed_password_and_the_normalized_email(market: Market) -> None:
    account = market.run(accounts.sign_up, accounts.SignUp(" Alice@Example.COM ", PASSWORD, "al"))
    user = market.user(account.user_id)
    assert user.email == "alice@example.com"
    assert user.password_hash == "hashed:password123"
    assert user.balances == (0, 0, 0)
    assert (account.is_admin, user.is_admin) == (False, False)


def test_sign_up_writes_user_signed_up_at_version_1(market: Market) -> None:
    account, committed = market.commit(
        accounts.sign_up, accounts.SignUp("bob@example.com", PASSWORD, "bob")
    )
    assert market.written(committed) == {("UserSignedUp", account.user_id, 1)}
    assert committed.versions == {f"user:{account.user_id}": 1}
    assert committed.outbox_ids == tuple(record.id for record in market.store.outbox)
    [event] = market.events(committed)
    assert event.to_payload()["email"] == "bob@example.com"


def test_sign_up_with_an_admin_email_in_any_case_makes_an_admin(market: Market) -> None:
    account = market.run(accounts.sign_up, accounts.SignUp(ADMIN_EMAIL.upper(), PASSWORD, "a"))
    assert account.is_admin
    assert market.user(account.user_id).is_admin


def test_sign_up_leaves_the_welcome_coupon_to_the_event_consumer(market: Market) -> None:
    market.signed_up()
    assert market.store.rows["coupons"] == {}
    assert [e.event_type for e in market.store.events] == ["UserSignedUp"]


def test_sign_up_with_a_taken_email_in_another_case_is_email_taken(market: Market) -> None:
    market.signed_up("carol@example.com")
    command = accounts.SignUp("CAROL@example.com", PASSWORD, "carol2")
    market.refused(accounts.sign_up, command, EmailTaken)


@pytest.mark.parametrize(
    ("email", "nickname"),
    [("not-an-email", "nick"), ("dave@example.com", "n" * 31), ("dave@example.com", "   ")],
)
def test_sign_up_with_an_invalid_email_or_nickname_is_invalid_field(
    market: Market, email: str, nickname: str
) -> None:
    market.refused(accounts.sign_up, accounts.SignUp(email, PASSWORD, nickname), InvalidField)


# --- signing in ----------------------------------------------------------------------------


def test_login_with_the_right_password_in_any_email_case_returns_the_account(
    market: Market,
) -> None:
    user_id = market.signed_up("erin@example.com")
    account, committed = market.commit(
        accounts.sign_in, accounts.SignIn("Erin@Example.com", PASSWORD)
    )
    assert account == accounts.Account(user_id, False)
    assert committed == Committed((), {})


def test_login_wrong_password_is_invalid_credentials(market: Market) -> None:
    market.signed_up("frank@example.com")
    command = accounts.SignIn("frank@example.com", "password124")
    market.refused(accounts.sign_in, command, InvalidCredentials)


def test_login_with_an_unknown_email_is_invalid_credentials_after_a_dummy_hash_check(
    market: Market,
) -> None:
    command = accounts.SignIn("nobody@example.com", PASSWORD)
    market.refused(accounts.sign_in, command, InvalidCredentials)
    assert market.passwords.verified == [market.passwords.dummy_hash()]


def test_login_with_an_outdated_hash_stores_a_current_one(market: Market) -> None:
    user_id = market.signed_up("gina@example.com")
    with market.uow:
        market.uow.users.set_password_hash(user_id, "legacy:password123")
        market.uow.commit()
    market.run(accounts.sign_in, accounts.SignIn("gina@example.com", PASSWORD))
    user = market.user(user_id)
    assert user.password_hash == "hashed:password123"
    assert user.version == 1


# --- charging points -----------------------------------------------------------------------


def test_charge_adds_to_available_points_and_records_a_ledger_charge(market: Market) -> None:
    user_id = market.signed_up()
    balance, committed = market.commit(accounts.charge_points, accounts.ChargePoints(user_id, 5000))
    assert balance == accounts.Balance(5000)
    assert market.balances(user_id) == (5000, 0, 0)
    charge = market.last_ledger_transaction()
    assert charge.reason is LedgerReason.CHARGE
    assert set(charge.postings) == {
        ledger.Posting(ledger.CHARGES, -5000),
        ledger.Posting(ledger.available(user_id), 5000),
    }
    assert market.written(committed) == {
        ("PointsCharged", user_id, 2),
        ("UserBalancesChanged", user_id, 2),
    }
    assert committed.versions == {f"user:{user_id}": 2}


@pytest.mark.parametrize("amount", [0, -100, 10**9 + 1])
def test_charge_of_a_non_positive_or_absurd_amount_is_invalid_amount(
    market: Market, amount: int
) -> None:
    user_id = market.signed_up()
    market.refused(accounts.charge_points, accounts.ChargePoints(user_id, amount), InvalidAmount)


def test_charge_for_a_vanished_account_is_unauthenticated(market: Market) -> None:
    command = accounts.ChargePoints("01HZZZZZZZZZZZZZZZZZZZZZZZ", 1000)
    market.refused(accounts.charge_points, command, Unauthenticated)


# --- the welcome coupon --------------------------------------------------------------------


def test_welcome_coupon_is_issued_once(market: Market) -> None:
    user_id = market.signed_up()
    coupon_id, committed = market.commit(
        accounts.issue_welcome_coupon, accounts.IssueWelcomeCoupon(user_id)
    )
    again, committed_again = market.commit(
        accounts.issue_welcome_coupon, accounts.IssueWelcomeCoupon(user_id)
    )
    assert coupon_id is not None
    assert again is None
    coupon = market.coupon(coupon_id)
    assert (coupon.user_id, coupon.discount_amount, coupon.kind) == (
        user_id,
        1000,
        CouponKind.WELCOME,
    )
    assert coupon.expires_at == market.clock() + timedelta(days=30)
    assert list(market.store.rows["coupons"]) == [coupon_id]
    assert market.written(committed) == {("CouponIssued", coupon_id, 1)}
    assert committed_again.outbox_ids == ()


def test_welcome_coupon_for_an_unknown_user_is_not_issued(market: Market) -> None:
    command = accounts.IssueWelcomeCoupon("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert market.run(accounts.issue_welcome_coupon, command) is None
    assert market.store.rows["coupons"] == {}


def test_welcome_coupon_of_zero_points_is_not_issued(market: Market) -> None:
    user_id = market.signed_up()
    ctx = make_context(clock=market.clock, welcome_coupon_amount=0)
    with market.uow:
        assert (
            accounts.issue_welcome_coupon(market.uow, accounts.IssueWelcomeCoupon(user_id), ctx)
            is None
        )
        market.uow.commit()
    assert market.store.rows["coupons"] == {}
