"""Adapter errors that the HTTP layer answers, apart from their adapters: importing them
must not import SQLAlchemy (the handlers register their answers at import)."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """The database a request needs cannot be reached; the caller should retry later."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"{role} database unavailable: {reason}")
        self.role = role
        self.reason = reason
