"""The unit of work: one transaction on the primary per command.

Everything a command reads and writes goes through `uow.session` (its connection: one MySQL
session, one transaction), so its reads see its own writes and take their locks on the
primary, never on a lagging replica. At commit the aggregates that changed are saved
(guarded by the version they were loaded at) and their events written to the outbox, in the
same transaction: all of it lands, or none of it.
"""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Self

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from giftmarket.adapters import repositories as repos
from giftmarket.adapters.db import (
    RACE_ERROR_CODES,
    Database,
    mysql_error_code,
    raise_if_primary_lost,
)
from giftmarket.adapters.outbox import write_events
from giftmarket.commands.ports import Committed, TransientConflict, UnitOfWork


def _lost_a_race(exc: BaseException) -> bool:
    if isinstance(exc, repos.StaleAggregate):
        return True
    return isinstance(exc, DBAPIError) and mysql_error_code(exc) in RACE_ERROR_CODES


class SqlAlchemyUnitOfWork(UnitOfWork):
    def __init__(
        self, database: Database, idempotency_ttl: timedelta = timedelta(hours=24)
    ) -> None:
        self._database = database
        self._idempotency_ttl = idempotency_ttl
        self._session: Connection | None = None
        self._tracker: repos.Tracker | None = None

    @property
    def session(self) -> Connection:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._session

    def __enter__(self) -> Self:
        try:
            session = self._session = self._database.writer_connection()
        except Exception as exc:
            # No connection from the pool (primary unreachable): a 503, as in the block.
            raise_if_primary_lost(exc)
            raise
        tracker = self._tracker = repos.Tracker(session)
        self._written = Committed((), {})
        self.users = repos.SqlUserRepository(tracker)
        self.identities = repos.SqlIdentityRepository(session)
        self.products = repos.SqlProductRepository(tracker)
        self.images = repos.SqlImageRepository(tracker)
        self.sell_bids = repos.SqlSellBidRepository(tracker)
        self.buy_bids = repos.SqlBuyBidRepository(tracker)
        self.orders = repos.SqlOrderRepository(tracker)
        self.coupons = repos.SqlCouponRepository(tracker)
        self.settlements = repos.SqlSettlementRepository(tracker)
        self.vouchers = repos.SqlVoucherRegistry(session)
        self.ledger = repos.SqlLedger(session)
        self.idempotency = repos.SqlIdempotencyStore(session, self._idempotency_ttl)
        self.admin_rights = repos.SqlAdminRightsLog(session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session, self._tracker = self.session, None, None
        try:
            # Whatever was not committed explicitly is rolled back: no partial writes.
            session.rollback()
        except Exception:
            if exc is None:
                raise
        finally:
            session.close()
        if exc is None:
            return
        # Lost the primary anywhere in the command (failover, outage): a retryable 503.
        raise_if_primary_lost(exc)
        if _lost_a_race(exc):
            raise TransientConflict(str(exc)[:200]) from exc

    def flush(self) -> Committed:
        assert self._tracker is not None, "flush outside the `with` block"
        # Errors here surface through __exit__, which turns a lost primary into a 503.
        self._tracker.save_changed()
        written = write_events(self.session, self._tracker.new_events())
        # Events repositories wrote set-based (a settlement's orders) were written first.
        earlier = self._tracker.take_written()
        self._written = Committed(
            self._written.outbox_ids + earlier.outbox_ids + written.outbox_ids,
            {**self._written.versions, **earlier.versions, **written.versions},
        )
        return self._written

    def commit(self) -> Committed:
        committed = self.flush()
        self.session.commit()
        return committed
