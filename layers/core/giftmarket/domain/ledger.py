"""Double-entry ledger: every movement of points is a transaction whose postings sum to zero.

Accounts are (owner, bucket). Users own available/escrowed/pending; the platform owns the fee
income and the coupon subsidy it pays; "external" is where charged money comes from. Because
every transaction balances, the ledger as a whole sums to zero, which is the conservation law
charges = users' balances + fees − coupon subsidies.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

PLATFORM = "platform"
EXTERNAL = "external"


class Bucket(StrEnum):
    AVAILABLE = "available"
    ESCROWED = "escrowed"
    PENDING = "pending"
    FEES = "fees"
    COUPON_SUBSIDY = "coupon_subsidy"
    CHARGES = "charges"


_SYSTEM_OWNER_OF_BUCKET = {
    Bucket.FEES: PLATFORM,
    Bucket.COUPON_SUBSIDY: PLATFORM,
    Bucket.CHARGES: EXTERNAL,
}


@dataclass(frozen=True, slots=True)
class Account:
    owner: str
    bucket: Bucket

    def __post_init__(self) -> None:
        system_owner = _SYSTEM_OWNER_OF_BUCKET.get(self.bucket)
        if system_owner is not None and self.owner != system_owner:
            raise ValueError(f"{self.bucket} belongs to {system_owner}, not {self.owner}")
        if system_owner is None and self.owner in (PLATFORM, EXTERNAL):
            raise ValueError(f"{self.owner} has no {self.bucket} bucket")


FEES = Account(PLATFORM, Bucket.FEES)
COUPON_SUBSIDY = Account(PLATFORM, Bucket.COUPON_SUBSIDY)
CHARGES = Account(EXTERNAL, Bucket.CHARGES)


def available(user_id: str) -> Account:
    return Account(user_id, Bucket.AVAILABLE)


def escrowed(user_id: str) -> Account:
    return Account(user_id, Bucket.ESCROWED)


def pending(user_id: str) -> Account:
    return Account(user_id, Bucket.PENDING)


@dataclass(frozen=True, slots=True)
class Posting:
    account: Account
    amount: int


class LedgerReason(StrEnum):
    CHARGE = "charge"
    BUY_BID_ESCROW = "buy_bid_escrow"
    BUY_BID_RELEASE = "buy_bid_release"
    BUY_NOW = "buy_now"
    SELL_NOW = "sell_now"
    SETTLEMENT = "settlement"
    REFUND = "refund"


class RefType(StrEnum):
    CHARGE = "charge"
    BUY_BID = "buy_bid"
    ORDER = "order"
    SETTLEMENT = "settlement"


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    id: str
    reason: LedgerReason
    ref_type: RefType
    ref_id: str
    postings: tuple[Posting, ...]
    occurred_at: datetime

    def __post_init__(self) -> None:
        if not self.postings:
            raise ValueError("a ledger transaction needs postings")
        if any(posting.amount == 0 for posting in self.postings):
            raise ValueError("a posting must move a non-zero amount")
        if sum(posting.amount for posting in self.postings) != 0:
            raise ValueError(f"postings of {self.reason} do not sum to zero: {self.postings}")

    def changes_for(self, owner: str) -> dict[Bucket, int]:
        changes: dict[Bucket, int] = defaultdict(int)
        for posting in self.postings:
            if posting.account.owner == owner:
                changes[posting.account.bucket] += posting.amount
        return dict(changes)


def _transaction(
    transaction_id: str,
    reason: LedgerReason,
    ref_type: RefType,
    ref_id: str,
    occurred_at: datetime,
    *postings: tuple[Account, int],
) -> LedgerTransaction:
    # Movements of zero (a fully discounted purchase, a zero fee) are simply not posted.
    return LedgerTransaction(
        id=transaction_id,
        reason=reason,
        ref_type=ref_type,
        ref_id=ref_id,
        postings=tuple(Posting(account, amount) for account, amount in postings if amount),
        occurred_at=occurred_at,
    )


def _require_positive(amount: int, what: str) -> None:
    if amount <= 0:
        raise ValueError(f"{what} must be positive, got {amount}")


def charge(transaction_id: str, user_id: str, amount: int, now: datetime) -> LedgerTransaction:
    _require_positive(amount, "charge")
    return _transaction(
        transaction_id,
        LedgerReason.CHARGE,
        RefType.CHARGE,
        transaction_id,
        now,
        (CHARGES, -amount),
        (available(user_id), amount),
    )


def escrow_buy_bid(
    transaction_id: str, buyer_id: str, buy_bid_id: str, price: int, now: datetime
) -> LedgerTransaction:
    _require_positive(price, "escrow")
    return _transaction(
        transaction_id,
        LedgerReason.BUY_BID_ESCROW,
        RefType.BUY_BID,
        buy_bid_id,
        now,
        (available(buyer_id), -price),
        (escrowed(buyer_id), price),
    )


def release_buy_bid_escrow(
    transaction_id: str, buyer_id: str, buy_bid_id: str, price: int, now: datetime
) -> LedgerTransaction:
    _require_positive(price, "escrow release")
    return _transaction(
        transaction_id,
        LedgerReason.BUY_BID_RELEASE,
        RefType.BUY_BID,
        buy_bid_id,
        now,
        (escrowed(buyer_id), -price),
        (available(buyer_id), price),
    )


def buy_now_payment(
    transaction_id: str,
    order_id: str,
    buyer_id: str,
    seller_id: str,
    price: int,
    discount: int,
    now: datetime,
) -> LedgerTransaction:
    _require_positive(price, "price")
    if not 0 <= discount <= price:
        raise ValueError(f"discount {discount} must lie within 0..{price}")
    return _transaction(
        transaction_id,
        LedgerReason.BUY_NOW,
        RefType.ORDER,
        order_id,
        now,
        (available(buyer_id), -(price - discount)),
        (COUPON_SUBSIDY, -discount),
        (pending(seller_id), price),
    )


def sell_now_payment(
    transaction_id: str,
    order_id: str,
    buyer_id: str,
    seller_id: str,
    price: int,
    now: datetime,
) -> LedgerTransaction:
    _require_positive(price, "price")
    return _transaction(
        transaction_id,
        LedgerReason.SELL_NOW,
        RefType.ORDER,
        order_id,
        now,
        (escrowed(buyer_id), -price),
        (pending(seller_id), price),
    )


def refund(
    transaction_id: str,
    order_id: str,
    buyer_id: str,
    seller_id: str,
    price: int,
    discount: int,
    now: datetime,
) -> LedgerTransaction:
    """The exact reverse of an order's payment, whichever way it was paid: the buyer gets
    back what they paid (to available points), the platform its coupon subsidy, and the
    seller's pending points fall by the price."""
    _require_positive(price, "price")
    if not 0 <= discount <= price:
        raise ValueError(f"discount {discount} must lie within 0..{price}")
    return _transaction(
        transaction_id,
        LedgerReason.REFUND,
        RefType.ORDER,
        order_id,
        now,
        (pending(seller_id), -price),
        (COUPON_SUBSIDY, discount),
        (available(buyer_id), price - discount),
    )


def settlement_payout(
    transaction_id: str,
    settlement_id: str,
    seller_id: str,
    gross: int,
    fee: int,
    now: datetime,
) -> LedgerTransaction:
    _require_positive(gross, "gross")
    if not 0 <= fee <= gross:
        raise ValueError(f"fee {fee} must lie within 0..{gross}")
    return _transaction(
        transaction_id,
        LedgerReason.SETTLEMENT,
        RefType.SETTLEMENT,
        settlement_id,
        now,
        (pending(seller_id), -gross),
        (available(seller_id), gross - fee),
        (FEES, fee),
    )


def balances(transactions: Iterable[LedgerTransaction]) -> dict[Account, int]:
    totals: dict[Account, int] = defaultdict(int)
    for transaction in transactions:
        for posting in transaction.postings:
            totals[posting.account] += posting.amount
    return dict(totals)
