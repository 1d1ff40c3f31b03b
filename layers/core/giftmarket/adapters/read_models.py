"""Redis read models (ElastiCache in AWS): response-shaped, idempotent, never going back.

A read model is a Redis hash whose fields are the response's fields. Every write is a Lua
script, so it is atomic, and guarded:
- fields that never change once set (a user's email) are written only when absent, so an
  event that arrives late cannot lose them and one that arrives twice changes nothing;
- fields that change carry the aggregate version they reflect (`_v:<group>`), and are
  written only by an event at least as new: a duplicate or out-of-order delivery never
  moves a read model backwards.
After an event is applied its outbox id is remembered for a day (`rm:seen:<id>`), which is
how a query carrying a consistency token knows that token's events have arrived.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

SEEN_TTL_SECONDS = 24 * 3600

# KEYS[1] the hash; ARGV: version-field, version, n-once, once-pairs..., then versioned pairs.
# Returns 1 when the versioned fields were written, 0 when the event was older than the hash.
_APPLY = """
local key, vfield, version = KEYS[1], ARGV[1], tonumber(ARGV[2])
local n_once = tonumber(ARGV[3])
local i = 4
for _ = 1, n_once do
  redis.call('HSETNX', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
if i > #ARGV then return 1 end
local current = tonumber(redis.call('HGET', key, vfield) or '0')
if version < current then return 0 end
local pairs = {vfield, version}
while i <= #ARGV do
  pairs[#pairs + 1] = ARGV[i]
  pairs[#pairs + 1] = ARGV[i + 1]
  i = i + 2
end
redis.call('HSET', key, unpack(pairs))
return 1
"""


def user_key(user_id: str) -> str:
    return f"rm:user:{user_id}"


def seen_key(outbox_id: str) -> str:
    return f"rm:seen:{outbox_id}"


class ReadModels:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._apply = client.register_script(_APPLY)

    # -- writing (the projector) --------------------------------------------------------
    def apply(
        self,
        key: str,
        *,
        version_field: str,
        version: int,
        once: Mapping[str, object] | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> bool:
        """Write `once` fields if absent and `fields` if `version` is not older than the
        hash's `version_field`. True when `fields` were written."""
        args: list[str | int] = [version_field, version, len(once or {})]
        for name, value in (once or {}).items():
            args += [name, _encode(value)]
        for name, value in (fields or {}).items():
            args += [name, _encode(value)]
        return bool(self._apply(keys=[key], args=args))

    def mark_seen(self, outbox_id: str) -> None:
        self._redis.set(seen_key(outbox_id), 1, ex=SEEN_TTL_SECONDS)

    # -- reading (the query API) --------------------------------------------------------
    def all_seen(self, outbox_ids: Iterable[str]) -> bool:
        keys = [seen_key(i) for i in outbox_ids]
        return not keys or int(self._redis.exists(*keys)) == len(keys)

    def user(self, user_id: str) -> dict[str, Any] | None:
        """The /api/me answer, or None if the read model does not have the user yet."""
        raw = self._redis.hgetall(user_key(user_id))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "email" not in fields or "_v:balances" not in fields:
            return None
        return {
            "user_id": user_id,
            "email": fields["email"],
            "nickname": fields["nickname"],
            "available_points": int(fields["available_points"]),
            "escrowed_points": int(fields["escrowed_points"]),
            "pending_points": int(fields["pending_points"]),
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
