"""The keyed hashes of voucher barcodes (HMAC-SHA256), under every key the deployment knows.

The keys are a JSON object in Secrets Manager: `{"current": "<kid>", "<kid>": "<key>", ...}`.
A listing records the barcode's hash under each of them, so after a rotation (a new key
added and made current) a voucher listed under an old key is still found: the old key's hash
of the new listing collides with it. A key may be removed once every voucher registered
under it has expired (`voucher_registry.expires_on`, per `kid`): an expired voucher cannot
be listed again anyway. Keys are read through Powertools' cache, so an added key reaches
every container within `max_age`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from giftmarket.commands.ports import BarcodeFingerprinter
from giftmarket.domain.vouchers import Fingerprint

MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class BarcodeKeys:
    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"the current barcode key {self.current!r} is not among the keys")
        for kid, key in self.keys.items():
            if not kid or len(kid) > 32 or not kid.isascii():
                raise ValueError(f"a barcode key's kid must be 1 to 32 ascii characters: {kid!r}")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"barcode key {kid!r} is shorter than {MIN_KEY_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> BarcodeKeys:
        """`{"current": kid, kid: key, ...}` (keys as text, used as their UTF-8 bytes)."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("the barcode keys are not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("current"), str):
            raise ValueError('the barcode keys need a "current" kid')
        keys = {kid: str(key).encode() for kid, key in document.items() if kid != "current"}
        return cls(document["current"], keys)


class HmacBarcodeFingerprinter(BarcodeFingerprinter):
    def __init__(self, read_keys: Callable[[], str]) -> None:
        # The keys' JSON, read on every call (a cached read, refreshed as it ages) and
        # parsed again only when it changed.
        self._read_keys = read_keys
        self._parsed: tuple[str, BarcodeKeys] | None = None

    def keys(self) -> BarcodeKeys:
        text = self._read_keys()
        parsed = self._parsed
        if parsed is None or parsed[0] != text:
            parsed = self._parsed = (text, BarcodeKeys.parse(text))
        return parsed[1]

    def fingerprints(self, barcode: str) -> tuple[Fingerprint, ...]:
        keys = self.keys()
        message = barcode.encode("ascii")
        ordered = [keys.current, *sorted(kid for kid in keys.keys if kid != keys.current)]
        return tuple(
            Fingerprint(kid, hmac.new(keys.keys[kid], message, hashlib.sha256).hexdigest())
            for kid in ordered
        )
