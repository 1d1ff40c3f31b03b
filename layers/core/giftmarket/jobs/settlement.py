"""Daily settlement (PRODUCT.md, Settlement): the one code path behind the scheduled
function and `giftmarket jobs settle`, both through `settle` (at the end of this module).

A run for business date D, as of `now`:

1. completes the orders PAID for 72 hours or more, in short transactions of a batch each
   (an order counts as completed when its 72 hours ran out, so it may belong to D);
2. finds, in one set-based read, the sellers with COMPLETED orders completed before the end
   of D (KST);
3. settles each seller in a unit of work of its own (a few sellers at a time, on their own
   connections): that seller's settleable orders are locked, then the users involved in id
   order; one settlement (seller, D), its ledger transaction (pending −gross, available
   +net, platform fees +fee), the orders SETTLED and the events (SettlementCompleted,
   OrdersSettled per 200 orders, the seller's UserBalancesChanged) go to the outbox and are
   published after commit, as a command's are. No lock outlives one seller's transaction,
   and none covers rows of sellers not being settled.

The work per order is set-based: the locking read takes only what the amounts need
(`OrderRepository.lock_for_settlement`), the domain computes the settlement and payout
from it (the fee floored per order), and one UPDATE by primary key marks the orders
SETTLED (`mark_settled`), instead of loading, diffing and saving 10^5 aggregates. Their
events are the settlement's: an OrdersSettled per slice of 200 orders says of each what
its own OrderSettled would, in one outbox row and one message instead of 200 (a night's
10^5 orders would otherwise queue 10^5 messages ahead of everyone's events; writing them
was a fifth of the run, issue 18). tests/integration/test_settlement_job.py checks that
the orders and read models end exactly as `marketplace.settle_seller` (each
`Order.settle`) leaves them for the same orders.

Running it again changes nothing, and a run that died half way is finished by the next:
every transaction commits whole or not at all, a settled order is no longer COMPLETED (two
runs for one seller queue on its orders' locks; the second finds none left), and a seller
is settled once per date (checked under those locks; the unique (seller_id, business_date)
key backs it).

Orders of a seller already settled for D that are found settleable for D afterwards (D
settled again after a late confirmation) are left alone: a settlement never changes once
written, and the next date's run takes them, since it settles every COMPLETED order
completed before the end of its date. They are reported as deferred.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import partial

from giftmarket.commands.context import CommandContext, found
from giftmarket.commands.executor import CommandExecutor
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain import marketplace
from giftmarket.domain.errors import DomainError
from giftmarket.domain.orders import auto_complete_delivered_before
from giftmarket.domain.settlement import (
    Settlement,
    business_day_bounds,
    default_business_date,
    require_business_day_over,
)
from giftmarket.domain.validation import require_aware
from giftmarket.settings import Settings

log = logging.getLogger(__name__)

COMPLETION_BATCH = 500


class Outcome(StrEnum):
    SETTLED = "settled"
    DEFERRED = "deferred"  # already settled for the date; the next date's run takes them
    NOTHING = "nothing"  # settled meanwhile by another run


@dataclass(frozen=True)
class SellerResult:
    seller_id: str
    outcome: Outcome
    settlement: Settlement | None = None


SellerHook = Callable[[SellerResult], None]


@dataclass(frozen=True)
class SettlementReport:
    business_date: date
    orders_completed: int
    sellers_settled: int
    orders_settled: int
    sellers_deferred: int
    gross: int
    fee: int
    net: int
    elapsed_seconds: float
    failed_sellers: dict[str, str] = field(default_factory=dict)  # seller id → why

    @property
    def failed(self) -> bool:
        return bool(self.failed_sellers)

    def as_dict(self) -> dict[str, object]:
        return {
            "business_date": self.business_date.isoformat(),
            "orders_completed": self.orders_completed,
            "sellers_settled": self.sellers_settled,
            "orders_settled": self.orders_settled,
            "sellers_deferred": self.sellers_deferred,
            "sellers_failed": len(self.failed_sellers),
            "failed_sellers": dict(self.failed_sellers),
            "gross": self.gross,
            "fee": self.fee,
            "net": self.net,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class SettlementIncomplete(Exception):
    """Some sellers were not settled; the others were. Running again settles the rest."""

    def __init__(self, report: SettlementReport) -> None:
        self.report = report
        sellers = ", ".join(sorted(report.failed_sellers))
        super().__init__(f"settlement of {report.business_date} failed for sellers {sellers}")


def settle_business_date(
    executor: CommandExecutor,
    *,
    business_date: date,
    now: datetime,
    fee_bps: int,
    workers: int = 1,
    completion_batch: int = COMPLETION_BATCH,
    after_seller: SellerHook | None = None,
) -> SettlementReport:
    """Run settlement for `business_date` as of `now`, `workers` sellers at a time, each in
    its own unit of work. `after_seller` is told each seller's result once it is committed
    (and published), in this thread: progress, or a fault to inject in tests; if it raises,
    no further seller is started (those started finish) and the run ends with its error.

    A seller whose settlement the domain refuses (balances that disagree with the orders)
    is reported in `failed_sellers` and the others are still settled; losing the database
    or every retry of a deadlock ends the run, and the next run resumes it."""
    began = time.perf_counter()
    now = require_aware(now, "now")
    require_business_day_over(business_date, now)
    _, day_end = business_day_bounds(business_date)

    completed = complete_due_orders(executor, now=now, batch=completion_batch)

    sellers, _ = executor.transaction(partial(_settleable_sellers, day_end=day_end))

    def settle(seller_id: str) -> SellerResult | str:
        handler = partial(
            settle_seller,
            seller_id=seller_id,
            business_date=business_date,
            fee_bps=fee_bps,
            now=now,
        )
        try:
            return executor.transaction(handler)[0]
        except (DomainError, ValueError) as exc:
            log.error("seller %s not settled for %s: %s", seller_id, business_date, exc)
            return str(exc)

    settled: list[Settlement] = []
    deferred = 0
    failed: dict[str, str] = {}
    lanes = [iter(lane) for lane in seller_lanes(sellers, max(1, workers))]
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="settle") as pool:
        running: dict[Future[SellerResult | str], tuple[str, Iterator[str]]] = {}

        def start_next(lane: Iterator[str]) -> None:
            seller_id = next(lane, None)
            if seller_id is not None:
                running[pool.submit(settle, seller_id)] = (seller_id, lane)

        for lane in lanes:
            start_next(lane)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                (seller_id, lane), result = running.pop(future), future.result()
                if isinstance(result, str):
                    failed[seller_id] = result
                else:
                    if result.settlement is not None:
                        settled.append(result.settlement)
                    elif result.outcome is Outcome.DEFERRED:
                        deferred += 1
                    if after_seller is not None:
                        after_seller(result)
                start_next(lane)

    report = SettlementReport(
        business_date=business_date,
        orders_completed=completed,
        sellers_settled=len(settled),
        orders_settled=sum(s.order_count for s in settled),
        sellers_deferred=deferred,
        gross=sum(s.gross for s in settled),
        fee=sum(s.fee for s in settled),
        net=sum(s.net for s in settled),
        elapsed_seconds=time.perf_counter() - began,
        failed_sellers=failed,
    )
    log.info("settlement of %s: %s", business_date, report.as_dict())
    return report


def seller_lanes(sellers: list[str], workers: int) -> list[list[str]]:
    """The sellers (in id order) cut into `workers` contiguous runs, each settled one seller
    after the other: no two sellers settled at once are then neighbours in the orders'
    (seller_id, settleable_at) index. A seller's locking read ends on the first entry of
    the next seller, and InnoDB waits for that entry's lock although READ COMMITTED does
    not keep it: handed out in id order, neighbours settled at once queued on each other
    (1,240 lock waits in a run of 1,000 sellers, and 4 workers barely faster than 1)."""
    size = max(1, -(-len(sellers) // workers))
    return [sellers[i : i + size] for i in range(0, len(sellers), size)]


def complete_due_orders(executor: CommandExecutor, *, now: datetime, batch: int) -> int:
    """Complete every order whose 72 hours are over at `now`; returns how many."""
    delivered_before = auto_complete_delivered_before(now)

    def complete_batch(uow: UnitOfWork, ctx: CommandContext) -> tuple[int, int]:
        due = uow.orders.lock_due_for_completion(delivered_before, batch)
        return len(marketplace.complete_due_orders(due, now)), len(due)

    total = 0
    while True:
        (completed, locked), _ = executor.transaction(complete_batch)
        total += completed
        # A short batch was the last; a batch that completed nothing would only repeat.
        if locked < batch or completed == 0:
            return total


def _settleable_sellers(uow: UnitOfWork, ctx: CommandContext, *, day_end: datetime) -> list[str]:
    return uow.orders.sellers_with_settleable(day_end)


def settle_seller(
    uow: UnitOfWork,
    ctx: CommandContext,
    *,
    seller_id: str,
    business_date: date,
    fee_bps: int,
    now: datetime,
) -> SellerResult:
    """One seller's settlement for the date, in the caller's unit of work."""
    _, day_end = business_day_bounds(business_date)
    orders = uow.orders.lock_for_settlement(seller_id, day_end)
    if not orders:
        return SellerResult(seller_id, Outcome.NOTHING)
    # Then the seller, the one user whose row changes. The buyers are not locked: marking
    # an order settled changes none of the index entries that hold its buyer (its purchase
    # stays `done`, tables.orders), so InnoDB does not check the buyer foreign key and
    # takes no lock on the buyer. Two sellers settled at once who bought from each other
    # therefore never wait for each other, and buyers trading meanwhile never wait for a
    # settlement (tests/integration/test_settlement_job.py holds both).
    seller = found(uow.users.get(seller_id, lock=True), "seller")
    if uow.settlements.find(seller_id, business_date) is not None:
        return SellerResult(seller_id, Outcome.DEFERRED)
    settlement, payout = marketplace.pay_out_seller(
        seller, orders, fee_bps, business_date, ctx.ids, now
    )
    # The orders are marked in SQL, not loaded and saved one aggregate at a time: that
    # was most of a settlement's cost (PRODUCT.md's daily volume in seconds, issue 18).
    # Their events are the settlement's, a few hundred orders each, not one per order.
    settlement.announce_settled(orders, now)
    uow.settlements.add(settlement)
    uow.ledger.record(payout)
    uow.orders.mark_settled(orders, settlement.id, now)
    return SellerResult(seller_id, Outcome.SETTLED, settlement)


def settle(
    executor: CommandExecutor,
    settings: Settings,
    business_date: date | None,
    now: datetime | None = None,
) -> SettlementReport:
    """Daily settlement of `business_date` (default: the day just ended in Korea) as of
    `now` (default: the executor's clock), with the settings' fee and workers: the
    scheduled function and `giftmarket jobs settle` both come here."""
    at = now or executor.context.clock()
    return settle_business_date(
        executor,
        business_date=business_date or default_business_date(at),
        now=at,
        fee_bps=settings.seller_fee_bps,
        # Each worker holds one pooled connection at a time; none may wait for one.
        workers=min(settings.settlement_workers, settings.db_pool_size + settings.db_max_overflow),
    )
