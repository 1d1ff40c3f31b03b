"""The migration function's job on a real MariaDB: the application user is created from its
secret with row privileges only, the migrations run as the master user, and a rerun (after
the secret was rotated, say) changes the password and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from tests.conftest import SettingsFactory

from giftmarket.adapters import tables
from giftmarket.adapters.db import mysql_error_code, mysql_tls_context
from giftmarket.jobs.schema import migrate
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "infra" / "migrations" / "alembic.ini"
MASTER, APP = "gm_test_master", "gm_test_app"


@pytest.fixture
def master_user(stack: Stack) -> Iterator[str]:
    """A user with RDS's master rights (everything, and granting it)."""
    password = "master-Passw0rd-for-tests"
    host = stack.config.host
    stack.primary.sql(
        f"CREATE USER IF NOT EXISTS '{MASTER}'@'{host}' IDENTIFIED BY '{password}';"
        f"GRANT ALL PRIVILEGES ON *.* TO '{MASTER}'@'{host}' WITH GRANT OPTION;"
    )
    yield password
    stack.primary.sql(f"DROP USER IF EXISTS '{MASTER}'@'{host}'; DROP USER IF EXISTS '{APP}'@'%';")


def app_engine(settings: Settings, password: str) -> Engine:
    url = URL.create(
        "mysql+pymysql",
        username=APP,
        password=password,
        host=settings.db_primary_host,
        port=settings.db_primary_port,
        database=settings.db_name,
    )
    # TLS as the application's own connections (the stack refuses plain TCP).
    return create_engine(url, poolclass=NullPool, connect_args={"ssl": mysql_tls_context(settings)})


def head_revision() -> str:
    """The newest migration's revision id, from the scripts themselves."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert head is not None
    return head


def test_the_job_creates_a_row_only_app_user_and_a_rerun_applies_a_new_password(
    make_settings: SettingsFactory, master_user: str, secretsmanager: Any
) -> None:
    master_arn = secretsmanager.create_secret(
        Name="master", SecretString=json.dumps({"username": MASTER, "password": master_user})
    )["ARN"]
    app_arn = secretsmanager.create_secret(
        Name="app", SecretString=json.dumps({"username": APP, "password": "first-Passw0rd"})
    )["ARN"]
    settings = make_settings(db_secret_arn=app_arn, db_master_secret_arn=master_arn)

    report = migrate(settings, ALEMBIC_INI)

    assert report.app_user == APP
    assert report.revision == head_revision()
    engine = app_engine(settings, "first-Passw0rd")
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(tables.users)).scalar_one() >= 0
            with pytest.raises(OperationalError, match="1142"):  # CREATE command denied
                conn.execute(text("CREATE TABLE not_allowed (id INT)"))
    finally:
        engine.dispose()

    secretsmanager.put_secret_value(
        SecretId=app_arn, SecretString=json.dumps({"username": APP, "password": "second-Passw0rd"})
    )
    DEFAULT_PROVIDERS.clear()  # Powertools would serve the old secret for 5 minutes
    assert migrate(settings, ALEMBIC_INI) == report

    for password, works in (("first-Passw0rd", False), ("second-Passw0rd", True)):
        engine = app_engine(settings, password)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            logged_in = True
        except OperationalError as exc:
            assert mysql_error_code(exc) == 1045  # access denied
            logged_in = False
        finally:
            engine.dispose()
        assert logged_in is works, password
