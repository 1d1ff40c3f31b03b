"""Rotation without restarts, part by part: the JWT key ring (kid lookup, the previous key
still accepted, an unknown kid read again at most once per interval), a secret read again
when a server refuses it, and MySQL's 1045 answered by one login with the re-read secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pymysql
import pytest
from tests.support.fakes import SecondsClock
from tests.unit.cfn_template import props, refs, resources, template

from giftmarket.adapters.db import Credentials, log_in, resolve_credentials
from giftmarket.adapters.jwt_keys import KeyRing, KeySet, key_id, keys_from_secret
from giftmarket.adapters.secrets import SecretValue
from giftmarket.http.auth import ISSUER, NotAuthenticated, TokenService
from giftmarket.settings import Settings

OLD, NEW = "o" * 48, "n" * 48
TTL = timedelta(hours=1)


class Secret:
    """What Secrets Manager holds, and how often it was read."""

    def __init__(self, current: str, previous: str | None = None) -> None:
        self.keys = KeySet.of(current, previous)
        self.reads = 0

    def rotate(self, new: str) -> None:
        self.keys = KeySet.of(new, self.keys.current.secret)

    def load(self) -> KeySet:
        self.reads += 1
        return self.keys


def ring(secret: Secret, clock: SecondsClock) -> KeyRing:
    return KeyRing(secret.load, refetch_interval_seconds=30, max_age_seconds=300, clock=clock)


def test_tokens_name_their_key_and_are_verified_with_it() -> None:
    tokens = TokenService(ring(Secret(NEW, OLD), SecondsClock(1000.0)), TTL)
    token = tokens.issue("user-1")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": key_id(NEW), "typ": "JWT"}
    assert tokens.subject(token) == "user-1"
    assert key_id(NEW) != key_id(OLD) and len(key_id(NEW)) == 16


def test_a_token_signed_with_the_previous_key_stays_valid() -> None:
    secret, clock = Secret(OLD), SecondsClock(1000.0)
    before = TokenService(ring(secret, clock), TTL).issue("user-1")
    secret.rotate(NEW)
    tokens = TokenService(ring(secret, clock), TTL)  # a container started after the rotation
    assert tokens.subject(before) == "user-1"
    assert jwt.get_unverified_header(tokens.issue("user-2"))["kid"] == key_id(NEW)


def test_a_kid_not_held_is_refused_unless_the_key_is_current_or_previous() -> None:
    secret = Secret(NEW, OLD)
    tokens = TokenService(ring(secret, SecondsClock(1000.0)), TTL)
    claims = {"sub": "u", "iss": ISSUER, "iat": datetime.now(UTC), "exp": datetime.now(UTC) + TTL}
    older = "x" * 48  # rotated out two rotations ago
    forged = jwt.encode(claims, older, algorithm="HS256", headers={"kid": key_id(older)})
    with pytest.raises(NotAuthenticated):
        tokens.subject(forged)
    # The right kid with another key's signature, and a kid that is not a string.
    wrong = jwt.encode(claims, older, algorithm="HS256", headers={"kid": key_id(NEW)})
    with pytest.raises(NotAuthenticated):
        tokens.subject(wrong)
    genuine = hand_signed({"alg": "HS256", "typ": "JWT", "kid": key_id(NEW)}, claims, NEW)
    assert tokens.subject(genuine) == "u"  # the hand-made token is right but for its kid:
    with pytest.raises(NotAuthenticated):
        tokens.subject(hand_signed({"alg": "HS256", "typ": "JWT", "kid": 7}, claims, NEW))


def hand_signed(header: dict[str, Any], claims: dict[str, Any], key: str) -> str:
    """What PyJWT refuses to make: a token with a header of our choosing."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = json.dumps(claims, default=lambda t: int(t.timestamp())).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_a_token_without_a_kid_is_checked_against_the_keys_held() -> None:
    """Tokens issued before kids existed keep working until they expire."""
    tokens = TokenService(ring(Secret(NEW, OLD), SecondsClock(1000.0)), TTL)
    claims = {"sub": "u", "iss": ISSUER, "iat": datetime.now(UTC), "exp": datetime.now(UTC) + TTL}
    for key in (NEW, OLD):
        assert tokens.subject(jwt.encode(claims, key, algorithm="HS256")) == "u"
    with pytest.raises(NotAuthenticated):
        tokens.subject(jwt.encode(claims, "y" * 48, algorithm="HS256"))


def test_an_unknown_kid_reads_the_keys_again_at_most_once_per_interval() -> None:
    secret, clock = Secret(OLD), SecondsClock(1000.0)
    here = TokenService(ring(secret, clock), TTL)
    assert here.subject(here.issue("a")) == "a"
    assert secret.reads == 1
    secret.rotate(NEW)
    # Another container read the new key first and signs with it.
    elsewhere = TokenService(ring(secret, clock), TTL)
    new_token = elsewhere.issue("b")
    reads = secret.reads
    # Picked up at once, without a restart, though this ring read its keys just now.
    assert here.subject(new_token) == "b"
    assert secret.reads == reads + 1
    assert jwt.get_unverified_header(here.issue("c"))["kid"] == key_id(NEW)

    # Made-up kids: one read per interval, however many tokens name them.
    claims = {"sub": "u", "iss": ISSUER, "iat": datetime.now(UTC), "exp": datetime.now(UTC) + TTL}
    reads = secret.reads
    clock.now += 31
    for n in range(50):
        made_up = jwt.encode(claims, NEW, algorithm="HS256", headers={"kid": f"made-up-{n}"})
        with pytest.raises(NotAuthenticated):
            here.subject(made_up)
        clock.now += 0.1
    assert secret.reads == reads + 1
    clock.now += 30
    with pytest.raises(NotAuthenticated):
        here.subject(made_up)
    assert secret.reads == reads + 2


def test_the_keys_are_read_again_when_old_and_kept_when_the_read_fails() -> None:
    secret, clock = Secret(OLD), SecondsClock(1000.0)
    keys = ring(secret, clock)
    assert keys.keys().current.secret == OLD
    secret.rotate(NEW)
    clock.now += 299
    assert keys.keys().current.secret == OLD  # still fresh: no read
    clock.now += 2
    assert keys.keys().current.secret == NEW  # five minutes old: read again
    assert secret.reads == 2

    def failing() -> KeySet:
        secret.reads += 1
        raise RuntimeError("Secrets Manager unreachable")

    keys._load = failing  # noqa: SLF001 - the same ring, its source now down
    clock.now += 301
    assert keys.keys().current.secret == NEW  # the keys held, no error
    reads = secret.reads
    for _ in range(10):
        keys.keys()
        clock.now += 1
    assert secret.reads == reads  # no read per request while it is down
    clock.now += 21
    keys.keys()
    assert secret.reads == reads + 1


def test_keys_from_secret_reads_awscurrent_and_awsprevious(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="jwt", SecretString=OLD)["ARN"]
    assert keys_from_secret(arn) == KeySet.of(OLD)  # never rotated: no previous
    secretsmanager.put_secret_value(SecretId=arn, SecretString=NEW)
    # Read past Powertools' cache, and without caching AWSPREVIOUS under the secret's name.
    assert keys_from_secret(arn) == KeySet.of(NEW, OLD)
    assert keys_from_secret(arn) == KeySet.of(NEW, OLD)


class Fetches:
    """A secret that counts its reads; `fresh` reads past the cache."""

    def __init__(self, value: Credentials) -> None:
        self.value, self.cached, self.fresh_reads = value, value, 0

    def __call__(self, fresh: bool) -> Credentials:
        if fresh:
            self.fresh_reads += 1
            self.cached = self.value
        return self.cached


A = Credentials("app", "first-password")
B = Credentials("app_clone", "second-password")


def refused_unless(accepted: Callable[[], Credentials], calls: list[Credentials]) -> Any:
    def connect(credentials: Credentials) -> str:
        calls.append(credentials)
        if credentials != accepted():
            raise pymysql.err.OperationalError(1045, "Access denied for user")
        return f"connection as {credentials.username}"

    return connect


def test_a_refused_login_reads_the_secret_again_and_logs_in_once_more() -> None:
    secret, clock = Fetches(A), SecondsClock(1000.0)
    source = SecretValue(secret, name="database", clock=clock)
    clock.now += 5
    secret.value = B  # rotated: the server now takes B only
    calls: list[Credentials] = []
    assert log_in(refused_unless(lambda: B, calls), source) == "connection as app_clone"
    assert calls == [A, B]
    assert secret.fresh_reads == 1
    assert source.current == B and source.refreshes == 1


def test_a_wrong_password_is_refused_after_one_read_and_reads_are_rate_limited() -> None:
    secret, clock = Fetches(A), SecondsClock(1000.0)
    source = SecretValue(secret, name="database", min_interval_seconds=1.0, clock=clock)
    clock.now += 5
    calls: list[Credentials] = []
    connect = refused_unless(lambda: B, calls)  # the secret still holds A: wrong
    with pytest.raises(pymysql.err.OperationalError) as refused:
        log_in(connect, source)
    assert refused.value.args[0] == 1045
    assert calls == [A] and secret.fresh_reads == 1  # read again, same value: no retry
    for _ in range(20):
        with pytest.raises(pymysql.err.OperationalError):
            log_in(connect, source)
    assert secret.fresh_reads == 1  # within the interval: no more reads
    clock.now += 1.5
    with pytest.raises(pymysql.err.OperationalError):
        log_in(connect, source)
    assert secret.fresh_reads == 2


def test_other_errors_are_not_retried() -> None:
    secret = Fetches(A)
    source = SecretValue(secret, name="database", clock=SecondsClock(1000.0))
    calls: list[Credentials] = []

    def connect(credentials: Credentials) -> str:
        calls.append(credentials)
        raise pymysql.err.OperationalError(2003, "Can't connect")

    with pytest.raises(pymysql.err.OperationalError):
        log_in(connect, source)
    assert calls == [A] and secret.fresh_reads == 0


def test_threads_refused_together_read_the_secret_once() -> None:
    secret, clock = Fetches(A), SecondsClock(1000.0)
    source = SecretValue(secret, name="database", clock=clock)
    clock.now += 5
    secret.value = B
    results: list[str] = []
    calls: list[Credentials] = []
    start = threading.Barrier(8)

    def run() -> None:
        start.wait()
        results.append(log_in(refused_unless(lambda: B, calls), source))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["connection as app_clone"] * 8
    assert secret.fresh_reads == 1


def test_resolve_credentials_fresh_reads_past_the_powertools_cache(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="db", SecretString=json.dumps(A.__dict__))["ARN"]
    settings = Settings(db_secret_arn=arn)
    assert resolve_credentials(settings) == A
    secretsmanager.put_secret_value(SecretId=arn, SecretString=json.dumps(B.__dict__))
    assert resolve_credentials(settings) == A  # cached for 5 minutes
    assert resolve_credentials(settings, fresh=True) == B
    assert resolve_credentials(settings) == B  # and the cache renewed


def test_the_app_db_secret_rotates_with_alternating_users() -> None:
    """Secrets Manager's MySQLMultiUser rotation, logging in as the RDS master user, inside
    the VPC with the functions' security group (MySQL, and the Secrets Manager endpoint)."""
    assert template()["Transform"] == [
        "AWS::SecretsManager-2020-07-23",
        "AWS::Serverless-2016-10-31",
    ]
    (logical_id,) = resources("AWS::SecretsManager::RotationSchedule")
    schedule = props(logical_id)
    assert schedule["SecretId"] == {"Ref": "DbAppSecret"}
    hosted = schedule["HostedRotationLambda"]
    assert hosted["RotationType"] == "MySQLMultiUser"
    master = {"Fn::GetAtt": ["PrimaryDb", "MasterUserSecret.SecretArn"]}
    assert hosted["MasterSecretArn"] == master
    assert refs(hosted["VpcSubnetIds"]) == {"PrivateSubnetA", "PrivateSubnetB"}
    assert hosted["VpcSecurityGroupIds"] == {"Ref": "LambdaSecurityGroup"}
    assert schedule["RotateImmediatelyOnUpdate"] is False  # the user exists after migrating
    # The rotation function reads the master secret's ARN and the host from the secret.
    shape, values = props("DbAppSecret")["GenerateSecretString"]["SecretStringTemplate"]["Fn::Sub"]
    assert json.loads(shape)["masterarn"] == "${Master}" and values["Master"] == master
    attachment = props("DbAppSecretAttachment")
    assert attachment["SecretId"] == {"Ref": "DbAppSecret"}
    assert attachment["TargetId"] == {"Ref": "PrimaryDb"}
