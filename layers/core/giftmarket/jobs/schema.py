"""The write model's schema on a deployment: the application's database user, then Alembic.

RDS creates the database and its master user (whose password RDS keeps in Secrets Manager);
the functions connect as an application user that may read and write rows but not change
the schema. This job, run as the master user after a deploy (the migration function), creates
or updates that user from its secret and applies the migrations. Every step is idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from giftmarket.adapters.db import Credentials, build_engine, resolve_credentials
from giftmarket.lazy import lazy
from giftmarket.settings import Settings

if TYPE_CHECKING:
    from alembic import command
    from alembic import config as alembic_config
    from alembic import script as alembic_script
else:
    command = lazy("alembic.command")
    alembic_config = lazy("alembic.config")
    alembic_script = lazy("alembic.script")

_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_USER_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")

# Rows only: the schema belongs to the migrations. REPLICATION CLIENT lets the queries read
# their replica's lag (SHOW REPLICA STATUS), which decides when they move to the primary.
APP_DATABASE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
APP_GLOBAL_PRIVILEGES = "REPLICATION CLIENT"


@dataclass(frozen=True)
class MigrationReport:
    app_user: str
    revision: str

    def as_dict(self) -> dict[str, str]:
        return {"app_user": self.app_user, "revision": self.revision}


def provision_app_user(connection: Connection, database: str, app: Credentials) -> None:
    """Create the application user if missing, set its password to the secret's (so a
    rotated secret is applied by running this again) and grant it what it needs."""
    if not _DATABASE_NAME.match(database) or not _USER_NAME.match(app.username):
        raise ValueError("database (1-64) and user (1-32) names: letters, digits, underscores")
    # The driver quotes the user name and password; %% is a literal % (any host).
    account = "%s@'%%'"
    user = (app.username,)
    connection.exec_driver_sql(
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY %s", (*user, app.password)
    )
    connection.exec_driver_sql(f"ALTER USER {account} IDENTIFIED BY %s", (*user, app.password))
    connection.exec_driver_sql(
        f"GRANT {APP_DATABASE_PRIVILEGES} ON `{database}`.* TO {account}", user
    )
    connection.exec_driver_sql(f"GRANT {APP_GLOBAL_PRIVILEGES} ON *.* TO {account}", user)


def upgrade_schema(settings: Settings, credentials: Credentials, alembic_ini: Path) -> str:
    """Apply every migration not yet applied, connected with `credentials`; the revision
    the database is at afterwards."""
    config = alembic_config.Config(str(alembic_ini))
    # env.py connects with these instead of building settings from the environment, and
    # leaves the process's logging (Powertools' in Lambda) alone.
    config.attributes.update(settings=settings, credentials=credentials, configure_logging=False)
    command.upgrade(config, "head")
    head = alembic_script.ScriptDirectory.from_config(config).get_current_head()
    return head or "base"


def migrate(settings: Settings, alembic_ini: Path) -> MigrationReport:
    """The whole job: the application user from DB_SECRET_ARN, created with the master
    credentials of DB_MASTER_SECRET_ARN, then the migrations, also as the master user."""
    if not settings.db_master_secret_arn:
        raise RuntimeError("DB_MASTER_SECRET_ARN is not set: the migrations need the master user")
    app = resolve_credentials(settings)
    master = resolve_credentials(
        settings.model_copy(update={"db_secret_arn": settings.db_master_secret_arn})
    )
    engine = build_engine(
        settings, master, settings.db_primary_host, settings.db_primary_port, read_only=False
    )
    try:
        with engine.begin() as connection:
            provision_app_user(connection, settings.db_name, app)
    finally:
        engine.dispose()
    revision = upgrade_schema(settings, master, alembic_ini)
    return MigrationReport(app_user=app.username, revision=revision)
