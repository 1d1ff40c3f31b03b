"""Social-only accounts (PRODUCT.md, "Social sign-in"): no password, an email only when the
provider verified it, the same signup event as a password account."""

from __future__ import annotations

from datetime import datetime

import pytest

from giftmarket.domain import events
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.users import MAX_SUBJECT_LENGTH, SocialIdentity, User

pytestmark = pytest.mark.unit


def social(now: datetime, verified_email: str | None = None, admins: tuple[str, ...] = ()) -> User:
    return User.sign_up_social(
        user_id="kim",
        verified_email=verified_email,
        nickname="kim",
        admin_emails=admins,
        now=now,
    )


def test_a_social_account_has_no_password_and_keeps_a_verified_email(now: datetime) -> None:
    user = social(now, verified_email=" Kim@Example.com")
    assert user.password_hash is None
    assert user.email == "kim@example.com"  # normalised as a password signup's


def test_a_social_account_without_a_verified_email_has_none(now: datetime) -> None:
    user = social(now)
    assert (user.email, user.password_hash, user.is_admin) == (None, None, False)


@pytest.mark.parametrize("email", ["", "no-at-sign", "a" * 250 + "@example.com"])
def test_a_verified_email_that_is_not_an_address_is_refused(now: datetime, email: str) -> None:
    with pytest.raises(InvalidField):
        social(now, verified_email=email)


@pytest.mark.parametrize("verified_email", ["kim@example.com", None])
def test_a_social_signup_records_the_same_event_as_a_password_signup(
    now: datetime, verified_email: str | None
) -> None:
    user = social(now, verified_email=verified_email)
    password = User.sign_up(
        user_id="kim",
        email="kim@example.com",
        nickname="kim",
        password_hash="argon2-hash",
        admin_emails=(),
        now=now,
    )
    expected = events.UserSignedUp(
        aggregate_id="kim",
        version=1,
        occurred_at=now,
        user_id="kim",
        email=verified_email,
        nickname="kim",
        is_admin=False,
    )
    assert user.events == [expected]
    assert type(password.events[0]) is type(expected)
    assert user.balances == password.balances


def test_a_verified_admin_email_makes_an_admin_and_no_email_never_does(now: datetime) -> None:
    assert social(now, verified_email="Boss@Example.com", admins=("boss@example.com",)).is_admin
    assert not social(now, admins=("boss@example.com",)).is_admin


@pytest.mark.parametrize("nickname", ["", "   ", "n" * 31])
def test_a_social_account_needs_a_nickname_like_any_other(now: datetime, nickname: str) -> None:
    with pytest.raises(InvalidField):
        User.sign_up_social(
            user_id="kim", verified_email=None, nickname=nickname, admin_emails=(), now=now
        )


def test_an_account_without_an_email_cannot_be_made_admin(now: datetime) -> None:
    user = social(now)
    for is_admin in (True, False):
        with pytest.raises(InvalidField):
            user.set_admin(is_admin, actor="ops", now=now)
    assert (user.is_admin, user.version) == (False, 1)


def test_a_social_account_with_an_email_can_be_made_admin(now: datetime) -> None:
    user = social(now, verified_email="kim@example.com")
    change = user.set_admin(True, actor="ops", now=now)
    assert change is not None and change.email == "kim@example.com"
    assert user.is_admin


@pytest.mark.parametrize(
    "subject", ["1", "abc-DEF_123.456|x", "s" * MAX_SUBJECT_LENGTH, "001234567890123456789"]
)
def test_a_social_identity_takes_an_openid_subject(now: datetime, subject: str) -> None:
    identity = SocialIdentity("kakao", subject, "kim", now)
    assert identity.subject == subject  # kept as given: subjects are case-sensitive


@pytest.mark.parametrize("subject", ["", "s" * (MAX_SUBJECT_LENGTH + 1), "사용자", "sub\u00e9"])
def test_a_social_identity_refuses_what_is_not_a_subject(now: datetime, subject: str) -> None:
    with pytest.raises(InvalidField):
        SocialIdentity("kakao", subject, "kim", now)
