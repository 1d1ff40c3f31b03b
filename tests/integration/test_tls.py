"""TLS to every store of the local stack: nothing in clear over TCP, and the application
verifies each server's certificate and host name (issue 13, item 4)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pymysql
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from tests.support.stack import SettingsFactory, fresh_read_models, settings_for

from giftmarket.adapters.cache import build_redis
from giftmarket.adapters.db import build_engine, resolve_credentials
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack
from giftmarket_local.tls import TlsFiles, make_ca

# Resolves to 127.0.0.1 (the servers' address) but is not a name in their certificate: a
# client that checks host names must refuse it; one that does not would connect.
UNLISTED_NAME = "127.1"


def app_connection_tls_version(settings: Settings, host: str, port: int) -> str:
    # Read-only: the writer's transactions start READ WRITE, which the replica refuses.
    engine = build_engine(settings, resolve_credentials(settings), host, port, read_only=True)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_version'")).one()
            return str(row[1])
    finally:
        engine.dispose()


def plain_connection(stack: Stack, port: int) -> pymysql.Connection[pymysql.cursors.Cursor]:
    c = stack.config
    return pymysql.connect(
        host=c.host,
        port=port,
        user=c.db_user,
        password=c.db_password,
        ssl_disabled=True,
        connect_timeout=5,
    )


@pytest.mark.parametrize("server", ["primary", "replica"])
def test_a_plain_tcp_connection_is_refused_and_the_apps_is_tls(
    stack: Stack, settings: Settings, server: str
) -> None:
    port = stack.config.primary_port if server == "primary" else stack.config.replica_port
    with pytest.raises(pymysql.OperationalError) as refused:
        plain_connection(stack, port)
    # MariaDB answers a plain connection under require_secure_transport with 1045 (MySQL,
    # and so RDS, with 3159); the same user and password over TLS get in just below.
    assert refused.value.args[0] in (1045, 3159)
    assert getattr(stack, server).sql("SELECT @@require_secure_transport") == "1"
    assert app_connection_tls_version(settings, stack.config.host, port).startswith("TLSv1.")


def test_the_app_refuses_a_database_whose_certificate_does_not_name_the_host(
    stack: Stack, make_settings: SettingsFactory
) -> None:
    c = stack.config
    settings = make_settings(db_primary_host=UNLISTED_NAME)
    engine = build_engine(
        settings, resolve_credentials(settings), UNLISTED_NAME, c.primary_port, read_only=False
    )
    with pytest.raises(OperationalError, match="mismatch|doesn't match|not valid for"):
        with engine.connect():
            pass
    engine.dispose()
    # The control: the same CA without the host-name check connects, so the refusal above
    # was the host name and nothing else.
    lax = ssl.create_default_context(cafile=str(c.ca_path))
    lax.check_hostname = False
    conn = pymysql.connect(
        host=UNLISTED_NAME,
        port=c.primary_port,
        user=c.db_user,
        password=c.db_password,
        ssl=lax,
        connect_timeout=5,
    )
    conn.close()


def test_the_app_refuses_a_database_certificate_from_another_ca(
    stack: Stack, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    other = TlsFiles(tmp_path / "other-ca")
    make_ca(other, "not the stack's CA")
    settings = make_settings(db_ssl_ca=str(other.ca_cert))
    engine = build_engine(
        settings,
        resolve_credentials(settings),
        stack.config.host,
        stack.config.primary_port,
        read_only=False,
    )
    with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        with engine.connect():
            pass
    engine.dispose()


def test_replication_runs_over_tls_verifying_the_primary(stack: Stack) -> None:
    status = stack.replica_status()
    assert status["Master_SSL_Allowed"] == "Yes"
    assert status["Master_SSL_Verify_Server_Cert"] == "Yes"
    assert status["Master_SSL_CA_File"] == str(stack.config.ca_path)
    assert status["Slave_IO_Running"] == "Yes", status.get("Last_IO_Error")
    stack.primary.sql("CREATE TABLE IF NOT EXISTS giftmarket.tls_probe (id INT PRIMARY KEY)")
    stack.primary.sql("REPLACE INTO giftmarket.tls_probe VALUES (13)")
    stack.wait_replica_caught_up(timeout=30)
    assert stack.replica.sql("SELECT id FROM giftmarket.tls_probe") == "13"
    stack.primary.sql("DROP TABLE giftmarket.tls_probe")


def test_a_replica_set_up_before_tls_replicates_over_tls_after_up(stack: Stack) -> None:
    # A stack folder from before TLS: its replica points at the primary in clear (which the
    # primary now refuses). The next `up` moves it to TLS at the same position.
    stack.replica.sql(
        "STOP SLAVE; CHANGE MASTER TO MASTER_SSL=0, MASTER_SSL_CA='',"
        " MASTER_SSL_VERIFY_SERVER_CERT=0; START SLAVE"
    )
    assert stack.replica_status()["Master_SSL_Allowed"] == "No"
    try:
        assert stack.up() == []
    finally:
        status = stack.replica_status()
        if status["Master_SSL_Allowed"] != "Yes":
            stack.start_replicating(gtid_slave_pos=stack.replica.sql("SELECT @@gtid_slave_pos"))
    assert status["Master_SSL_Allowed"] == "Yes"
    assert status["Master_SSL_Verify_Server_Cert"] == "Yes"
    stack.wait_replica_caught_up(timeout=30)
    assert stack.replica_status()["Slave_IO_Running"] == "Yes"


def test_a_database_server_started_without_tls_is_restarted_with_it_at_up(stack: Stack) -> None:
    # What a server left running by the code before TLS looks like from here.
    stack.replica.sql("SET GLOBAL require_secure_transport=OFF")
    before = stack.replica.process.pid()
    assert stack.up() == ["replica"]
    assert stack.replica.process.pid() != before
    assert stack.replica.sql("SELECT @@require_secure_transport") == "1"
    stack.wait_replica_caught_up(timeout=30)


def test_a_redis_started_without_tls_is_restarted_with_it_at_up(stack: Stack) -> None:
    # What a Redis left running by the code before TLS looks like: plain, on the same port,
    # its PID in our PID file.
    assert stack.redis.stop()
    plain = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", stack.config.host]
        + ["--port", str(stack.config.redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        stack.redis.pid_file.write_text(f"{plain.pid}\n")
        deadline = time.monotonic() + 10
        while not stack._redis_answers_in_clear() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.redis.pid() == plain.pid
        assert stack.up() == ["redis"]
        assert plain.wait(timeout=10) == 0  # stopped by SIGTERM, as our processes are
        assert not stack._redis_answers_in_clear()
        assert stack._redis_answers_tls()
    finally:
        if plain.poll() is None:
            plain.terminate()
            plain.wait()
        stack.up()
        fresh_read_models(settings_for(stack), flush=False)


def test_redis_has_no_plain_port_and_the_app_talks_tls(stack: Stack, settings: Settings) -> None:
    c = stack.config
    assert settings.redis_url.startswith("rediss://")
    plain = redis.Redis(host=c.host, port=c.redis_port, socket_timeout=2, socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()
    app = build_redis(settings)
    try:
        assert app.ping()
        assert app.connection_pool.connection_class is redis.SSLConnection
    finally:
        app.close()


def test_the_app_refuses_a_redis_whose_certificate_does_not_name_the_host(
    stack: Stack, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    c = stack.config
    misnamed = build_redis(make_settings(redis_url=f"rediss://{UNLISTED_NAME}:{c.redis_port}/0"))
    with pytest.raises(redis.ConnectionError, match="mismatch|doesn't match|not valid for"):
        misnamed.ping()
    misnamed.close()
    other = TlsFiles(tmp_path / "other-ca")
    make_ca(other, "not the stack's CA")
    untrusted = build_redis(make_settings(redis_ssl_ca=str(other.ca_cert)))
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.ping()
    untrusted.close()
    # The control: the same name, the stack's CA, no host-name check: it connects.
    lax = redis.Redis(
        host=UNLISTED_NAME,
        port=c.redis_port,
        ssl=True,
        ssl_ca_certs=str(c.ca_path),
        ssl_check_hostname=False,
        socket_timeout=2,
    )
    assert lax.ping()
    lax.close()
