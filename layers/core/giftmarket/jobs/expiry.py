"""Ask expiry (PRODUCT.md, "Vouchers"): the one code path behind the scheduled function
(00:05 KST) and `giftmarket jobs expire-asks`.

Every open ask that buy-now may no longer take (its voucher is valid for less than
ASK_EXPIRY_MARGIN_DAYS more days, Asia/Seoul, or its expiry is unknown: an ask from before
vouchers) becomes EXPIRED, its voucher leaves the registry (a voucher no longer on sale
blocks nobody), and its image follows the cancelled-ask retention from now on. Batches of
at most `batch` asks, one short transaction each, claimed with SKIP LOCKED so a buy-now
holding an ask is never waited for (it takes the ask, or leaves it to the next batch).
Running it again expires nothing more; a run cut short is finished by the next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from giftmarket.commands.context import CommandContext
from giftmarket.commands.executor import CommandExecutor
from giftmarket.commands.ports import UnitOfWork

log = logging.getLogger(__name__)

EXPIRY_BATCH = 200


@dataclass(frozen=True)
class ExpiryReport:
    takeable_from: date  # asks whose voucher is valid on this day or later stay open
    expired: int

    def as_dict(self) -> dict[str, object]:
        return {"takeable_from": self.takeable_from.isoformat(), "expired": self.expired}


def expire_asks(
    executor: CommandExecutor, *, now: datetime, batch: int = EXPIRY_BATCH
) -> ExpiryReport:
    takeable_from = executor.context.vouchers.takeable_from(now)

    def expire_batch(uow: UnitOfWork, ctx: CommandContext) -> tuple[int, int]:
        asks = uow.sell_bids.lock_expiring(takeable_from, batch)
        expired = [ask for ask in asks if ask.expire_if_due(ctx.vouchers, now)]
        # The asks' rows before the registry's, as in cancel_sell_bid (a deadlock otherwise).
        uow.flush()
        for ask in expired:
            uow.vouchers.release(ask.id)
        return len(expired), len(asks)

    total = 0
    while True:
        (expired, locked), _ = executor.transaction(expire_batch)
        total += expired
        # A short batch was the last; a batch that expired nothing would only repeat.
        if locked < batch or expired == 0:
            break
    report = ExpiryReport(takeable_from, total)
    log.info("ask expiry: %s", report.as_dict())
    return report
