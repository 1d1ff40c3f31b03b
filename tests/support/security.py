"""The security probes' client and helpers (tests/security)."""

from __future__ import annotations

from tests.support.handler_client import MarketClient

from giftmarket.domain.ids import new_id


class Client(MarketClient):
    def sql(self, statement: str) -> str:
        """One value (or tab-separated row) read from the primary."""
        return self.stack.primary.sql(statement)


def missing_id() -> str:
    """A well-formed id that names no row."""
    return new_id()
