"""A secret held by a container and read again when a server refuses it (a rotation).

Credentials a server checks at login (the database password, the Redis AUTH token) are read
from Secrets Manager once and kept; a rotation shows only when a new connection is refused.
`SecretValue.refresh` then reads the secret again past Powertools' cache: once for all the
threads refused at the same time, and at most once per `min_interval_seconds` while the
secret still holds the refused value (it is wrong, or the rotation has not stored the new
one yet), so those logins fail without a Secrets Manager call each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class SecretValue(Generic[T]):
    def __init__(
        self,
        fetch: Callable[[bool], T],
        *,
        name: str,
        min_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch  # fetch(fresh): fresh reads past Powertools' cache
        self._name = name  # for the logs
        self._min_interval = min_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._current = fetch(False)
        self._fetched_at = clock()
        self.refreshes = 0  # times a read found another value

    @property
    def current(self) -> T:
        return self._current

    def refresh(self, refused: T) -> T | None:
        """A value other than the `refused` one, read again from the secret (or by another
        thread just now); None when the secret still holds the refused value."""
        with self._lock:
            if self._current != refused:
                return self._current
            if self._clock() - self._fetched_at < self._min_interval:
                return None
            self._fetched_at = self._clock()
            try:
                fresh = self._fetch(True)
            except Exception:  # noqa: BLE001 - the refused login's error is what callers get
                log.exception("cannot read the %s secret again", self._name)
                return None
            if fresh == refused:
                return None
            self._current = fresh
            self.refreshes += 1
        log.warning("the %s refused its credentials; using the secret read again", self._name)
        return fresh
