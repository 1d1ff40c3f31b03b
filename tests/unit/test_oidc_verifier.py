"""The ID-token checks of social sign-in (adapters/oidc.py), against an issuer in memory: what
verifies, what is refused (401) and when the provider counts as unreachable (503), how keys
are cached and refetched. Then `fetch_json`, the real fetch, against a tiny loopback server."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from tests.support.fakes import SecondsClock
from tests.support.oidc_issuer import (
    CLIENT_ID,
    FakeIssuer,
    b64url,
    hand_made,
    hs256,
    new_private_key,
    public_jwk,
)

from giftmarket.adapters.oidc import MAX_DOCUMENT_BYTES, FetchFailed, OidcVerifier, fetch_json
from giftmarket.commands.ports import InvalidToken, ProviderUnavailable
from giftmarket.domain.errors import NotFound
from giftmarket.settings import OidcProvider
from giftmarket_local.tls import ensure_local_tls

FLOOR = 10.0
MAX_AGE = 3600.0


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer()


@pytest.fixture
def clock() -> SecondsClock:
    return SecondsClock(1000.0)


def verifier_of(
    issuer: FakeIssuer, clock: SecondsClock, *, allow_loopback_http: bool = False
) -> OidcVerifier:
    provider = OidcProvider(
        issuer=issuer.issuer,
        client_ids=("other-app", CLIENT_ID),
        also_issued_as=("issuer.test",),
    )
    return OidcVerifier(
        {"acme": provider},
        timeout_seconds=1.0,
        keys_max_age_seconds=MAX_AGE,
        refetch_floor_seconds=FLOOR,
        allow_loopback_http=allow_loopback_http,
        fetch=issuer.fetch,
        clock=clock,
    )


@pytest.fixture
def verifier(issuer: FakeIssuer, clock: SecondsClock) -> OidcVerifier:
    return verifier_of(issuer, clock)


# --- good tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_good_token_verifies_and_gives_the_identity(
    issuer: FakeIssuer, verifier: OidcVerifier, alg: str
) -> None:
    token = issuer.token(
        alg=alg, sub="abc-123", email="Kim@Example.com", email_verified=True, name="Kim"
    )
    identity = verifier.verify("acme", token, None)

    claims = jwt.decode(token, options={"verify_signature": False})
    assert identity.provider == "acme"
    assert identity.subject == "abc-123"
    assert identity.issued_at == claims["iat"]
    assert (identity.email, identity.email_verified) == ("Kim@Example.com", True)
    assert identity.name == "Kim"
    assert identity.trust_email is False


@pytest.mark.parametrize(
    ("stated", "verified"), [(True, True), ("true", True), (False, False), ("false", False)]
)
def test_email_verified_is_read_as_apple_states_it_too(
    issuer: FakeIssuer, verifier: OidcVerifier, stated: bool | str, verified: bool
) -> None:
    token = issuer.token(email="kim@example.com", email_verified=stated)
    assert verifier.verify("acme", token, None).email_verified is verified


def test_an_email_unstated_or_not_an_address_is_none_and_unverified(
    issuer: FakeIssuer, verifier: OidcVerifier
) -> None:
    without = verifier.verify("acme", issuer.token(), None)
    assert (without.email, without.email_verified, without.name) == (None, False, None)
    odd = verifier.verify("acme", issuer.token(email="no address", email_verified=True), None)
    assert (odd.email, odd.email_verified) == (None, False)


def test_a_token_of_another_listed_client_id_and_the_issuers_other_name_verifies(
    issuer: FakeIssuer, verifier: OidcVerifier
) -> None:
    token = issuer.token(aud=["someone-else", "other-app"], iss="issuer.test")
    assert verifier.verify("acme", token, None).subject == "user-1"


def test_30_seconds_of_clock_skew_either_way_is_tolerated(
    issuer: FakeIssuer, verifier: OidcVerifier
) -> None:
    verifier.verify("acme", issuer.token(iat=-600, exp=-30), None)
    verifier.verify("acme", issuer.token(iat=30), None)


def test_the_nonce_when_sent_must_be_the_tokens(issuer: FakeIssuer, verifier: OidcVerifier) -> None:
    token = issuer.token(nonce="n-123")
    assert verifier.verify("acme", token, "n-123").subject == "user-1"
    assert verifier.verify("acme", token, None).subject == "user-1"  # not sent: not checked
    with pytest.raises(InvalidToken):
        verifier.verify("acme", token, "n-124")
    with pytest.raises(InvalidToken):
        verifier.verify("acme", issuer.token(), "n-123")
    with pytest.raises(InvalidToken):  # a lone surrogate is JSON, not UTF-8: still a 401
        verifier.verify("acme", issuer.token(nonce="\ud800"), "n-123")


def test_a_name_or_email_the_database_cannot_keep_is_dropped(
    issuer: FakeIssuer, verifier: OidcVerifier
) -> None:
    for bad in ("\ud800kim", "kim\x00"):
        token = issuer.token(name=bad, email=f"{bad}@example.com", email_verified=True)
        identity = verifier.verify("acme", token, None)
        assert (identity.name, identity.email, identity.email_verified) == (None, None, False)


# --- refused: 401 -----------------------------------------------------------------------------


def _rsa_public_pem(issuer: FakeIssuer) -> bytes:
    public = issuer.key_for("RS256").private_key.public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


BadToken = Callable[[FakeIssuer], str]

BAD_TOKENS: dict[str, BadToken] = {
    # Another key, under the kid of the issuer's own.
    "forged RS256": lambda i: i.token(key=new_private_key("RS256")),
    "forged ES256": lambda i: i.token(alg="ES256", key=new_private_key("ES256")),
    "expired beyond the leeway": lambda i: i.token(iat=-900, exp=-90),
    "issued in the future": lambda i: i.token(iat=90, exp=900),
    "another audience": lambda i: i.token(aud="giftmarket-app-evil"),
    "no audience of ours in a list": lambda i: i.token(aud=["a", "b"]),
    "another issuer": lambda i: i.token(iss="https://evil.test"),
    "the issuer with a trailing slash": lambda i: i.token(iss="https://issuer.test/"),
    "alg none": lambda i: hand_made(
        {"alg": "none", "typ": "JWT", "kid": i.key_for("RS256").kid}, i.claims(), b""
    ),
    "alg None": lambda i: hand_made(
        {"alg": "None", "kid": i.key_for("RS256").kid}, i.claims(), b""
    ),
    "HS256 keyed with the public key": lambda i: hs256(
        {"kid": i.key_for("RS256").kid, "typ": "JWT"}, i.claims(), _rsa_public_pem(i)
    ),
    "HS256 keyed with the JWK": lambda i: hs256(
        {"kid": i.key_for("RS256").kid}, i.claims(), json.dumps(i.key_for("RS256").jwk).encode()
    ),
    "HS256 with a random secret": lambda i: hs256(
        {"kid": i.key_for("RS256").kid}, i.claims(), b"s" * 32
    ),
    "RS384": lambda i: jwt.encode(
        i.claims(), i.key_for("RS256").private_key, "RS384", {"kid": i.key_for("RS256").kid}
    ),
    "RS256 naming the EC key": lambda i: i.token(kid=i.key_for("ES256").kid),
    "ES256 naming the RSA key": lambda i: i.token(alg="ES256", kid=i.key_for("RS256").kid),
    "no kid": lambda i: jwt.encode(i.claims(), i.key_for("RS256").private_key, "RS256"),
    "an empty kid": lambda i: i.token(kid=""),
    "a kid that is not a string": lambda i: hand_made({"alg": "RS256", "kid": 7}, i.claims(), b"x"),
    "a kid the issuer never had": lambda i: i.token(kid="made-up"),
    "a signature cut off": lambda i: i.token().rsplit(".", 1)[0] + ".",
    "a payload swapped": lambda i: ".".join(
        [
            i.token().split(".")[0],
            b64url(json.dumps(i.claims(sub="admin")).encode()),
            i.token().split(".")[2],
        ]
    ),
    "sub not ASCII": lambda i: i.token(sub="사용자"),
    "sub too long": lambda i: i.token(sub="s" * 256),
    "sub empty": lambda i: i.token(sub=""),
    "sub not a string": lambda i: i.token(extra={"sub": 12345}),
    "no sub": lambda i: i.token(omit=["sub"]),
    "no exp": lambda i: i.token(omit=["exp"]),
    "no iat": lambda i: i.token(omit=["iat"]),
    "no iss": lambda i: i.token(omit=["iss"]),
    "no aud": lambda i: i.token(omit=["aud"]),
    "exp not a number": lambda i: i.token(extra={"exp": "tomorrow"}),
    "garbage": lambda i: "not a token",
    "empty": lambda i: "",
    "three dots of nothing": lambda i: "..",
    "a header that is not JSON": lambda i: b64url(b"{kid") + ".e30.c2ln",
    "a header that is a list": lambda i: b64url(b"[1]") + ".e30.c2ln",
    "claims that are not JSON": lambda i: (
        b64url(json.dumps({"alg": "RS256", "kid": i.key_for("RS256").kid}).encode())
        + "."
        + b64url(b"\xff\xfe")
        + ".c2ln"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_a_bad_token_is_invalid(issuer: FakeIssuer, verifier: OidcVerifier, case: str) -> None:
    verifier.verify("acme", issuer.token(), None)  # keys held: a bad token costs no fetch
    with pytest.raises(InvalidToken):
        verifier.verify("acme", BAD_TOKENS[case](issuer), None)


def test_a_sub_of_255_ascii_characters_is_fine(issuer: FakeIssuer, verifier: OidcVerifier) -> None:
    assert verifier.verify("acme", issuer.token(sub="s" * 255), None).subject == "s" * 255


def test_an_unknown_provider_is_not_found(issuer: FakeIssuer, verifier: OidcVerifier) -> None:
    with pytest.raises(NotFound):
        verifier.verify("evil", issuer.token(), None)
    assert issuer.fetch_count == 0


# --- keys: cached, refetched, rotated ----------------------------------------------------------


def test_keys_are_fetched_once_for_many_tokens(issuer: FakeIssuer, verifier: OidcVerifier) -> None:
    for n in range(20):
        verifier.verify("acme", issuer.token(alg=("RS256", "ES256")[n % 2], sub=f"u{n}"), None)
    assert issuer.fetched == [
        "https://issuer.test/.well-known/openid-configuration",
        issuer.jwks_uri,
    ]


def test_unknown_kids_refetch_at_most_once_per_floor(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock
) -> None:
    verifier.verify("acme", issuer.token(), None)
    assert issuer.fetch_count == 2
    clock.now += FLOOR
    for n in range(50):  # a burst of made-up kids
        with pytest.raises(InvalidToken):
            verifier.verify("acme", issuer.token(kid=f"forged-{n}"), None)
    assert issuer.fetch_count == 4  # one refetch: discovery + key set
    clock.now += FLOOR - 0.5
    with pytest.raises(InvalidToken):
        verifier.verify("acme", issuer.token(kid="forged-x"), None)
    assert issuer.fetch_count == 4
    clock.now += 0.5
    with pytest.raises(InvalidToken):
        verifier.verify("acme", issuer.token(kid="forged-y"), None)
    assert issuer.fetch_count == 6
    verifier.verify("acme", issuer.token(), None)  # the real key still held
    assert issuer.fetch_count == 6


@pytest.mark.parametrize("keep_old", [False, True])
def test_a_rotated_key_is_picked_up_without_a_new_verifier(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock, keep_old: bool
) -> None:
    old = issuer.token()
    verifier.verify("acme", old, None)
    issuer.rotate("RS256", keep_old=keep_old)
    new = issuer.token()
    clock.now += FLOOR
    assert verifier.verify("acme", new, None).subject == "user-1"
    assert issuer.fetch_count == 4
    if keep_old:
        verifier.verify("acme", old, None)
    else:  # a key the provider withdrew is not trusted any more
        with pytest.raises(InvalidToken):
            verifier.verify("acme", old, None)


def test_a_rotated_key_within_the_floor_of_the_last_fetch_waits_for_the_floor(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock
) -> None:
    verifier.verify("acme", issuer.token(), None)
    issuer.rotate("RS256")
    new = issuer.token()
    clock.now += FLOOR / 2
    with pytest.raises(InvalidToken):
        verifier.verify("acme", new, None)
    clock.now += FLOOR / 2
    verifier.verify("acme", new, None)


def test_keys_older_than_their_max_age_are_fetched_again(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock
) -> None:
    verifier.verify("acme", issuer.token(), None)
    clock.now += MAX_AGE - 1
    verifier.verify("acme", issuer.token(), None)
    assert issuer.fetch_count == 2
    clock.now += 1
    verifier.verify("acme", issuer.token(), None)
    assert issuer.fetch_count == 4


def test_a_provider_unreachable_at_first_use_is_unavailable_and_not_hammered(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock
) -> None:
    issuer.reachable = False
    token = issuer.token()
    with pytest.raises(ProviderUnavailable) as raised:
        verifier.verify("acme", token, None)
    assert raised.value.provider == "acme"
    assert raised.value.retry_after_seconds >= 1
    assert raised.value.retry_after_seconds == verifier.retry_after_seconds == FLOOR
    attempts = issuer.fetch_count
    assert attempts == 1  # the discovery document failed: the key set is not asked for
    for _ in range(20):
        clock.now += FLOOR / 40
        with pytest.raises(ProviderUnavailable):
            verifier.verify("acme", token, None)
    assert issuer.fetch_count == attempts
    clock.now += FLOOR / 2
    issuer.reachable = True
    assert verifier.verify("acme", token, None).subject == "user-1"


def test_the_retry_after_is_at_least_a_second_with_no_floor(issuer: FakeIssuer) -> None:
    verifier = OidcVerifier(
        {"acme": OidcProvider(issuer=issuer.issuer, client_ids=(CLIENT_ID,))},
        timeout_seconds=1.0,
        keys_max_age_seconds=MAX_AGE,
        refetch_floor_seconds=0,
        allow_loopback_http=False,
        fetch=issuer.fetch,
        clock=SecondsClock(1000.0),
    )
    issuer.reachable = False
    with pytest.raises(ProviderUnavailable) as raised:
        verifier.verify("acme", issuer.token(), None)
    assert raised.value.retry_after_seconds == 1


def test_held_keys_keep_answering_while_the_provider_is_unreachable(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock
) -> None:
    verifier.verify("acme", issuer.token(), None)
    issuer.reachable = False
    clock.now += MAX_AGE + 60  # past their age: a refetch is tried, and fails
    assert verifier.verify("acme", issuer.token(sub="u2"), None).subject == "u2"
    assert issuer.fetch_count == 3
    # A kid not held cannot be told forged from new while the provider is away: 503, not 401.
    with pytest.raises(ProviderUnavailable):
        verifier.verify("acme", issuer.token(kid="new-or-forged"), None)
    # A forged token under a held kid is still refused outright.
    with pytest.raises(InvalidToken):
        verifier.verify("acme", issuer.token(key=new_private_key("RS256")), None)


def test_held_keys_are_not_trusted_for_ever_while_the_provider_is_unreachable(
    issuer: FakeIssuer, verifier: OidcVerifier, clock: SecondsClock
) -> None:
    verifier.verify("acme", issuer.token(), None)
    issuer.reachable = False
    clock.now += MAX_AGE + 24 * 3600
    with pytest.raises(ProviderUnavailable):
        verifier.verify("acme", issuer.token(), None)


def test_a_discovery_document_of_another_issuer_is_unavailable(
    issuer: FakeIssuer, verifier: OidcVerifier
) -> None:
    issuer.discovery_issuer = "https://evil.test"
    with pytest.raises(ProviderUnavailable):
        verifier.verify("acme", issuer.token(), None)
    assert issuer.fetch_count == 1  # its keys are not even asked for


@pytest.mark.parametrize(
    "jwks_uri",
    ["http://issuer.test/oauth2/jwks", "http://127.0.0.1:9/jwks", "ftp://issuer.test/jwks", ""],
)
def test_a_key_set_that_is_not_https_is_unavailable(
    issuer: FakeIssuer, verifier: OidcVerifier, jwks_uri: str
) -> None:
    issuer.jwks_uri = jwks_uri
    with pytest.raises(ProviderUnavailable):
        verifier.verify("acme", issuer.token(), None)
    assert issuer.fetch_count == 1


@pytest.mark.parametrize(
    ("jwks_uri", "fine"),
    [
        ("http://127.0.0.1:29400/jwks", True),
        ("http://localhost:29400/jwks", True),
        ("http://issuer.test/jwks", False),
        ("http://127.0.0.1.evil.test/jwks", False),
    ],
)
def test_a_key_set_over_http_is_fine_on_a_local_stack_only_on_loopback(
    issuer: FakeIssuer, clock: SecondsClock, jwks_uri: str, fine: bool
) -> None:
    issuer.jwks_uri = jwks_uri
    local = verifier_of(issuer, clock, allow_loopback_http=True)
    if fine:
        assert local.verify("acme", issuer.token(), None).subject == "user-1"
    else:
        with pytest.raises(ProviderUnavailable):
            local.verify("acme", issuer.token(), None)


def test_key_set_entries_of_other_kinds_are_ignored(
    issuer: FakeIssuer, verifier: OidcVerifier
) -> None:
    encryption = new_private_key("RS256")
    no_kid = {k: v for k, v in public_jwk(new_private_key("RS256"), "x").items() if k != "kid"}
    issuer.extra_jwks_entries = [
        {"kty": "oct", "kid": "oct-1", "k": b64url(b"s" * 32), "alg": "HS256"},
        {**public_jwk(encryption, "enc-1"), "use": "enc"},
        no_kid,
        {**public_jwk(new_private_key("RS256"), "ps-1"), "alg": "PS256"},
        {"kty": "RSA", "kid": "broken", "n": "AA", "e": "AQAB"},
        {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64url(b"k" * 32)},
        "not an entry",
    ]
    assert verifier.verify("acme", issuer.token(), None).subject == "user-1"
    with pytest.raises(InvalidToken):
        verifier.verify("acme", hs256({"kid": "oct-1"}, issuer.claims(), b"s" * 32), None)
    with pytest.raises(InvalidToken):
        verifier.verify("acme", issuer.token(key=encryption, kid="enc-1"), None)


@pytest.mark.parametrize("document", [[], {"keys": "none"}, {"keys": None}, "text", {}])
def test_a_key_set_that_is_not_one_is_unavailable(
    issuer: FakeIssuer, document: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = issuer.fetch
    monkeypatch.setattr(
        issuer, "fetch", lambda url, t: document if url == issuer.jwks_uri else real(url, t)
    )
    with pytest.raises(ProviderUnavailable):
        verifier_of(issuer, SecondsClock(1000.0)).verify("acme", issuer.token(), None)


# --- fetch_json, against a real server on loopback --------------------------------------------

TIMEOUT = 0.5


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/ok":
            self._send(200, json.dumps({"issuer": "https://issuer.test"}).encode())
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":
            self._send(200, b'{"k": "' + b"x" * MAX_DOCUMENT_BYTES + b'"}')
        elif self.path == "/text":
            self._send(200, b"<html>hello</html>", "text/html")
        elif self.path == "/drip":  # a byte at a time: each read is quick, the whole is not
            body = json.dumps({"k": "x" * 100}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(TIMEOUT / 10)
        else:
            self._send(404, b'{"error": "not found"}')

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up reading, as it should for /big

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_fetch_json_reads_a_json_document(server: str) -> None:
    assert fetch_json(f"{server}/ok", TIMEOUT) == {"issuer": "https://issuer.test"}


@pytest.mark.parametrize("path", ["/missing", "/redirect", "/big", "/text"])
def test_fetch_json_fails_on_what_is_not_a_json_document(server: str, path: str) -> None:
    with pytest.raises(FetchFailed):
        fetch_json(f"{server}{path}", TIMEOUT)


def _elapsed_failing(url: str) -> float:
    started = time.monotonic()
    with pytest.raises(FetchFailed):
        fetch_json(url, TIMEOUT)
    return time.monotonic() - started


def test_fetch_json_gives_up_on_a_server_that_sends_a_byte_at_a_time(server: str) -> None:
    assert _elapsed_failing(f"{server}/drip") < TIMEOUT + 0.5


def test_fetch_json_never_hangs_on_a_server_that_never_answers() -> None:
    # Connections are accepted by the kernel (the backlog) and never read nor answered.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        assert _elapsed_failing(f"http://127.0.0.1:{port}/jwks") < TIMEOUT + 0.5


def test_fetch_json_gives_up_on_a_server_that_sends_its_headers_a_byte_at_a_time() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def drip() -> None:
            connection, _ = listener.accept()
            with connection:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1000:
                    if stop.wait(TIMEOUT / 5):
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        return

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        try:
            assert _elapsed_failing(f"http://127.0.0.1:{port}/jwks") < TIMEOUT + 0.5
        finally:
            stop.set()
            thread.join(5)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The same server behind TLS, with a certificate for 127.0.0.1 from a CA of its own."""
    files = ensure_local_tls(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", files.ca_cert
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_fetch_json_checks_the_servers_certificate(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_server
    with pytest.raises(FetchFailed):  # a CA nobody trusts
        fetch_json(f"{url}/ok", TIMEOUT)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert fetch_json(f"{url}/ok", TIMEOUT) == {"issuer": "https://issuer.test"}


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/jwks", "http:///jwks"])
def test_fetch_json_fetches_only_http_urls(url: str) -> None:
    with pytest.raises(FetchFailed):
        fetch_json(url, TIMEOUT)


def test_fetch_json_fails_when_nothing_listens() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(FetchFailed):
        fetch_json(f"http://127.0.0.1:{port}/jwks", TIMEOUT)
