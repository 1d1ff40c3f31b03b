"""ID tokens from the local stack's development OpenID provider (oidc-provider-mock), got as
a mobile app's SDK gets them, minus the browser: the authorization request is answered with
a redirect whose Location carries the code (read, never followed), and the code is exchanged
for the tokens. The provider needs no client registration and accepts any client id, so the
token's audience is whatever `client_id` is asked for.

The provider keeps its users in memory: a user's claims, once set, stay until it restarts.
A user first seen at the authorization request gets the claims {"email": sub}.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from giftmarket_local.stack import LOCAL_OIDC_CLIENT_ID, StackConfig

# Never visited: the code is read from the redirect's Location header.
REDIRECT_URI = "http://127.0.0.1/cb"
TIMEOUT_SECONDS = 10


class OidcLocalError(RuntimeError):
    """The local provider refused a step of the flow, or answered something unexpected."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 302 as an HTTPError, Location included


_opener = urllib.request.build_opener(_NoRedirects)


def issuer_of_test_stack() -> str:
    """The issuer of the `test` profile's provider (GM_TEST_OIDC_PORT honoured)."""
    return StackConfig.for_profile("test").oidc_issuer


def discovery_document(issuer: str) -> dict[str, Any]:
    url = f"{issuer}/.well-known/openid-configuration"
    status, _, text = _send("GET", url)
    if status != 200:
        raise OidcLocalError(f"GET {url} answered {status}: {text}")
    document = _json(text)
    if not isinstance(document, dict):
        raise OidcLocalError(f"{issuer}: the discovery document is not a JSON object")
    return document


def user_claims(
    sub: str, *, email: str | None = None, email_verified: bool | None = None
) -> dict[str, Any]:
    """The claims PUT /users/<sub> is sent: the provider replaces the user's claims whole,
    so the email defaults to the sub, as for a user it creates itself."""
    claims: dict[str, Any] = {"email": sub if email is None else email}
    if email_verified is not None:
        claims["email_verified"] = email_verified
    return claims


def set_user(issuer: str, sub: str, claims: dict[str, Any]) -> None:
    url = f"{issuer}/users/{urllib.parse.quote(sub, safe='')}"
    body = json.dumps(claims).encode()
    status, _, text = _send("PUT", url, body, {"content-type": "application/json"})
    if status != 204:
        raise OidcLocalError(f"PUT {url} answered {status}: {text}")


def code_from_location(location: str) -> str:
    """The authorization code in a redirect to REDIRECT_URI; the provider's error otherwise."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    if "code" in query:
        return query["code"][0]
    error = query.get("error", ["no code"])[0]
    description = query.get("error_description", [""])[0]
    raise OidcLocalError(f"authorization refused: {error} {description}".strip())


def authorization_code(
    issuer: str, sub: str, *, nonce: str | None = None, client_id: str = LOCAL_OIDC_CLIENT_ID
) -> str:
    params = {
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "openid email",  # without `email` the token carries no email claims
    }
    if nonce is not None:
        params["nonce"] = nonce
    url = f"{issuer}/oauth2/authorize?{urllib.parse.urlencode(params)}"
    form = urllib.parse.urlencode({"sub": sub}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    status, location, text = _send("POST", url, form, headers)
    if status != 302 or not location:
        raise OidcLocalError(f"authorization answered {status}, not a redirect: {text}")
    return code_from_location(location)


def exchange_code(issuer: str, code: str, *, client_id: str = LOCAL_OIDC_CLIENT_ID) -> str:
    """The ID token for an authorization code (the provider takes any client secret)."""
    form = urllib.parse.urlencode(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    ).encode()
    basic = base64.b64encode(f"{client_id}:local".encode()).decode()
    headers = {
        "authorization": f"Basic {basic}",
        "content-type": "application/x-www-form-urlencoded",
    }
    status, _, text = _send("POST", f"{issuer}/oauth2/token", form, headers)
    if status != 200:
        raise OidcLocalError(f"token exchange answered {status}: {text}")
    tokens = _json(text)
    if not isinstance(tokens, dict) or not isinstance(tokens.get("id_token"), str):
        raise OidcLocalError(f"token exchange answered no id_token: {text[:500]}")
    return str(tokens["id_token"])


def local_id_token(
    issuer: str,
    sub: str,
    *,
    email: str | None = None,
    email_verified: bool | None = None,
    nonce: str | None = None,
    client_id: str = LOCAL_OIDC_CLIENT_ID,
) -> str:
    """An ID token for `sub` from the local provider at `issuer`, for audience `client_id`.
    With `email` or `email_verified` the user's claims are set first (both replaced)."""
    if email is not None or email_verified is not None:
        set_user(issuer, sub, user_claims(sub, email=email, email_verified=email_verified))
    code = authorization_code(issuer, sub, nonce=nonce, client_id=client_id)
    return exchange_code(issuer, code, client_id=client_id)


def _send(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str | None, str]:
    """Status, Location header and body of one request; redirects are not followed."""
    request = urllib.request.Request(  # noqa: S310 - the local provider, on loopback
        url, data=body, headers=headers or {}, method=method
    )
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as resp:
            return int(resp.status), resp.headers.get("Location"), resp.read().decode()
    except urllib.error.HTTPError as err:  # 3xx (not followed), 4xx, 5xx
        text = err.read().decode(errors="replace")[:500]
        return err.code, err.headers.get("Location"), text
    except OSError as exc:
        raise OidcLocalError(f"{method} {url}: {exc}") from exc


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise OidcLocalError(f"not JSON: {text[:200]!r}") from exc
