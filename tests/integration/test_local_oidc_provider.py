"""The test stack's development OpenID provider, for real: its discovery document names the
issuer the app is configured with, its ID tokens verify against its published keys with the
claims asked for, and a restart rotates its key (a new `kid`), which the app's verifier must
survive."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from tests.support.oidc_local import (
    OidcLocalError,
    authorization_code,
    discovery_document,
    exchange_code,
    local_id_token,
)

from giftmarket_local import stack as local_stack
from giftmarket_local.processes import ProcessError
from giftmarket_local.stack import LOCAL_OIDC_CLIENT_ID, Stack


@pytest.fixture
def issuer(stack: Stack) -> str:
    assert stack.status()["oidc"] is not None
    return stack.config.oidc_issuer


def unique_sub() -> str:
    return f"user-{os.urandom(6).hex()}"


def verified(issuer: str, token: str, audience: str = LOCAL_OIDC_CLIENT_ID) -> dict[str, Any]:
    """The token's claims, checked as a relying party checks them: signature against the
    provider's JWKS (found through discovery), RS256 only, issuer, audience and expiry."""
    keys = jwt.PyJWKClient(discovery_document(issuer)["jwks_uri"], cache_jwk_set=False)
    claims: dict[str, Any] = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["iss", "sub", "aud", "exp", "iat"]},
    )
    return claims


def test_the_discovery_document_names_the_issuer_the_app_is_given(
    stack: Stack, issuer: str
) -> None:
    document = discovery_document(issuer)
    assert document["issuer"] == issuer == f"http://127.0.0.1:{stack.config.oidc_port}"
    assert document["jwks_uri"].startswith(f"{issuer}/")
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    local = stack.config.app_settings().oidc_providers["local"]
    assert (local.issuer, local.client_ids) == (issuer, (LOCAL_OIDC_CLIENT_ID,))


def test_a_token_carries_what_was_asked_for_and_verifies_against_the_jwks(issuer: str) -> None:
    sub = unique_sub()
    token = local_id_token(
        issuer, sub, email=f"{sub}@example.com", email_verified=True, nonce="n-123"
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"]
    claims = verified(issuer, token)
    assert claims["sub"] == sub
    assert claims["email"] == f"{sub}@example.com"
    assert claims["email_verified"] is True
    assert claims["nonce"] == "n-123"
    assert claims["aud"] == [LOCAL_OIDC_CLIENT_ID]
    assert claims["iat"] <= time.time() + 5 < claims["exp"]


def test_a_user_left_alone_has_its_sub_as_an_unverified_email_and_no_nonce(issuer: str) -> None:
    sub = unique_sub()
    claims = verified(issuer, local_id_token(issuer, sub))
    assert (claims["sub"], claims["email"]) == (sub, sub)
    assert "email_verified" not in claims
    assert "nonce" not in claims


def test_the_claims_can_be_set_again_and_say_unverified(issuer: str) -> None:
    sub = unique_sub()
    local_id_token(issuer, sub, email="first@example.com", email_verified=True)
    claims = verified(issuer, local_id_token(issuer, sub, email_verified=False))
    assert (claims["email"], claims["email_verified"]) == (sub, False)


def test_a_token_for_another_client_is_not_for_the_app(issuer: str) -> None:
    token = local_id_token(issuer, unique_sub(), client_id="someone-else")
    assert verified(issuer, token, audience="someone-else")["aud"] == ["someone-else"]
    with pytest.raises(jwt.InvalidAudienceError):
        verified(issuer, token)


def test_a_code_is_good_once_and_a_bad_one_is_refused(issuer: str) -> None:
    code = authorization_code(issuer, unique_sub(), nonce="n-1")
    assert verified(issuer, exchange_code(issuer, code))["nonce"] == "n-1"
    with pytest.raises(OidcLocalError, match="invalid_grant"):
        exchange_code(issuer, code)
    with pytest.raises(OidcLocalError, match="invalid_grant"):
        exchange_code(issuer, "not-a-code")


def test_a_restart_of_the_provider_rotates_its_key(stack: Stack, issuer: str) -> None:
    old_token = local_id_token(issuer, unique_sub())
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    old_pid = stack.status()["oidc"]

    assert stack.stop(["oidc"]) == ["oidc"]
    assert stack.status()["oidc"] is None
    assert stack.up() == ["oidc"]  # only what was stopped is started again

    assert stack.status()["oidc"] not in (None, old_pid)
    new_token = local_id_token(issuer, unique_sub())
    assert jwt.get_unverified_header(new_token)["kid"] != old_kid
    assert verified(issuer, new_token)["iss"] == issuer
    # The old key is gone from the JWKS: a verifier must refetch it for the new `kid`, and
    # tokens signed before the restart no longer verify.
    with pytest.raises(jwt.PyJWKClientError):
        verified(issuer, old_token)


def test_a_missing_provider_venv_names_the_bootstrap(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert stack.stop(["oidc"]) == ["oidc"]
    try:
        monkeypatch.setattr(local_stack, "OIDC_PYTHON", tmp_path / "no-venv" / "bin" / "python")
        with pytest.raises(ProcessError, match="infra/local/bootstrap.sh"):
            stack.up()
        # What was running is left running; only the provider is missing.
        status = stack.status()
        assert status.pop("oidc") is None
        assert all(status.values()), status
    finally:
        monkeypatch.undo()
        stack.up()
    assert stack.status()["oidc"] is not None
