"""The migration job's users and secrets, as RDS and the template make them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from giftmarket.adapters.db import mysql_error_code, mysql_tls_context
from giftmarket.settings import Settings

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "infra" / "migrations" / "alembic.ini"
MASTER, APP = "gm_test_master", "gm_test_app"


def user_engine(settings: Settings, user: str, password: str) -> Engine:
    """An engine on the primary as `user`, over TLS as the application's own connections
    (the stack refuses plain TCP)."""
    url = URL.create(
        "mysql+pymysql",
        username=user,
        password=password,
        host=settings.db_primary_host,
        port=settings.db_primary_port,
        database=settings.db_name,
    )
    return create_engine(url, poolclass=NullPool, connect_args={"ssl": mysql_tls_context(settings)})


def logs_in(settings: Settings, user: str, password: str) -> bool:
    """Whether `user` can log in with `password` and read the users table; any refusal
    other than 1045 (access denied) fails the test."""
    engine = user_engine(settings, user, password)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT COUNT(*) FROM users"))
        return True
    except OperationalError as exc:
        assert mysql_error_code(exc) == 1045
        return False
    finally:
        engine.dispose()


def migration_secrets(
    secretsmanager: Any,
    master_password: str,
    app_password: str,
    *,
    app_user: str = APP,
    name: str = "",
) -> tuple[str, str]:
    """ARNs of (the master user's secret, the application user's secret), as RDS and the
    template make them."""
    arns = []
    for kind, user, password in (
        ("master", MASTER, master_password),
        ("app", app_user, app_password),
    ):
        secret = json.dumps({"username": user, "password": password})
        arns.append(secretsmanager.create_secret(Name=f"{kind}{name}", SecretString=secret)["ARN"])
    return arns[0], arns[1]
