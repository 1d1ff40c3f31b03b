"""The unit of work: one transaction on the primary per command.

Everything a command reads and writes goes through `uow.session`, so its reads see its own
writes and take their locks on the primary, never on a lagging replica.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session

from giftmarket.adapters.db import (
    Database,
    DatabaseUnavailable,
    is_connectivity_error,
    short_reason,
    translate_primary_errors,
)


class SqlAlchemyUnitOfWork:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._session

    def __enter__(self) -> Self:
        self._session = self._database.writer_session()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self.session, None
        try:
            # Whatever was not committed explicitly is rolled back: no partial writes.
            session.rollback()
        except Exception:
            if exc is None:
                raise
        finally:
            session.close()
        if exc is not None and is_connectivity_error(exc):
            # Lost the primary anywhere in the command (failover, outage): a retryable 503.
            raise DatabaseUnavailable("primary", short_reason(exc)) from exc

    def commit(self) -> None:
        with translate_primary_errors():
            self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
