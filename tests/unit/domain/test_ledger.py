from datetime import datetime

import pytest

from giftmarket.domain import ledger
from giftmarket.domain.ledger import (
    CHARGES,
    COUPON_SUBSIDY,
    FEES,
    Account,
    Bucket,
    LedgerReason,
    LedgerTransaction,
    Posting,
    RefType,
    available,
    escrowed,
    pending,
)

pytestmark = pytest.mark.unit


def transaction(*postings: Posting, now: datetime) -> LedgerTransaction:
    return LedgerTransaction(
        id="txn",
        reason=LedgerReason.CHARGE,
        ref_type=RefType.CHARGE,
        ref_id="txn",
        postings=postings,
        occurred_at=now,
    )


def test_transaction_whose_postings_do_not_sum_to_zero_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError, match="sum to zero"):
        transaction(Posting(CHARGES, -100), Posting(available("alice"), 99), now=now)


def test_transaction_with_a_zero_posting_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError, match="non-zero"):
        transaction(Posting(CHARGES, 0), Posting(available("alice"), 0), now=now)


def test_transaction_without_postings_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError):
        transaction(now=now)


@pytest.mark.parametrize(
    ("owner", "bucket"),
    [
        ("alice", Bucket.FEES),
        ("alice", Bucket.COUPON_SUBSIDY),
        ("platform", Bucket.CHARGES),
        ("platform", Bucket.AVAILABLE),
        ("external", Bucket.PENDING),
    ],
)
def test_system_buckets_belong_only_to_their_system_owner(owner: str, bucket: Bucket) -> None:
    with pytest.raises(ValueError):
        Account(owner, bucket)


def test_charge_brings_points_in_from_outside(now: datetime) -> None:
    charge = ledger.charge("txn", "alice", 5_000, now)

    assert ledger.balances([charge]) == {CHARGES: -5_000, available("alice"): 5_000}
    assert (charge.ref_type, charge.ref_id) == (RefType.CHARGE, "txn")


def test_escrow_and_release_move_a_bids_price_between_available_and_escrowed(
    now: datetime,
) -> None:
    escrow = ledger.escrow_buy_bid("t1", "bob", "bid-1", 4_000, now)
    release = ledger.release_buy_bid_escrow("t2", "bob", "bid-1", 4_000, now)

    assert ledger.balances([escrow]) == {available("bob"): -4_000, escrowed("bob"): 4_000}
    assert set(ledger.balances([escrow, release]).values()) == {0}
    assert (escrow.ref_type, escrow.ref_id) == (RefType.BUY_BID, "bid-1")


def test_buy_now_payment_splits_the_price_between_buyer_and_coupon_subsidy(
    now: datetime,
) -> None:
    payment = ledger.buy_now_payment("t", "order-1", "bob", "sally", 4_000, 1_000, now)

    assert ledger.balances([payment]) == {
        available("bob"): -3_000,
        COUPON_SUBSIDY: -1_000,
        pending("sally"): 4_000,
    }


def test_buy_now_payment_without_discount_posts_no_subsidy(now: datetime) -> None:
    payment = ledger.buy_now_payment("t", "order-1", "bob", "sally", 4_000, 0, now)

    assert COUPON_SUBSIDY not in ledger.balances([payment])


def test_fully_discounted_buy_now_posts_nothing_for_the_buyer(now: datetime) -> None:
    payment = ledger.buy_now_payment("t", "order-1", "bob", "sally", 800, 800, now)

    assert payment.changes_for("bob") == {}
    assert ledger.balances([payment]) == {COUPON_SUBSIDY: -800, pending("sally"): 800}


def test_sell_now_payment_is_paid_from_the_buyers_escrow(now: datetime) -> None:
    payment = ledger.sell_now_payment("t", "order-1", "bob", "sally", 4_000, now)

    assert ledger.balances([payment]) == {escrowed("bob"): -4_000, pending("sally"): 4_000}
    assert (payment.ref_type, payment.ref_id) == (RefType.ORDER, "order-1")


def test_settlement_payout_moves_pending_to_available_and_the_fee_to_the_platform(
    now: datetime,
) -> None:
    payout = ledger.settlement_payout("t", "settlement-1", "sally", 10_000, 500, now)

    assert ledger.balances([payout]) == {
        pending("sally"): -10_000,
        available("sally"): 9_500,
        FEES: 500,
    }


def test_settlement_payout_with_zero_fee_posts_no_fee(now: datetime) -> None:
    payout = ledger.settlement_payout("t", "settlement-1", "sally", 38, 0, now)

    assert FEES not in ledger.balances([payout])


def test_changes_for_an_owner_sums_their_postings_per_bucket(now: datetime) -> None:
    payout = ledger.settlement_payout("t", "settlement-1", "sally", 10_000, 500, now)

    assert payout.changes_for("sally") == {Bucket.PENDING: -10_000, Bucket.AVAILABLE: 9_500}
    assert payout.changes_for("bob") == {}


@pytest.mark.parametrize("amount", [0, -1])
def test_builders_refuse_non_positive_amounts(amount: int, now: datetime) -> None:
    with pytest.raises(ValueError):
        ledger.charge("t", "alice", amount, now)
    with pytest.raises(ValueError):
        ledger.escrow_buy_bid("t", "bob", "bid", amount, now)
    with pytest.raises(ValueError):
        ledger.sell_now_payment("t", "order", "bob", "sally", amount, now)


@pytest.mark.parametrize("discount", [-1, 4_001])
def test_buy_now_payment_refuses_a_discount_outside_the_price(discount: int, now: datetime) -> None:
    with pytest.raises(ValueError):
        ledger.buy_now_payment("t", "order-1", "bob", "sally", 4_000, discount, now)


@pytest.mark.parametrize("fee", [-1, 10_001])
def test_settlement_payout_refuses_a_fee_outside_the_gross(fee: int, now: datetime) -> None:
    with pytest.raises(ValueError):
        ledger.settlement_payout("t", "settlement-1", "sally", 10_000, fee, now)


def test_the_whole_ledger_sums_to_zero(now: datetime) -> None:
    transactions = [
        ledger.charge("t1", "bob", 10_000, now),
        ledger.buy_now_payment("t2", "o1", "bob", "sally", 4_000, 1_000, now),
        ledger.settlement_payout("t3", "s1", "sally", 4_000, 200, now),
    ]

    totals = ledger.balances(transactions)

    assert sum(totals.values()) == 0
    user_buckets = {Bucket.AVAILABLE, Bucket.ESCROWED, Bucket.PENDING}
    user_total = sum(amount for account, amount in totals.items() if account.bucket in user_buckets)
    charged = -totals[CHARGES]
    subsidised = -totals[COUPON_SUBSIDY]
    assert charged == user_total + totals[FEES] - subsidised
