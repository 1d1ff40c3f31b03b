"""Social sign-in's ID tokens, checked with PyJWT against each provider's published keys.

PyJWT does the cryptography and the registered claims (`iss`, `aud`, `exp`, `iat`, with 60 s
of leeway); it is already how our own tokens are made and checked, so one library and one
set of habits covers both. Its JWKS client is not used: it refetches on every unknown `kid`,
while here a key set is fetched at most once per floor, so tokens with made-up kids cannot
make the API hammer a provider. What this module adds:

- Keys are found through the issuer's discovery document (its `jwks_uri`), fetched with a
  short timeout and a size limit, kept per container (`OIDC_KEYS_MAX_AGE_SECONDS`), fetched
  again when a token names a kid we do not hold: that is how a provider's rotation is
  followed without a restart. While a provider cannot be reached, the keys held keep
  answering (for a day at most); a token whose key cannot be checked is a 503, not a 401.
- Only RS256 and ES256, and the key must be of that algorithm: `alg: none`, HS256 signed
  with a public key as the secret, or any other algorithm is refused before any key is used.
- `nonce`, when the app sends one, must be the token's.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from giftmarket.commands.ports import (
    IdTokenVerifier,
    InvalidToken,
    ProviderUnavailable,
    VerifiedIdentity,
)
from giftmarket.domain.errors import NotFound
from giftmarket.domain.users import MAX_SUBJECT_LENGTH
from giftmarket.domain.validation import storable
from giftmarket.lazy import lazy
from giftmarket.settings import OidcProvider, is_loopback_url

if TYPE_CHECKING:
    import jwt
else:
    jwt = lazy("jwt")

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
LEEWAY_SECONDS = 60
MAX_DOCUMENT_BYTES = 256 * 1024
# Keys held past their age while the provider cannot be reached: a provider's outage does not
# sign anyone out at once, but a key it withdrew is not trusted for long either.
STALE_KEYS_GRACE_SECONDS = 24 * 3600
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")

Fetch = Callable[[str, float], Any]  # (url, timeout) -> parsed JSON; raises FetchFailed


class FetchFailed(Exception):
    """A provider's document could not be fetched or read."""


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: the fetch ended meanwhile
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def fetch_json(url: str, timeout: float) -> Any:
    """GET `url` and parse its JSON, within `timeout` seconds in all and at most
    MAX_DOCUMENT_BYTES. A socket timeout bounds each read, not the whole: a server sending
    its headers or body a byte at a time could hold the request for minutes, so the socket
    is shut at the deadline, whatever is being read then. Redirects (possibly to plain http)
    are not followed: anything but a 200 is a failure."""
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchFailed(f"{url} is not an http(s) URL")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    watchdog: threading.Timer | None = None
    try:
        connection = connection_class(parts.hostname, parts.port, timeout=timeout)
        try:
            connection.connect()
            remaining = max(0.0, deadline - time.monotonic())
            watchdog = threading.Timer(remaining, _shut, args=(connection.sock,))
            watchdog.daemon = True
            watchdog.start()
            connection.request("GET", target, headers={"Accept": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise FetchFailed(f"{url} answered {response.status}")
            body = response.read(MAX_DOCUMENT_BYTES + 1)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            connection.close()
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise FetchFailed(f"{url}: {exc}") from exc
    if len(body) > MAX_DOCUMENT_BYTES:
        raise FetchFailed(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    if time.monotonic() >= deadline:  # cut short by the watchdog: maybe only part of it
        raise FetchFailed(f"{url} took longer than {timeout} s")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchFailed(f"{url} did not answer JSON") from exc


@dataclass
class _KeyCache:
    """One provider's keys, as this container last fetched them."""

    keys: dict[str, Any] = field(default_factory=dict)  # kid -> jwt.PyJWK
    fetched_at: float | None = None
    attempted_at: float | None = None
    failing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class OidcVerifier(IdTokenVerifier):
    def __init__(
        self,
        providers: Mapping[str, OidcProvider],
        *,
        timeout_seconds: float,
        keys_max_age_seconds: float,
        refetch_floor_seconds: float,
        allow_loopback_http: bool,
        fetch: Fetch = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = dict(providers)
        self._timeout = timeout_seconds
        self._max_age = keys_max_age_seconds
        self._floor = refetch_floor_seconds
        self._allow_loopback_http = allow_loopback_http
        self._fetch = fetch
        self._clock = clock
        self._caches = {name: _KeyCache() for name in self._providers}

    @property
    def retry_after_seconds(self) -> int:
        """When a provider that could not be reached is tried again."""
        return max(1, int(self._floor + 0.999))

    def verify(self, provider: str, id_token: str, nonce: str | None) -> VerifiedIdentity:
        config = self._providers.get(provider)
        if config is None:
            raise NotFound("provider")
        alg, kid = _header(id_token)
        key = self._key(provider, config, kid)
        if key.algorithm_name != alg:
            raise InvalidToken("The ID token's algorithm does not match its key.")
        claims = _claims(id_token, key, alg, config)
        if nonce is not None:
            token_nonce = claims.get("nonce")
            # surrogatepass: a token's JSON may hold a lone surrogate, which plain UTF-8
            # cannot encode (a 500); the strings are equal exactly when these bytes are.
            if not isinstance(token_nonce, str) or not hmac.compare_digest(
                token_nonce.encode("utf-8", "surrogatepass"),
                nonce.encode("utf-8", "surrogatepass"),
            ):
                raise InvalidToken("The ID token's nonce is not the one sent.")
        return _identity(provider, config, claims)

    # -- keys ----------------------------------------------------------------------------

    def _key(self, provider: str, config: OidcProvider, kid: str) -> Any:
        cache = self._caches[provider]
        with cache.lock:  # one fetch at a time per provider; the others wait for its keys
            now = self._clock()
            age = None if cache.fetched_at is None else now - cache.fetched_at
            wanted = age is None or age >= self._max_age or kid not in cache.keys
            may_try = cache.attempted_at is None or now - cache.attempted_at >= self._floor
            if wanted and may_try:
                cache.attempted_at = now
                try:
                    cache.keys = self._fetch_keys(config)
                except FetchFailed as exc:
                    cache.failing = True
                    log.warning("OpenID provider %s unreachable: %s", provider, exc)
                else:
                    cache.fetched_at, cache.failing = now, False
                    age = 0.0
            key = cache.keys.get(kid)
            usable = age is not None and age < self._max_age + STALE_KEYS_GRACE_SECONDS
            if key is not None and usable:
                return key
            if cache.failing or key is not None:
                raise ProviderUnavailable(
                    provider, "its keys cannot be fetched now", self.retry_after_seconds
                )
            raise InvalidToken("The ID token is not signed by a key of its provider.")

    def _fetch_keys(self, config: OidcProvider) -> dict[str, Any]:
        discovery = self._fetch(
            config.issuer.rstrip("/") + "/.well-known/openid-configuration", self._timeout
        )
        if not isinstance(discovery, dict) or discovery.get("issuer") != config.issuer:
            raise FetchFailed("the discovery document is not the configured issuer's")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not self._secure(jwks_uri):
            raise FetchFailed("the discovery document has no https jwks_uri")
        document = self._fetch(jwks_uri, self._timeout)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise FetchFailed("the key set has no keys")
        keys: dict[str, Any] = {}
        for entry in entries:
            usable = (
                isinstance(entry, dict)
                and isinstance(entry.get("kid"), str)
                and entry.get("kty") in _KEY_TYPES.values()
                and entry.get("use", "sig") == "sig"
            )
            if not usable:
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key of a kind we never accept; its neighbours may be fine
            if key.algorithm_name in ALGORITHMS:
                keys[entry["kid"]] = key
        return keys

    def _secure(self, url: str) -> bool:
        if url.startswith("https://"):
            return True
        return self._allow_loopback_http and url.startswith("http://") and is_loopback_url(url)


def _header(id_token: str) -> tuple[str, str]:
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as exc:
        raise InvalidToken("The ID token is not a signed JWT.") from exc
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS:
        raise InvalidToken("The ID token must be signed with RS256 or ES256.")
    if not isinstance(kid, str) or not 0 < len(kid) <= 256:
        raise InvalidToken("The ID token does not name its key (kid).")
    return str(alg), kid


def _claims(id_token: str, key: Any, alg: str, config: OidcProvider) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key.key,
            algorithms=[alg],
            audience=list(config.client_ids),
            issuer=list(config.token_issuers),
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("The ID token has expired.") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidToken("The ID token is for another application (aud).") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidToken("The ID token is from another issuer (iss).") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("The ID token's signature does not verify.") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("The ID token's claims are not valid.") from exc
    return claims


def _identity(provider: str, config: OidcProvider, claims: Mapping[str, Any]) -> VerifiedIdentity:
    subject = claims.get("sub")
    if not (
        isinstance(subject, str)
        and 0 < len(subject) <= MAX_SUBJECT_LENGTH
        and subject.isascii()
        and subject.isprintable()
    ):
        raise InvalidToken("The ID token's subject (sub) is not valid.")
    email = claims.get("email")
    if not (isinstance(email, str) and _EMAIL.match(email) and storable(email)):
        email = None
    # Apple states email_verified as the string "true".
    verified = claims.get("email_verified") in (True, "true")
    name = next(
        (claims[n] for n in ("nickname", "name") if isinstance(claims.get(n), str) and claims[n]),
        None,
    )
    return VerifiedIdentity(
        provider=provider,
        subject=subject,
        issued_at=int(claims["iat"]),
        email=email,
        email_verified=email is not None and verified,
        trust_email=config.trust_email,
        name=name if name is None or storable(name) else None,
    )
