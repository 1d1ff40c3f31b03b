"""A change to the read-model scripts must say whether it changes the layout: code reading
one layout from a generation written in another would answer wrongly (or from SQL forever),
so `LAYOUT` is bumped whenever what the scripts write or read changes, and a new layout is
rebuilt before it is read (README, "Rebuild")."""

from __future__ import annotations

import hashlib
from pathlib import Path

from giftmarket.adapters import read_models

LUA = Path(read_models.__file__).parent / "lua"

# The scripts each layout was released with. After editing a script: if what it writes or
# reads changed, bump LAYOUT and add its fingerprint; if not (comments, speed with the same
# keys and fields), replace the current layout's fingerprint.
FINGERPRINTS = {
    3: "dd79c0b55805b2b1e2347ea5c868ba9318065c4cce169aaff585c367ad197e75",
}


def fingerprint() -> str:
    digest = hashlib.sha256()
    for script in sorted(LUA.glob("*.lua")):
        digest.update(script.name.encode() + b"\0" + script.read_bytes() + b"\0")
    return digest.hexdigest()


def test_the_scripts_are_those_of_the_current_layout() -> None:
    assert FINGERPRINTS.get(read_models.LAYOUT) == fingerprint(), (
        "lua/ changed: bump LAYOUT if what the scripts write or read changed, and record"
        f" the fingerprint {fingerprint()} in {__file__}"
    )
