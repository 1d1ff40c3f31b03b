"""Alembic environment: migrations always run on the primary, with giftmarket's settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from giftmarket.adapters.db import Credentials, build_engine, resolve_credentials
from giftmarket.adapters.tables import metadata
from giftmarket.settings import Settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_online() -> None:
    # The migration function passes the master user's settings and credentials; the CLI
    # and the local stack take them from the environment.
    settings: Settings = config.attributes.get("settings") or Settings()
    credentials: Credentials = config.attributes.get("credentials") or resolve_credentials(settings)
    engine = build_engine(
        settings,
        credentials,
        settings.db_primary_host,
        settings.db_primary_port,
        read_only=False,
    )
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                compare_type=True,
                compare_server_default=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against the primary")
run_migrations_online()
