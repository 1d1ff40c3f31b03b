"""Sign-in abuse: how many failed logins one email, or one source address, may have.

Failures are counted in a fixed window that starts at the first failure and ends
`window_seconds` later, whatever happens meanwhile: an attempt refused because the subject is
locked out is not counted and does not move the end, so nobody can keep an account locked
beyond the window they opened by failing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from giftmarket.domain.errors import DomainError


@dataclass(frozen=True)
class SignInLimits:
    per_email: int
    per_address: int
    window_seconds: int

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)


@dataclass(frozen=True)
class FailureWindow:
    """The failed sign-ins of one subject (an email or an address) in its current window."""

    started_at: datetime
    failures: int
    expires_at: datetime

    @classmethod
    def opened(cls, now: datetime, window: timedelta) -> FailureWindow:
        return cls(now, 1, now + window)

    def is_open(self, now: datetime) -> bool:
        return self.failures > 0 and now < self.expires_at

    def retry_after(self, now: datetime, limit: int) -> int | None:
        """Whole seconds until the subject may try again (at least 1), None while it may."""
        if not self.is_open(now) or self.failures < limit:
            return None
        return max(1, math.ceil((self.expires_at - now).total_seconds()))

    def counted(self, now: datetime, window: timedelta) -> FailureWindow:
        """This window with one more failure; a new window if this one has passed."""
        if not self.is_open(now):
            return FailureWindow.opened(now, window)
        return FailureWindow(self.started_at, self.failures + 1, self.expires_at)

    def uncounted(self, now: datetime) -> FailureWindow | None:
        """This window with one failure less; None when nothing is left of it."""
        if not self.is_open(now) or self.failures <= 1:
            return None
        return FailureWindow(self.started_at, self.failures - 1, self.expires_at)


def lockout(windows: Iterable[tuple[FailureWindow | None, int]], now: datetime) -> int | None:
    """Seconds until every locked-out subject of an attempt may try again (each given with
    its limit), None when none of them is locked out."""
    waits = [w.retry_after(now, limit) for w, limit in windows if w is not None]
    return max((s for s in waits if s is not None), default=None)


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    default_detail = "Too many failed sign-ins; try again after Retry-After seconds."

    def __init__(self, retry_after_seconds: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after_seconds = max(1, retry_after_seconds)
