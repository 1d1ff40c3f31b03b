"""ID tokens an attacker could send, made from a real one of the local provider: the same
claims and `kid`, with the signature forged, stripped, or made with an algorithm the API must
refuse; and tokens the provider itself signs with claims it should not carry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support.oidc_local import authorization_code, discovery_document, exchange_code, set_user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A token's header and claims, unverified."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def provider_token(issuer: str, sub: str, claims: dict[str, Any], nonce: str | None = None) -> str:
    """A token the provider signs with its real key, whose claims include `claims` (the
    provider lets a user's claims replace the registered ones: `exp`, `aud`, `iss`)."""
    set_user(issuer, sub, claims)
    return exchange_code(issuer, authorization_code(issuer, sub, nonce=nonce))


def forged(token: str) -> str:
    """The same header (kid included) and claims, signed with a key of our own."""
    header, claims = parts(token)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": header["kid"]})


def unsigned(token: str) -> str:
    """`alg: none`: the claims with no signature at all."""
    header, claims = parts(token)
    head = {"alg": "none", "typ": "JWT", "kid": header["kid"]}
    return f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}."


def hs256_with_public_key(token: str, issuer: str) -> str:
    """Algorithm confusion: HS256 with the provider's public key (PEM) as the HMAC secret,
    which a verifier that takes `alg` from the token would accept."""
    header, claims = parts(token)
    with_kid = [
        k for k in _jwks(issuer)["keys"] if k.get("kid") == header["kid"] and k["kty"] == "RSA"
    ]
    public = jwt.PyJWK(with_kid[0]).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = {"alg": "HS256", "typ": "JWT", "kid": header["kid"]}
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _jwks(issuer: str) -> dict[str, Any]:
    import urllib.request

    uri = discovery_document(issuer)["jwks_uri"]
    with urllib.request.urlopen(uri, timeout=10) as resp:  # noqa: S310 - the loopback provider
        keys: dict[str, Any] = json.loads(resp.read())
        return keys
