"""Lambda entry point of the schema migration (MigrationFunction in template.yaml).

Packaged with the Alembic scripts beside it and run inside the VPC, where RDS is: after the
first deploy, and after every deploy that adds a migration, an operator invokes it once
(`sam remote invoke MigrationFunction`). It creates or updates the application's database
user from its secret, then applies the migrations as the master user. The event carries
nothing; running it again changes nothing.
"""

from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from giftmarket.jobs.schema import migrate
from giftmarket.settings import Settings

logger = Logger(service="giftmarket-migration")

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    report = migrate(Settings(), ALEMBIC_INI)
    logger.info("schema migrated", extra=report.as_dict())
    return report.as_dict()
