from datetime import datetime

import pytest

from giftmarket.domain import events, ledger
from giftmarket.domain.errors import Forbidden, InsufficientPoints, InvalidField
from giftmarket.domain.users import Balances, User, is_admin_email

pytestmark = pytest.mark.unit


def sign_up(now: datetime, email: str = "Alice@Example.com ", admins: tuple[str, ...] = ()) -> User:
    return User.sign_up(
        user_id="alice",
        email=email,
        nickname="alice",
        password_hash="argon2-hash",
        admin_emails=admins,
        now=now,
    )


def test_sign_up_stores_the_email_lower_cased_and_stripped(now: datetime) -> None:
    assert sign_up(now).email == "alice@example.com"


def test_sign_up_starts_with_empty_balances_and_records_the_signup(now: datetime) -> None:
    user = sign_up(now)

    assert user.balances == Balances(0, 0, 0)
    assert user.version == 1
    assert user.events == [
        events.UserSignedUp(
            aggregate_id="alice",
            version=1,
            occurred_at=now,
            user_id="alice",
            email="alice@example.com",
            nickname="alice",
            is_admin=False,
        )
    ]


def test_email_listed_as_admin_makes_an_admin_whatever_its_case(now: datetime) -> None:
    user = sign_up(now, admins=(" ALICE@example.COM",))

    assert user.is_admin


def test_unlisted_email_makes_an_ordinary_user(now: datetime) -> None:
    assert not sign_up(now, admins=("admin@giftmarket.local",)).is_admin


def test_blank_admin_entries_match_nobody() -> None:
    assert not is_admin_email("  ", ["", " "])
    assert is_admin_email("Admin@Giftmarket.Local", ["", "admin@giftmarket.local"])


@pytest.mark.parametrize("nickname", ["", "   ", "n" * 31])
def test_sign_up_refuses_a_nickname_outside_1_to_30_characters(
    nickname: str, now: datetime
) -> None:
    with pytest.raises(InvalidField):
        User.sign_up(
            user_id="alice",
            email="alice@example.com",
            nickname=nickname,
            password_hash="hash",
            admin_emails=(),
            now=now,
        )


@pytest.mark.parametrize("email", ["", "not-an-email", "a@" + "b" * 253])
def test_sign_up_refuses_what_is_not_an_email(email: str, now: datetime) -> None:
    with pytest.raises(InvalidField):
        sign_up(now, email=email)


def test_charge_records_points_charged_and_balances_changed_under_one_version(
    now: datetime,
) -> None:
    user = sign_up(now)
    user.events.clear()

    user.apply(ledger.charge("txn-1", "alice", 5_000, now))

    assert user.balances == Balances(5_000, 0, 0)
    assert user.version == 2
    charged, changed = user.events
    assert isinstance(charged, events.PointsCharged)
    assert (charged.amount, charged.available_points, charged.version) == (5_000, 5_000, 2)
    assert isinstance(changed, events.UserBalancesChanged)
    assert (changed.reason, changed.transaction_id, changed.version) == ("charge", "txn-1", 2)


def test_every_balance_change_records_the_new_balances(now: datetime) -> None:
    user = sign_up(now)
    user.apply(ledger.charge("t1", "alice", 5_000, now))
    user.events.clear()

    user.apply(ledger.escrow_buy_bid("t2", "alice", "bid-1", 2_000, now))

    (changed,) = user.events
    assert isinstance(changed, events.UserBalancesChanged)
    assert (changed.available_points, changed.escrowed_points, changed.pending_points) == (
        3_000,
        2_000,
        0,
    )
    assert changed.reason == "buy_bid_escrow"
    assert user.version == 3


def test_overdraft_is_refused_and_changes_nothing(now: datetime) -> None:
    user = sign_up(now)
    user.apply(ledger.charge("t1", "alice", 1_000, now))
    events_before, version_before = list(user.events), user.version

    with pytest.raises(InsufficientPoints):
        user.apply(ledger.escrow_buy_bid("t2", "alice", "bid-1", 1_001, now))

    assert user.balances == Balances(1_000, 0, 0)
    assert (user.events, user.version) == (events_before, version_before)


def test_releasing_more_escrow_than_held_is_refused(now: datetime) -> None:
    user = sign_up(now)

    with pytest.raises(InsufficientPoints):
        user.ensure_can_apply(ledger.release_buy_bid_escrow("t", "alice", "bid-1", 1, now))


def test_another_users_transaction_leaves_the_user_untouched(now: datetime) -> None:
    user = sign_up(now)

    user.apply(ledger.charge("t", "bob", 1_000, now))

    assert (user.balances, user.version, len(user.events)) == (Balances(0, 0, 0), 1, 1)


def test_ordinary_user_is_forbidden_admin_work(now: datetime) -> None:
    with pytest.raises(Forbidden):
        sign_up(now).ensure_admin()


def test_admin_may_do_admin_work(now: datetime) -> None:
    sign_up(now, admins=("alice@example.com",)).ensure_admin()
