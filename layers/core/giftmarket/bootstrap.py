"""The composition root: builds settings, engines and clients once per Lambda container.

Nothing is built at import time. The first request asks for the container; later requests
in the same (warm) container reuse it. Tests call `bootstrap(...)` with their own parts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import redis

from giftmarket.adapters.cache import build_redis
from giftmarket.adapters.db import Database
from giftmarket.settings import Settings


@dataclass
class Container:
    settings: Settings
    database: Database
    redis: redis.Redis
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self.database.dispose()
            self.redis.close()
            self._closed = True


_lock = threading.Lock()
_container: Container | None = None


def bootstrap(
    settings: Settings | None = None,
    database: Database | None = None,
    redis_client: redis.Redis | None = None,
) -> Container:
    """Build a container from the given parts, the rest from settings."""
    settings = settings or Settings()
    return Container(
        settings=settings,
        database=database or Database.from_settings(settings),
        redis=redis_client or build_redis(settings),
    )


def get_container() -> Container:
    """The container of this process, built on first use."""
    global _container
    if _container is None:
        with _lock:
            if _container is None:
                _container = bootstrap()
    return _container


def set_container(container: Container | None) -> None:
    """Install (or, with None, forget) the process-wide container; for tests and tools."""
    global _container
    with _lock:
        _container = container
