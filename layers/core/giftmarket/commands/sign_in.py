"""Password sign-in behind the sign-in abuse limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from giftmarket.commands.context import InvalidCredentials
from giftmarket.commands.ports import SignInGuard

T = TypeVar("T")


def guarded(guard: SignInGuard, email: str, address: str | None, attempt: Callable[[], T]) -> T:
    """Run a password sign-in `attempt` unless the email or the address is locked out
    (TooManyAttempts, before any password is checked: a correct one does not bypass it).
    A failure on credentials stays counted; any other outcome is withdrawn."""
    counted_by = guard.admit(email, address)
    try:
        result = attempt()
    except InvalidCredentials:
        raise
    except BaseException:
        counted_by.withdraw(email, address)
        raise
    counted_by.withdraw(email, address)
    return result
