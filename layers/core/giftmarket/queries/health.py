"""GET /api/health: can each part of the system be used right now, and if not, why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from giftmarket.lazy import lazy

if TYPE_CHECKING:
    import redis

    from giftmarket.adapters import cache as redis_cache
    from giftmarket.adapters.db import Database
else:
    # With redis: not paid for at the query API's import.
    redis_cache = lazy("giftmarket.adapters.cache")


def system_health(database: Database, cache: redis.Redis) -> dict[str, Any]:
    primary = database.ping_primary()
    if database.monitor is None:
        replica, lag = "not configured (queries read the primary)", None
    else:
        # A fresh reading, not the cached one the query path uses: health must tell the truth now.
        state = database.monitor.probe()
        replica, lag = state.status, state.lag_seconds
    cache_status = redis_cache.ping(cache)
    queries_servable = primary == "ok" or replica == "ok"
    if primary == replica == cache_status == "ok":
        status = "ok"
    else:
        status = "degraded" if queries_servable else "down"
    return {
        "status": status,
        "primary": primary,
        "replica": replica,
        "replica_lag_seconds": lag,
        "cache": cache_status,
    }
