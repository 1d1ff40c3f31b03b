import itertools
from datetime import UTC, datetime

import pytest

from giftmarket.domain.ids import IdGenerator


@pytest.fixture
def ids() -> IdGenerator:
    """Deterministic, ordered ids, so tests can name what a service will create."""
    counter = itertools.count(1)
    return lambda: f"ID{next(counter):06d}"


@pytest.fixture
def now() -> datetime:
    return datetime(2025, 3, 14, 3, 0, tzinfo=UTC)
