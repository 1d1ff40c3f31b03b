"""How every query is answered: the read model first, SQL when it cannot answer.

- No token: the Redis read model; on a miss, or with Redis down, the same answer from SQL on
  the replica (the primary when the replica is down or lagging). Once Redis failed to
  answer, queries go straight to SQL for a short pause (adapters/cache.py RedisBreaker)
  rather than each paying the timeout first.
- With an X-Consistency-Token: wait, briefly and bounded, for the token's events to be
  projected; if they are not, answer from the primary rather than return stale data.
- A query with no read model (search) reads the replica, or the primary with a token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from aws_lambda_powertools.metrics import MetricUnit
from sqlalchemy import Connection

from giftmarket.adapters.cache import RedisBreaker
from giftmarket.adapters.db import Database
from giftmarket.consistency import ConsistencyToken
from giftmarket.observability import metrics
from giftmarket.read_ports import ReadModelReader

log = logging.getLogger(__name__)

T = TypeVar("T")
Answer = dict[str, Any]


@dataclass(frozen=True)
class Reads:
    read_models: ReadModelReader
    database: Database
    breaker: RedisBreaker  # the container's: Redis found unreachable is skipped a while
    # The stale re-render problem: wait this long at most for a command's events to land.
    consistency_wait_seconds: float = 0.3
    poll_seconds: float = 0.005

    def answer(
        self,
        *,
        read_model: Callable[[], T | None],
        sql: Callable[[Connection], T | None],
        token: ConsistencyToken | None = None,
    ) -> T | None:
        if token is not None and not self._projected(token):
            metrics.add_metric(name="ConsistencyFallbacks", unit=MetricUnit.Count, value=1)
            return self.database.run_on_primary(sql)
        # A token's events are projected, but the replica may not have them yet: a read
        # model miss then goes to the primary too.
        fallback = self.database.run_query if token is None else self.database.run_on_primary
        if not self.breaker.allows():
            metrics.add_metric(name="ReadModelUnavailable", unit=MetricUnit.Count, value=1)
            return fallback(sql)
        try:
            found = read_model()
        except redis.RedisError as exc:
            self._failed(exc)
            metrics.add_metric(name="ReadModelUnavailable", unit=MetricUnit.Count, value=1)
            return fallback(sql)
        self.breaker.answered()
        if found is not None:
            metrics.add_metric(name="ReadModelHits", unit=MetricUnit.Count, value=1)
            return found
        metrics.add_metric(name="ReadModelMisses", unit=MetricUnit.Count, value=1)
        return fallback(sql)

    def sql_only(
        self, sql: Callable[[Connection], T], *, token: ConsistencyToken | None = None
    ) -> T:
        """A query with no read model (search): the replica, or with a token the primary.
        Whether the replica has a command's commits cannot be told from its token (its
        events being projected says nothing of the replica), so the token is honoured on
        the primary, as a read-model miss under a token is."""
        if token is None:
            return self.database.run_query(sql)
        metrics.add_metric(name="ConsistencyFallbacks", unit=MetricUnit.Count, value=1)
        return self.database.run_on_primary(sql)

    def _failed(self, exc: redis.RedisError) -> None:
        if self.breaker.failed(exc):
            log.warning(
                "read models unreachable; queries answer from SQL for %g s: %s",
                self.breaker.pause_seconds,
                exc,
            )
        else:
            log.warning("read model failed, answering from SQL: %s", exc)

    def _projected(self, token: ConsistencyToken) -> bool:
        if not self.breaker.allows():
            return False  # not projected as far as anyone can tell: the primary answers
        deadline = time.monotonic() + self.consistency_wait_seconds
        while True:
            try:
                seen = self.read_models.all_seen(token.outbox_ids)
            except redis.RedisError as exc:
                self._failed(exc)
                return False
            self.breaker.answered()
            if seen:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_seconds)
