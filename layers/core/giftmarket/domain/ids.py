"""Entity ids: ULIDs, 26 Crockford base32 characters, sortable by creation time."""

import re
import secrets
import threading
import time
from typing import Protocol

ID_LENGTH = 26
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIMESTAMP_BITS = 48
_RANDOM_BITS = 80


class IdGenerator(Protocol):
    def __call__(self) -> str: ...


def encode_ulid(timestamp_ms: int, randomness: int) -> str:
    if not 0 <= timestamp_ms < 1 << _TIMESTAMP_BITS:
        raise ValueError(f"timestamp out of range: {timestamp_ms}")
    if not 0 <= randomness < 1 << _RANDOM_BITS:
        raise ValueError("randomness out of range")
    value = timestamp_ms << _RANDOM_BITS | randomness
    digits = []
    for _ in range(ID_LENGTH):
        digits.append(CROCKFORD_ALPHABET[value & 0b11111])
        value >>= 5
    return "".join(reversed(digits))


class MonotonicUlids:
    """Within one millisecond (or if the clock steps back) the random part is
    incremented instead of redrawn, so ids made by one process never sort backwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_timestamp_ms = -1
        self._last_randomness = 0

    def __call__(self) -> str:
        with self._lock:
            timestamp_ms = time.time_ns() // 1_000_000
            if timestamp_ms > self._last_timestamp_ms:
                randomness = secrets.randbits(_RANDOM_BITS)
            else:
                timestamp_ms = self._last_timestamp_ms
                randomness = self._last_randomness + 1
                if randomness >> _RANDOM_BITS:
                    timestamp_ms += 1
                    randomness = secrets.randbits(_RANDOM_BITS)
            self._last_timestamp_ms, self._last_randomness = timestamp_ms, randomness
            return encode_ulid(timestamp_ms, randomness)


_process_ulids = MonotonicUlids()


def new_id() -> str:
    return _process_ulids()


_ULID_TEXT = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def is_ulid(value: str) -> bool:
    """Whether `value` can be one of our ids (anything else names nothing)."""
    return bool(_ULID_TEXT.match(value))
