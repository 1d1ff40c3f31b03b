"""Lambda entry point of the schema migration (MigrationFunction in template.yaml).

Packaged with the Alembic scripts beside it and run inside the VPC, where RDS is. It creates
or updates the application's database user from its secret, then applies the migrations as
the master user; running it again changes nothing. Every deploy that brings a new version of
it runs it before the API functions change, as the custom resource SchemaMigration of
template.yaml (a CloudFormation request, answered at its ResponseURL: a failure fails the
deploy). An operator can also run it by hand with an empty event
(`sam remote invoke MigrationFunction`).

It is also the operator's way to admin rights on a deployed stage, where only those allowed
to invoke this function (IAM) can use it:
`{"admin": {"action": "grant" | "revoke" | "list", "email": "...", "by": "your name"}}`,
recorded as `giftmarket admin grant|revoke` records them (CloudTrail names the caller too).
"""

from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from giftmarket.adapters.cloudformation import answer_custom_resource, is_custom_resource_request
from giftmarket.jobs.schema import migrate
from giftmarket.settings import Settings

logger = Logger(service="giftmarket-migration")

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"
ADMIN_ACTIONS = {"grant": True, "revoke": False}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and "admin" in event:
        return admin_rights(event["admin"], getattr(context, "function_name", "migration"))
    if is_custom_resource_request(event):
        status = answer_custom_resource(
            event, context.get_remaining_time_in_millis, run_migrations, physical_id=SCHEMA_ID
        )
        logger.info(
            "answered CloudFormation", extra={"request": event["RequestType"], "status": status}
        )
        return {"status": status}
    return run_migrations()


# The schema outlives any one request: an update never "replaces" it, a delete keeps it.
SCHEMA_ID = "giftmarket-schema"


def run_migrations() -> dict[str, str]:
    report = migrate(Settings(), ALEMBIC_INI)
    logger.info("schema migrated", extra=report.as_dict())
    return report.as_dict()


def admin_rights(request: Any, function_name: str) -> dict[str, Any]:
    """Grant, revoke or list admin rights, connected as the application user (rows only)."""
    from giftmarket.bootstrap import bootstrap
    from giftmarket.commands.admins import ListAdminRights, SetAdmin
    from giftmarket.domain.errors import DomainError

    action = request.get("action") if isinstance(request, dict) else None
    email = request.get("email") if isinstance(request, dict) else None
    if action not in (*ADMIN_ACTIONS, "list") or (action != "list" and not isinstance(email, str)):
        return {"error": 'expected {"admin": {"action": "grant|revoke|list", "email": "..."}}'}
    container = bootstrap()
    try:
        if action == "list":
            rights, _ = container.command_executor.execute(ListAdminRights())
            return {
                "admins": [{"user_id": u, "email": e} for u, e in rights.admins],
                "record": [
                    {
                        "action": c.action.value,
                        "email": c.email,
                        "by": c.actor,
                        "at": c.recorded_at.isoformat(),
                    }
                    for c in rights.history
                ],
            }
        by = str(request.get("by") or "unnamed operator")
        command = SetAdmin(str(email), ADMIN_ACTIONS[action], f"{by} (lambda:{function_name})")
        try:
            result, _ = container.command_executor.execute(command)
        except DomainError as exc:
            return {"error": exc.detail}
    finally:
        container.close()
    answer = {"user_id": result.user_id, "email": result.email, "is_admin": result.is_admin}
    logger.info("admin rights", extra={**answer, "changed": result.change is not None, "by": by})
    return {**answer, "changed": result.change is not None}
