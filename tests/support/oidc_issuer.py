"""An OpenID provider in memory, for tests of social sign-in without a network.

`FakeIssuer.fetch` plugs into `OidcVerifier(fetch=...)`: it answers the discovery document and
the key set (JWKS) as a provider's web server would, and notes every URL asked for. Its keys are
real (RSA 2048 for RS256, EC P-256 for ES256), and its tokens are signed with PyJWT, so what the
verifier checks is what it would check against Kakao, Google or Apple. Tokens the verifier must
refuse are made here too: any claim left out or changed, another key under a published kid, an
unsigned or HMAC-signed token built by hand.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from giftmarket.adapters.oidc import FetchFailed

DEFAULT_ISSUER = "https://issuer.test"
CLIENT_ID = "giftmarket-app"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# RSA keys take a tenth of a second each to make: they are made once and handed out in
# turn. Any KEY_POOL consecutive keys are distinct, so within one test (which makes far
# fewer) a "forged" token's key is never its issuer's.
KEY_POOL = 16
_rsa_keys: list[rsa.RSAPrivateKey] = []
_next_rsa = itertools.count()


def new_private_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        n = next(_next_rsa) % KEY_POOL
        if n == len(_rsa_keys):
            _rsa_keys.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _rsa_keys[n]
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"no keys for {alg}")


def public_jwk(private_key: PrivateKey, kid: str) -> dict[str, Any]:
    """The key set entry of `private_key`'s public half, as providers publish it."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        entry: Any = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        alg = "RS256"
    else:
        entry = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        alg = "ES256"
    return {**entry, "kid": kid, "use": "sig", "alg": alg}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str  # RS256 or ES256
    private_key: PrivateKey

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.private_key, self.kid)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    return (
        f"{b64url(json.dumps(dict(header)).encode())}.{b64url(json.dumps(dict(claims)).encode())}"
    )


def hand_made(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes) -> str:
    """A compact JWS put together without PyJWT, which refuses to make some bad ones."""
    return f"{_segments(header, claims)}.{b64url(signature)}"


def hs256(header: Mapping[str, Any], claims: Mapping[str, Any], secret: bytes) -> str:
    """An HS256 token signed with `secret` (a public key's PEM, for the algorithm-confusion
    attack: PyJWT would not sign with that, so it is done by hand)."""
    signing_input = _segments({**header, "alg": "HS256"}, claims)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


class FakeIssuer:
    """One provider: its issuer URL, its published keys, its discovery document."""

    def __init__(
        self, issuer: str = DEFAULT_ISSUER, *, algs: Iterable[str] = ("RS256", "ES256")
    ) -> None:
        self.issuer = issuer
        self.jwks_uri = f"{issuer}/oauth2/jwks"
        # What the discovery document says; a test changes them to misbehave.
        self.discovery_issuer = issuer
        self.extra_jwks_entries: list[Any] = []  # published beside the keys, as they are
        self.reachable = True
        self.fetched: list[str] = []  # every URL asked for, reachable or not
        self.keys: dict[str, SigningKey] = {}  # kid -> key, the ones published
        self._serial = 0
        for alg in algs:
            self.add_key(alg)

    # -- keys ------------------------------------------------------------------------------

    def add_key(self, alg: str = "RS256", kid: str | None = None) -> SigningKey:
        self._serial += 1
        key = SigningKey(kid or f"{alg.lower()}-{self._serial}", alg, new_private_key(alg))
        self.keys[key.kid] = key
        return key

    def rotate(self, alg: str = "RS256", *, keep_old: bool = False) -> SigningKey:
        """A new key for `alg` (a new kid); the old ones of that alg dropped unless kept."""
        if not keep_old:
            self.keys = {kid: k for kid, k in self.keys.items() if k.alg != alg}
        return self.add_key(alg)

    def key_for(self, alg: str) -> SigningKey:
        """The newest published key of `alg`."""
        return [k for k in self.keys.values() if k.alg == alg][-1]

    # -- the web server ----------------------------------------------------------------------

    @property
    def fetch_count(self) -> int:
        return len(self.fetched)

    def fetch(self, url: str, timeout: float) -> Any:
        self.fetched.append(url)
        if not self.reachable:
            raise FetchFailed(f"{url}: connection refused")
        if url == f"{self.issuer.rstrip('/')}/.well-known/openid-configuration":
            document: Any = {
                "issuer": self.discovery_issuer,
                "jwks_uri": self.jwks_uri,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        elif url == self.jwks_uri:
            document = {"keys": [k.jwk for k in self.keys.values()] + self.extra_jwks_entries}
        else:
            raise FetchFailed(f"{url} answered 404")
        return copy.deepcopy(document)  # parsed anew each time, as from the wire

    # -- tokens ------------------------------------------------------------------------------

    def claims(
        self,
        *,
        sub: str = "user-1",
        aud: str | list[str] = CLIENT_ID,
        iss: str | None = None,
        iat: int = 0,
        exp: int = 600,
        email: str | None = None,
        email_verified: bool | str | None = None,
        nonce: str | None = None,
        name: str | None = None,
        extra: Mapping[str, Any] | None = None,
        omit: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The claims of an ID token; `iat` and `exp` are seconds from now (wall clock, as
        the verifier reads it)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer if iss is None else iss,
            "aud": aud,
            "sub": sub,
            "iat": now + iat,
            "exp": now + exp,
        }
        optional = {"email": email, "email_verified": email_verified, "nonce": nonce, "name": name}
        claims |= {k: v for k, v in optional.items() if v is not None}
        claims |= dict(extra or {})
        for name_ in omit:
            claims.pop(name_, None)
        return claims

    def token(
        self,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        key: PrivateKey | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An ID token signed with the issuer's newest `alg` key, or with `key` (a key of
        someone else's) under that key's kid; `kid` names another kid in the header."""
        own = self.key_for(alg)
        header = {"kid": own.kid if kid is None else kid, **(headers or {})}
        private_key = own.private_key if key is None else key
        return jwt.encode(self.claims(**claims), private_key, algorithm=alg, headers=header)
