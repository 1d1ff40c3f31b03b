"""The X-Consistency-Token: what a command wrote, so a later query can wait for it.

It carries the ids of the outbox events the command wrote and the version of every
aggregate it changed. It is not a secret and grants nothing: a forged token can only make
a query wait (bounded) and then read the primary.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

HEADER = "X-Consistency-Token"
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class ConsistencyToken:
    outbox_ids: tuple[str, ...] = ()
    versions: dict[str, int] = field(default_factory=dict)

    def encode(self) -> str:
        raw = json.dumps({"o": list(self.outbox_ids), "v": self.versions}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> ConsistencyToken | None:
        """The token, or None for anything that is not one we issued (never an error)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
        except (binascii.Error, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        outbox_ids, versions = data.get("o"), data.get("v")
        if not isinstance(outbox_ids, list) or not isinstance(versions, dict):
            return None
        if not all(isinstance(i, str) for i in outbox_ids):
            return None
        if not all(isinstance(k, str) and type(v) is int for k, v in versions.items()):
            return None
        return cls(tuple(outbox_ids), versions)
