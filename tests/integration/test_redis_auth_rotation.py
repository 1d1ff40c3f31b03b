"""ElastiCache's AUTH token rotation, on a real redis-server of the test's own: ROTATE (the
server takes the old and the new token) then SET (only the new one). The client keeps
answering: a new connection refused with the old token makes it read the secret again, past
Powertools' cache, and run the command once more."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from giftmarket.adapters.cache import TokenRefreshingRedis, build_redis
from giftmarket.settings import Settings

OLD, NEW = "old-auth-token-" + "o" * 24, "new-auth-token-" + "n" * 24
PORT = 22391  # loopback only; outside every stack profile's ports


@pytest.fixture
def server(tmp_path: Any) -> Iterator[redis.Redis]:
    """A redis-server requiring OLD, and an admin client that logged in before any change."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(  # noqa: S603 - a fixed local binary
        [binary, "--port", str(PORT), "--bind", "127.0.0.1", "--requirepass", OLD]
        + ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        admin = redis.Redis(host="127.0.0.1", port=PORT, password=OLD)
        yield admin
        admin.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_client_follows_a_rotate_then_set_of_the_auth_token(
    server: redis.Redis, secretsmanager: Any
) -> None:
    arn = secretsmanager.create_secret(Name="redis-auth", SecretString=OLD)["ARN"]
    client = build_redis(
        Settings(redis_url=f"redis://127.0.0.1:{PORT}/0", redis_auth_secret_arn=arn)
    )
    assert isinstance(client, TokenRefreshingRedis) and client.auth_token is not None
    client.set("k", "v")

    # ROTATE: the server takes both tokens; the secret gets the new one.
    acl: Callable[..., Any] = server.execute_command  # untyped in redis-py
    acl("ACL", "SETUSER", "default", f">{NEW}")
    secretsmanager.put_secret_value(SecretId=arn, SecretString=NEW)
    assert client.get("k") == b"v"  # its connection logged in with the old token: still fine

    # SET: the old token is dropped. A new connection (Lambda freezes, idle timeouts) is
    # refused with it; Powertools would serve the old token from its cache for 5 minutes.
    acl("ACL", "SETUSER", "default", f"<{OLD}")
    client.connection_pool.disconnect()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=PORT, password=OLD).ping()
    assert client.get("k") == b"v"
    assert client.auth_token.secret.refreshes == 1
    assert client.auth_token.get_credentials() == (NEW,)
    client.close()


def test_a_wrong_token_is_still_an_authentication_error(
    server: redis.Redis, secretsmanager: Any
) -> None:
    arn = secretsmanager.create_secret(Name="redis-auth", SecretString="not-" + OLD)["ARN"]
    client = build_redis(
        Settings(redis_url=f"redis://127.0.0.1:{PORT}/0", redis_auth_secret_arn=arn)
    )
    assert isinstance(client, TokenRefreshingRedis) and client.auth_token is not None
    with pytest.raises(redis.AuthenticationError):
        client.get("k")  # read again, the same token: refused, no second try
    assert client.auth_token.secret.refreshes == 0
    client.close()
