"""Password hashing with argon2id (argon2-cffi)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from giftmarket.commands import ports


class Argon2Passwords(ports.PasswordHasher):
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int = 1) -> None:
        # parallelism 1: a Lambda with 1 GB has one vCPU's worth of compute.
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    @functools.cache  # noqa: B019 - one hasher per container; the cache lives as long
    def dummy_hash(self) -> str:
        return self._hasher.hash("no one's password")
