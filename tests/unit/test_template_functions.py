"""template.yaml's functions against the code they run: handlers that import, packages that
hold only the entry point, the settings each one reads, the secrets it may read, the routes of
PRODUCT.md and the schedules of the jobs."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cfn_template import (
    REPO_ROOT,
    events,
    function_env,
    function_grants,
    function_ids,
    function_props,
    handler_file,
    import_handler_module,
    props,
    refs,
    resource,
    template,
)

from giftmarket.settings import Settings

PRODUCT_MD = REPO_ROOT.parent / "shared" / "PRODUCT.md"
LAMBDA_FUNCTIONS = {
    "CommandApiFunction": "command_api",
    "QueryApiFunction": "query_api",
    "ProjectorFunction": "projector",
    "OutboxRelayFunction": "outbox_relay",
    "SettlementFunction": "settlement",
    "ImageJanitorFunction": "image_janitor",
    "PurgeFunction": "purge",
    "ExpireAsksFunction": "expire_asks",
}

# What each function reads beyond what all of them need to build Settings in AWS mode.
DATABASE = {"DB_PRIMARY_HOST", "DB_PRIMARY_PORT", "DB_REPLICA_HOST", "DB_REPLICA_PORT"}
COMMON = {
    "ENVIRONMENT",
    "DB_NAME",
    "DB_SECRET_ARN",
    "JWT_SECRET_ARN",
    "FINGERPRINT_KEY_SECRET_ARN",
    "BARCODE_KEYS_SECRET_ARN",
    *DATABASE,
}
REDIS = {"REDIS_URL", "REDIS_AUTH_SECRET_ARN"}
VOUCHERS = {"INSPECTION_MODE", "MIN_VOUCHER_VALIDITY_DAYS", "ASK_EXPIRY_MARGIN_DAYS"}
NEEDS: dict[str, set[str]] = {
    # Redis: the sign-in abuse counters (its AUTH token must be readable, or every login
    # would fail in AWS).
    "CommandApiFunction": {"EVENTS_QUEUE_URL", "IMAGES_BUCKET", *REDIS, *VOUCHERS},
    "QueryApiFunction": {"IMAGES_BUCKET", *REDIS},
    "ProjectorFunction": {"EVENTS_QUEUE_URL", "WELCOME_COUPON_AMOUNT", *REDIS},
    "OutboxRelayFunction": {"EVENTS_QUEUE_URL", *REDIS},
    "SettlementFunction": {"EVENTS_QUEUE_URL"},
    "ImageJanitorFunction": {"IMAGES_BUCKET"},
    "PurgeFunction": {"OUTBOX_RETENTION_DAYS"},
    # The margin must be the command API's: what buy-now leaves alone is what expires.
    "ExpireAsksFunction": {"EVENTS_QUEUE_URL", "ASK_EXPIRY_MARGIN_DAYS"},
    "MigrationFunction": {"DB_MASTER_SECRET_ARN"},
}
# Settings with a default that is right in AWS too; the others must come from the template.
DEFAULT_IS_FINE = {"WELCOME_COUPON_AMOUNT"}
# The secret behind each *_SECRET_ARN setting must be readable by the function that needs it.
SECRET_SETTINGS = {
    "DB_SECRET_ARN",
    "JWT_SECRET_ARN",
    "FINGERPRINT_KEY_SECRET_ARN",
    "BARCODE_KEYS_SECRET_ARN",
    "REDIS_AUTH_SECRET_ARN",
    "DB_MASTER_SECRET_ARN",
}
NOT_SETTINGS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}


def materialize(value: Any, branch: int) -> str:
    """An environment value as a string, its intrinsics replaced by plausible values (the
    first or the second branch of every Fn::If; a parameter's default or its last allowed
    value)."""
    if isinstance(value, dict):
        ((kind, arg),) = value.items()
        if kind == "Fn::If":
            return materialize(arg[1 + branch], branch)
        if kind == "Fn::GetAtt" and str(arg[1]).endswith("Port"):
            return "3306"
        if kind == "Fn::Sub":
            return re.sub(r"\$\{[^}]+\}", "resolved", str(arg))
        parameter = template()["Parameters"].get(arg) if kind == "Ref" else None
        if parameter and "Default" in parameter:
            # Its default, or in the second branch its last allowed value.
            return str([parameter["Default"], *parameter.get("AllowedValues", [])][-branch])
        return f"resolved-{'.'.join(map(str, arg)) if isinstance(arg, list) else arg}"
    return str(value)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in [*Settings.model_fields, *NOT_SETTINGS]:
        monkeypatch.delenv(name.upper(), raising=False)
    yield monkeypatch


def test_the_template_has_the_eight_functions_and_the_migration_function() -> None:
    assert set(function_ids()) == {*LAMBDA_FUNCTIONS, "MigrationFunction"}


@pytest.mark.parametrize("function", function_ids())
def test_handler_imports_to_a_callable_taking_event_and_context(
    function: str, clean_environment: pytest.MonkeyPatch
) -> None:
    for name, value in function_env(function).items():
        clean_environment.setenv(name, materialize(value, 0))
    handler = getattr(import_handler_module(function), function_props(function)["Handler"][4:])
    assert callable(handler)
    assert list(inspect.signature(handler).parameters) == ["event", "context"]


@pytest.mark.parametrize(("function", "folder"), LAMBDA_FUNCTIONS.items())
def test_a_function_package_is_its_entry_point_and_sample_events_only(
    function: str, folder: str
) -> None:
    assert function_props(function)["CodeUri"] == f"functions/{folder}/"
    assert function_props(function)["Handler"] == "app.handler"
    code = REPO_ROOT / "functions" / folder
    shipped = {
        p.relative_to(code).as_posix()
        for p in code.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "app.py" in shipped
    assert all(f == "app.py" or re.fullmatch(r"events/[\w-]+\.json", f) for f in shipped), shipped


@pytest.mark.parametrize("function", function_ids())
def test_every_setting_a_function_reads_is_set_and_valid_in_aws_mode(
    function: str, clean_environment: pytest.MonkeyPatch
) -> None:
    env = function_env(function)
    missing = (COMMON | NEEDS[function]) - DEFAULT_IS_FINE - set(env)
    assert not missing, f"{function} does not set {sorted(missing)}"
    for branch in (0, 1):
        values = {name: materialize(v, branch) for name, v in env.items()}
        settings = Settings.model_validate(
            {k.lower(): v for k, v in values.items() if k not in NOT_SETTINGS}
        )
        assert settings.environment == "aws"
        assert settings.db_primary_port == 3306


@pytest.mark.parametrize("function", function_ids())
def test_every_environment_variable_is_a_setting_or_a_powertools_one(function: str) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    unknown = set(function_env(function)) - fields - NOT_SETTINGS
    assert not unknown, f"{function}: {sorted(unknown)} are read by nothing"


@pytest.mark.parametrize("function", function_ids())
def test_a_function_may_read_the_secrets_its_settings_name_and_no_other(function: str) -> None:
    env = function_env(function)
    needed = {
        json.dumps(env[name], sort_keys=True)
        for name in SECRET_SETTINGS & (COMMON | NEEDS[function])
        # Every function builds Settings (which names every key); only the APIs check
        # tokens, and only the command API fingerprints requests and voucher barcodes.
        if name != "JWT_SECRET_ARN" or function in ("CommandApiFunction", "QueryApiFunction")
        if name != "FINGERPRINT_KEY_SECRET_ARN" or function == "CommandApiFunction"
        if name != "BARCODE_KEYS_SECRET_ARN" or function == "CommandApiFunction"
    }
    granted = {
        json.dumps(resource_, sort_keys=True)
        for grant in function_grants(function)
        if "secretsmanager:GetSecretValue" in grant.actions
        for resource_ in grant.resources
    }
    assert granted == needed


@pytest.mark.parametrize("function", function_ids())
def test_metrics_and_logs_carry_the_service_name_the_dashboard_uses(function: str) -> None:
    service = function_env(function)["POWERTOOLS_SERVICE_NAME"]
    assert f'service="{service}"' in handler_file(function).read_text()


def product_routes() -> list[tuple[str, str, str]]:
    """(function, method, path) for every row of PRODUCT.md's command and query tables."""
    text = PRODUCT_MD.read_text()
    routes = []
    for section, function in (
        ("### Commands", "CommandApiFunction"),
        ("### Queries", "QueryApiFunction"),
    ):
        table = text.split(section, 1)[1].split("\n\n", 1)[0]
        for row in table.splitlines():
            cell = row.split("|")[1].strip() if row.startswith("|") else ""
            if re.match(r"(GET|POST|DELETE|PUT|PATCH) /", cell):
                method, path = cell.split(" ")[:2]
                routes.append((function, method, path.split("?", 1)[0]))
    return routes


@pytest.fixture
def routed() -> dict[tuple[str, str], str]:
    if not PRODUCT_MD.is_file():
        pytest.skip(f"{PRODUCT_MD} is not beside the repository")
    return {
        (e["Method"], e["Path"]): f for f in function_ids() for e in events(f, "HttpApi").values()
    }


# Routes PRODUCT.md gained on 2026-12-06 that open issues build; each leaves this list in
# the change that routes it (the test below fails if a listed route is routed, or if
# PRODUCT.md drops one).
NOT_YET_BUILT: dict[tuple[str, str], str] = {}


def test_every_product_route_is_routed_to_its_function_and_nothing_else_is(
    routed: dict[tuple[str, str], str],
) -> None:
    specified = {(method, path): f for f, method, path in product_routes()}
    assert len(specified) == 34
    assert set(NOT_YET_BUILT) <= set(specified)
    assert not set(NOT_YET_BUILT) & set(routed)
    assert routed == {route: f for route, f in specified.items() if route not in NOT_YET_BUILT}


def test_every_route_is_on_the_one_http_api() -> None:
    for f in function_ids():
        for route in events(f, "HttpApi").values():
            assert route["ApiId"] == {"Ref": "HttpApi"}


def schedule(function: str) -> dict[str, Any]:
    (found,) = events(function, "ScheduleV2").values()
    return found


@pytest.mark.parametrize(
    ("function", "expression", "zone"),
    [
        ("OutboxRelayFunction", "rate(1 minute)", None),
        ("SettlementFunction", "cron(10 0 * * ? *)", "Asia/Seoul"),
        ("ImageJanitorFunction", "cron(0 3 * * ? *)", "Asia/Seoul"),
        ("PurgeFunction", "cron(0 4 * * ? *)", "Asia/Seoul"),
        ("ExpireAsksFunction", "cron(5 0 * * ? *)", "Asia/Seoul"),
    ],
)
def test_schedules_fire_when_the_product_says_in_korean_time(
    function: str, expression: str, zone: str | None
) -> None:
    found = schedule(function)
    assert found["ScheduleExpression"] == expression
    assert found.get("ScheduleExpressionTimezone") == zone
    assert found["FlexibleTimeWindow"] == {"Mode": "OFF"}


@pytest.mark.parametrize(
    "function",
    [
        "OutboxRelayFunction",
        "SettlementFunction",
        "ImageJanitorFunction",
        "PurgeFunction",
        "ExpireAsksFunction",
    ],
)
def test_every_schedule_has_a_retry_policy_and_a_dead_letter_queue(function: str) -> None:
    found = schedule(function)
    assert "MaximumRetryAttempts" in found["RetryPolicy"]
    (queue,) = refs(found["DeadLetterConfig"]["Arn"])
    assert resource(queue)["Type"] == "AWS::SQS::Queue"


@pytest.mark.parametrize(
    "function",
    ["SettlementFunction", "ImageJanitorFunction", "PurgeFunction", "ExpireAsksFunction"],
)
def test_daily_jobs_are_retried_and_then_dead_lettered_for_an_operator(function: str) -> None:
    config = props(function)["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] >= 1
    (queue,) = refs(config["DestinationConfig"]["OnFailure"]["Destination"])
    assert schedule(function)["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}


@pytest.mark.parametrize(
    "function",
    [
        "OutboxRelayFunction",
        "SettlementFunction",
        "ImageJanitorFunction",
        "PurgeFunction",
        "ExpireAsksFunction",
    ],
)
def test_every_jobs_dead_letter_queue_is_in_the_dead_letter_alarms_sum(function: str) -> None:
    (queue,) = refs(schedule(function)["DeadLetterConfig"]["Arn"])
    metrics = props("ScheduledJobsDeadLetterAlarm")["Metrics"]
    (total,) = [m["Expression"] for m in metrics if "Expression" in m]
    (watching,) = [
        m["Id"]
        for m in metrics
        if "MetricStat" in m
        and m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        == {"Fn::GetAtt": [queue, "QueueName"]}
    ]
    assert watching in re.split(r"\s*\+\s*", total)


def test_the_settlement_schedule_settles_the_korean_day_that_just_ended(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    # 00:10 KST on 2 December is 15:10 UTC on 1 December: the business date is 1 December.
    fired = schedule("SettlementFunction")["Input"].replace(
        "<aws.scheduler.scheduled-time>", "2026-12-01T15:10:00Z"
    )
    module = import_handler_module("SettlementFunction")
    assert module.requested_business_date(json.loads(fired)) == date(2026, 12, 1)


def test_the_relay_is_not_retried_by_the_scheduler_or_lambda() -> None:
    assert schedule("OutboxRelayFunction")["RetryPolicy"]["MaximumRetryAttempts"] == 0
    assert props("OutboxRelayFunction")["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_the_migration_function_ships_the_alembic_scripts_and_bypasses_the_proxy() -> None:
    code = REPO_ROOT / function_props("MigrationFunction")["CodeUri"]
    assert (code / "alembic.ini").is_file() and (code / "env.py").is_file()
    assert any(Path(code, "versions").glob("0001_*.py"))
    env = function_env("MigrationFunction")
    assert env["DB_PRIMARY_HOST"] == {"Fn::GetAtt": ["PrimaryDb", "Endpoint.Address"]}
    assert env["DB_MASTER_SECRET_ARN"] == {
        "Fn::GetAtt": ["PrimaryDb", "MasterUserSecret.SecretArn"]
    }
