"""The database password and the JWT key rotated in the middle of a command load, through the
command Lambda handler, with the secrets in LocalStack's Secrets Manager as in AWS: clients
get nothing but 200s and 503s with Retry-After, no one is signed out (tokens issued before
the rotation keep working; tokens issued after it name the new key), and every charge counts
once. Nothing is restarted: the container reads the secrets again when the database refuses
its password (1045) and when a token names a key it does not hold."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import jwt
import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from tests.reliability.ledger import assert_ledger_agrees_with_balances
from tests.reliability.load import Charges, Outcome, Window, load, wait_for, wait_for_successes
from tests.support.handler_client import PASSWORD, MarketClient, User, handler_client
from tests.support.stack import settings_for

from giftmarket.adapters.jwt_keys import key_id
from giftmarket.bootstrap import bootstrap
from giftmarket.http.auth import TokenService
from giftmarket.jobs.schema import APP_DATABASE_PRIVILEGES
from giftmarket_local.invoke import Reply
from giftmarket_local.stack import Stack

CLIENTS = 4  # threads charging, each with the token its user got before the rotation
SIGN_INS = 2  # threads signing in again and again
USER = "gm_rotation_app"
OLD_KEY, NEW_KEY = "rotation-old-jwt-key-" + "o" * 32, "rotation-new-jwt-key-" + "n" * 32


def db_secret(password: str) -> str:
    return json.dumps({"username": USER, "password": password})


@pytest.fixture
def aws(stack: Stack) -> Iterator[Any]:
    """Secrets Manager in the stack's LocalStack, for this test and for Powertools (whose
    providers are built again here, and dropped after)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", stack.config.localstack_url)
        DEFAULT_PROVIDERS.clear()
        try:
            yield boto3.client(
                "secretsmanager",
                endpoint_url=stack.config.localstack_url,
                region_name=stack.config.region,
            )
        finally:
            DEFAULT_PROVIDERS.clear()


@pytest.fixture
def app_user(stack: Stack) -> Iterator[str]:
    """An application user of the test's own (the stack's is shared with every other test),
    with the rights the migration gives the application in AWS; dropped afterwards."""
    account = f"'{USER}'@'{stack.config.host}'"
    stack.primary.sql(
        f"DROP USER IF EXISTS {account}; CREATE USER {account} IDENTIFIED BY 'first-Passw0rd';"
        f"GRANT {APP_DATABASE_PRIVILEGES} ON `{stack.config.db_name}`.* TO {account};"
        f"GRANT SLAVE MONITOR, REPLICATION CLIENT ON *.* TO {account};"
    )
    yield account
    stack.primary.sql(f"DROP USER IF EXISTS {account}")


@dataclass
class SignIns:
    """Sign-in threads: user i % len(users) logs in again and again; every token kept."""

    client: MarketClient
    users: list[User]
    tokens: list[tuple[float, str, str]] = field(default_factory=list)  # (asked, user, token)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, i: int, n: int) -> Reply:
        user = self.users[(i + n) % len(self.users)]
        started = time.monotonic()
        reply = self.client.call(
            "POST", "/api/auth/login", {"email": user.email, "password": PASSWORD}
        )
        if reply.status == 200:
            with self.lock:
                self.tokens.append((started, user.user_id, reply.body["token"]))
        elif reply.status == 503:
            time.sleep(min(float(reply.headers.get("retry-after", "1")), 0.2))
        time.sleep(0.05)
        return reply


def refused_only_with_retry_after(outcomes: list[Outcome]) -> Counter[int]:
    statuses = Counter(o.status for o in outcomes)
    others = [o.error or str(o.reply) for o in outcomes if o.status not in (200, 503)]
    assert not others, others[:5]
    for o in outcomes:
        if o.status == 503:
            assert o.reply is not None
            assert o.reply.headers["content-type"] == "application/problem+json"
            assert int(o.reply.headers["retry-after"]) > 0
            assert o.reply.body["code"] == "database_unavailable"
    return statuses


def me(client: MarketClient, token: str) -> str:
    """The token's user, asked as a client would: a 503 (with Retry-After, as the database
    login may be refused until the container reads the rotated secret, at most once a
    second) is tried again; anything but 200 or 503 fails."""
    deadline = time.monotonic() + 10
    while True:
        reply = client.call("GET", "/api/me", token=token)
        if reply.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(min(float(reply.headers["retry-after"]), 0.2))
    assert reply.status == 200, reply
    return str(reply.body["user_id"])


def test_rotating_the_db_password_and_the_jwt_key_under_a_command_load(
    stack: Stack, aws: Any, app_user: str, figure: Callable[[str], None]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    db_arn = aws.create_secret(
        Name=f"rotation-db-{suffix}", SecretString=db_secret("first-Passw0rd")
    )["ARN"]
    jwt_arn = aws.create_secret(Name=f"rotation-jwt-{suffix}", SecretString=OLD_KEY)["ARN"]
    settings = settings_for(
        stack, events_queue_url=None, db_secret_arn=db_arn, jwt_secret_arn=jwt_arn
    )
    try:
        with handler_client(MarketClient, settings, stack) as client:
            run_rotation(client, stack, aws, settings, db_arn, jwt_arn, app_user, figure)
    finally:
        for arn in (db_arn, jwt_arn):
            aws.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def run_rotation(
    client: MarketClient,
    stack: Stack,
    aws: Any,
    settings: Any,
    db_arn: str,
    jwt_arn: str,
    account: str,
    figure: Callable[[str], None],
) -> None:
    database = client.container.database
    assert database.credentials is not None
    assert database.credentials.current.username == USER
    users = [client.sign_up() for _ in range(CLIENTS)]
    assert {jwt.get_unverified_header(u.token)["kid"] for u in users} == {key_id(OLD_KEY)}
    charges = Charges(client, users)
    sign_ins = SignIns(client, users)

    def request(i: int, n: int) -> Reply:
        return charges(i, n) if i < CLIENTS else sign_ins(i - CLIENTS, n)

    with load(request, CLIENTS + SIGN_INS) as so_far:
        wait_for(lambda: len(so_far()) >= 40, 60, "the load to start")
        rotation = Window(time.monotonic())
        # The database first, then the secret: what a single-user rotation does (the
        # alternating-users rotation of template.yaml never refuses a login at all).
        stack.primary.sql(f"ALTER USER {account} IDENTIFIED BY 'second-Passw0rd'")
        time.sleep(0.5)
        aws.put_secret_value(SecretId=db_arn, SecretString=db_secret("second-Passw0rd"))
        aws.put_secret_value(SecretId=jwt_arn, SecretString=NEW_KEY)  # old: AWSPREVIOUS
        rotation.end = time.monotonic()
        wait_for_successes(so_far, 10 * CLIENTS, "charges after the rotation")

        # Another container, started after the rotation, signs with the new key; this one
        # learns it from the first such token (an unknown kid) and signs with it from then on.
        other = bootstrap(settings)
        try:
            elsewhere = TokenService(other.jwt_keys, timedelta(hours=1))
            fresh = elsewhere.issue(users[0].user_id)
        finally:
            other.close()
        assert jwt.get_unverified_header(fresh)["kid"] == key_id(NEW_KEY)
        assert me(client, fresh) == users[0].user_id
        learned = time.monotonic()
        wait_for(lambda: any(at > learned for at, _, _ in sign_ins.tokens), 30, "a sign-in after")
        wait_for_successes(so_far, 4 * CLIENTS, "charges after the new key was learned")
    outcomes = so_far()
    stack.wait_replica_caught_up()
    charges.finish()

    statuses = refused_only_with_retry_after(outcomes)
    # The database refused the old password and the container logged in with the new one.
    assert database.credentials.refreshes >= 1
    assert database.credentials.current.password == "second-Passw0rd"
    # No one signed out: every token issued before the rotation works after it (the load
    # used them throughout), and so does every token any sign-in got.
    after = [o for o in outcomes if o.started >= rotation.end and o.client < CLIENTS]
    assert sum(o.status == 200 for o in after) >= 10 * CLIENTS
    for user in users:
        assert me(client, user.token) == user.user_id
    kids: Counter[str] = Counter()
    for at, _, token in sign_ins.tokens:
        kid = jwt.get_unverified_header(token)["kid"]
        kids["new" if kid == key_id(NEW_KEY) else "old"] += 1
        assert kid in (key_id(OLD_KEY), key_id(NEW_KEY))
        if at > learned:
            assert kid == key_id(NEW_KEY), "a token issued after the key was learned"
    for _, user_id, token in sign_ins.tokens[:: max(1, len(sign_ins.tokens) // 20)]:
        assert me(client, token) == user_id
    # Every charge made counts exactly once, and the money adds up.
    assert charges.counted() == [len(keys) for keys in charges.keys]
    assert_ledger_agrees_with_balances(client.container)

    charged = [o for o in outcomes if o.client < CLIENTS]
    signed = [o for o in outcomes if o.client >= CLIENTS]
    figure(
        f"DB password and JWT key rotated under {CLIENTS} charging + {SIGN_INS} signing-in"
        f" clients: {len(charged)} charges answered ({Counter(o.status for o in charged)[200]}"
        f" × 200, {Counter(o.status for o in charged)[503]} × 503 with Retry-After),"
        f" {len(signed)} sign-ins ({Counter(o.status for o in signed)[200]} × 200,"
        f" {Counter(o.status for o in signed)[503]} × 503), 0 other"
        f" (all: {dict(statuses)}); {database.credentials.refreshes} DB secret re-read(s)"
        f" after 1045; {kids['old']} tokens with the old kid, {kids['new']} with the new;"
        f" {len(users)} pre-rotation tokens still valid; {charges.made} charges each counted"
        " exactly once, ledger balanced"
    )
