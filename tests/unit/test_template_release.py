"""What a platform team checks before a stage goes to AWS: stages side by side, their
samconfig environments, gradual releases behind migrations, database monitoring, and the data
that must survive a bad update (access logs, backups in a second region, the stack policy)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from typing import Any

import pytest
from tests.unit.cfn_template import REPO_ROOT, function_ids, props, resource, resources, template

pytestmark = pytest.mark.unit

STAGES = ("dev", "staging", "prod")
API_FUNCTIONS = ("CommandApiFunction", "QueryApiFunction")


def samconfig() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())


def overrides(stage: str) -> dict[str, str]:
    pairs = samconfig()[stage]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in pairs)


def stage_parameters(stage: str) -> dict[str, str]:
    """Every template parameter as that stage deploys it: its override, else the default."""
    declared = template()["Parameters"]
    given = overrides(stage)
    assert set(given) <= set(declared), set(given) - set(declared)
    missing = [name for name, p in declared.items() if name not in given and "Default" not in p]
    assert not missing, f"{stage} leaves required parameters unset: {missing}"
    return {name: given.get(name, str(p.get("Default", ""))) for name, p in declared.items()}


# ---------------------------------------------------------------------------------------
# Stages


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_a_samconfig_environment_the_template_accepts(stage: str) -> None:
    config = samconfig()[stage]
    deploy = config["deploy"]["parameters"]
    assert deploy["stack_name"] == f"giftmarket-{stage}"
    assert config["global"]["parameters"]["region"]
    assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    assert deploy["resolve_s3"] is True
    values = stage_parameters(stage)
    assert values["Stage"] == stage
    for name, declared in template()["Parameters"].items():
        value = values[name]
        if "AllowedValues" in declared:
            assert value in [str(v) for v in declared["AllowedValues"]], (name, value)
        if "AllowedPattern" in declared:
            assert re.fullmatch(declared["AllowedPattern"], value), (name, value)
        if declared["Type"] == "Number":
            assert declared.get("MinValue", -1e18) <= float(value) <= declared.get("MaxValue", 1e18)
    assert not rule_violations(values), rule_violations(values)


@pytest.mark.parametrize("stage", ["staging", "prod"])
def test_stages_that_serve_users_are_protected_paged_backed_up_and_released_gradually(
    stage: str,
) -> None:
    values = stage_parameters(stage)
    assert "*" not in values["AllowedOrigins"].split(",")
    assert all(o.startswith("https://") for o in values["AllowedOrigins"].split(","))
    assert values["DbDeletionProtection"] == "true"
    assert values["AlarmEmail"]
    assert values["BackupCopyVaultArn"]
    # The copy lives in another region than the stage.
    assert (
        f":backup:{samconfig()[stage]['global']['parameters']['region']}:"
        not in (values["BackupCopyVaultArn"])
    )
    assert values["ReleaseStrategy"] != "AllAtOnce"


def test_dev_is_cheap_to_throw_away() -> None:
    values = stage_parameters("dev")
    assert values["DbDeletionProtection"] == "false"
    assert values["BackupCopyVaultArn"] == ""
    assert values["ReleaseStrategy"] == "AllAtOnce"


def evaluate(node: Any, values: dict[str, str]) -> Any:
    """The few intrinsic functions template Rules use, over string parameter values."""
    if not isinstance(node, dict):
        return node
    ((fn, arg),) = node.items()
    if fn == "Ref":
        declared = template()["Parameters"][arg]
        value = values[arg]
        return value.split(",") if declared["Type"] == "CommaDelimitedList" else value
    args = [evaluate(a, values) for a in arg] if isinstance(arg, list) else evaluate(arg, values)
    if fn == "Fn::Equals":
        return args[0] == args[1]
    if fn == "Fn::Not":
        return not args[0]
    if fn == "Fn::Contains":
        return args[1] in args[0]
    raise AssertionError(f"no evaluator for {fn}")


def rule_violations(values: dict[str, str]) -> list[str]:
    failed = []
    for name, rule in template().get("Rules", {}).items():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], values):
            continue
        failed += [name for a in rule["Assertions"] if not evaluate(a["Assert"], values)]
    return failed


@pytest.mark.parametrize(
    ("stage", "origins", "refused"),
    [
        ("prod", "*", True),
        ("staging", "https://giftmarket.example,*", True),
        ("prod", "https://giftmarket.example", False),
        ("dev", "*", False),
    ],
)
def test_a_wildcard_cors_origin_is_refused_outside_dev(
    stage: str, origins: str, refused: bool
) -> None:
    values = {**stage_parameters(stage), "AllowedOrigins": origins}
    assert bool(rule_violations(values)) is refused
    assert "Default" not in template()["Parameters"]["AllowedOrigins"]


NAME_PROPERTIES = {
    "BucketName",
    "QueueName",
    "LogGroupName",
    "LayerName",
    "DBProxyName",
    "ReplicationGroupId",
    "DashboardName",
    "BackupVaultName",
    "BackupPlanName",
    "AliasName",
    "RotationLambdaName",
    "FunctionName",
    "TopicName",
    "AlarmName",
    "Name",
}


def named(node: Any, path: str) -> list[tuple[str, Any]]:
    """(path, value) of every name-like property under `node`, events' schedules included."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in NAME_PROPERTIES and not isinstance(value, list):
                found.append((f"{path}.{key}", value))
            if key not in {"Environment", "Dimensions", "Metrics", "Tags"}:
                found += named(value, f"{path}.{key}")
    return found


def test_every_name_the_stack_gives_carries_the_stage() -> None:
    names = [
        (f"{logical_id}{path}", value)
        for logical_id, r in resources().items()
        for path, value in named(r.get("Properties", {}), "")
    ]
    # The schedules (ScheduleV2 events) are among them: names are per account and region.
    assert sum(".Events." in path and path.endswith(".Name") for path, _ in names) == 5
    for path, value in names:
        if isinstance(value, dict) and set(value) == {"Ref"}:
            continue  # a name made elsewhere (a resource's own generated name)
        assert "${Stage}" in json.dumps(value), (path, value)


# ---------------------------------------------------------------------------------------
# Releases


def test_every_function_is_invoked_through_its_published_alias() -> None:
    assert template()["Globals"]["Function"]["AutoPublishAlias"] == "live"
    assert all("AutoPublishAlias" not in props(f) for f in function_ids())


@pytest.mark.parametrize("function", API_FUNCTIONS)
def test_api_functions_shift_traffic_gradually_and_roll_back_on_their_alarms(
    function: str,
) -> None:
    preference = props(function)["DeploymentPreference"]
    assert preference["Type"] == {"Ref": "ReleaseStrategy"}
    guards = {a["Ref"] for a in preference["Alarms"]}
    stem = function.removesuffix("Function")
    assert guards == {
        "ReleaseApi5xxAlarm",
        f"{stem}ReleaseErrorsAlarm",
        f"{stem}ReleaseLatencyAlarm",
    }
    for guard in guards - {"ReleaseApi5xxAlarm"}:
        dimensions = {d["Name"]: d["Value"] for d in props(guard)["Dimensions"]}
        assert dimensions == {
            "FunctionName": {"Ref": function},
            "Resource": {"Fn::Sub": f"${{{function}}}:live"},
        }
    # Quick enough to catch a bad canary inside its first minutes.
    for guard in guards:
        alarm = props(guard)
        period = alarm.get("Period") or alarm["Metrics"][1]["MetricStat"]["Period"]
        assert period * alarm["EvaluationPeriods"] <= 300, guard
    strategies = template()["Parameters"]["ReleaseStrategy"]
    assert strategies["Default"].startswith("Canary")


@pytest.mark.parametrize("function", API_FUNCTIONS)
def test_new_api_code_takes_traffic_only_after_the_migrations_ran(function: str) -> None:
    assert resource(function)["DependsOn"] == "SchemaMigration"
    migration = props("SchemaMigration")
    assert resource("SchemaMigration")["Type"] == "Custom::SchemaMigration"
    # The migration function's own new version runs them: new scripts, or a new layer.
    assert migration["ServiceToken"] == {"Ref": "MigrationFunction.Alias"}
    assert migration["MigrationFunctionVersion"] == {"Ref": "MigrationFunction.Version"}
    assert migration["CoreLayerVersion"] == {"Ref": "CoreLayer"}
    # A function that never answers fails the deploy soon after its own timeout.
    assert props("MigrationFunction")["Timeout"] < migration["ServiceTimeout"] <= 3600


# ---------------------------------------------------------------------------------------
# The database: monitoring and alarms


@pytest.mark.parametrize("instance", ["PrimaryDb", "ReplicaDb"])
def test_both_databases_have_enhanced_monitoring_performance_insights_and_alarms(
    instance: str,
) -> None:
    db = props(instance)
    assert db["MonitoringInterval"] in (1, 5, 10, 15, 30, 60)
    assert db["MonitoringRoleArn"] == {"Fn::GetAtt": ["DbMonitoringRole", "Arn"]}
    assert db["EnablePerformanceInsights"] is True
    assert db["PerformanceInsightsRetentionPeriod"] >= 7
    watched = {
        props(a)["MetricName"]
        for a, r in resources("AWS::CloudWatch::Alarm").items()
        if {"Name": "DBInstanceIdentifier", "Value": {"Ref": instance}}
        in r["Properties"].get("Dimensions", [])
    }
    assert {"CPUUtilization", "FreeStorageSpace", "DatabaseConnections"} <= watched, watched
    role = props("DbMonitoringRole")
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "monitoring.rds.amazonaws.com"}


# ---------------------------------------------------------------------------------------
# Data protection


def test_every_request_on_a_voucher_image_is_logged_to_a_private_bucket() -> None:
    logging = props("ImagesBucket")["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": "ImagesAccessLogsBucket"}
    logs = resource("ImagesAccessLogsBucket")
    assert logs["DeletionPolicy"] == "Retain"
    assert all(logs["Properties"]["PublicAccessBlockConfiguration"].values())
    (writer, deny_http) = props("ImagesAccessLogsBucketPolicy")["PolicyDocument"]["Statement"]
    assert writer["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert writer["Action"] == "s3:PutObject"
    assert "aws:SourceArn" in writer["Condition"]["ArnLike"]
    assert deny_http["Effect"] == "Deny" and deny_http["Condition"]["Bool"] == {
        "aws:SecureTransport": "false"
    }


def test_the_primary_is_backed_up_daily_and_copied_to_another_region_unless_dev() -> None:
    conditions = template()["Conditions"]
    assert conditions["BackUpPrimary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "BackupCopyVaultArn"}, ""]}]
    }
    for backup in ("BackupVault", "BackupPlan", "BackupRole", "BackupSelection"):
        assert resource(backup)["Condition"] == "BackUpPrimary"
    (rule,) = props("BackupPlan")["BackupPlan"]["BackupPlanRule"]
    (copy,) = rule["CopyActions"]
    assert copy["DestinationBackupVaultArn"] == {"Ref": "BackupCopyVaultArn"}
    assert copy["Lifecycle"]["DeleteAfterDays"] == rule["Lifecycle"]["DeleteAfterDays"]
    (selected,) = props("BackupSelection")["BackupSelection"]["Resources"]
    assert selected["Fn::Sub"].endswith(":db:${PrimaryDb}")
    assert resource("BackupVault")["DeletionPolicy"] == "Retain"


def test_the_stack_policy_refuses_to_replace_or_delete_the_data() -> None:
    policy = json.loads((REPO_ROOT / "infra/deploy/stack-policy.json").read_text())
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert set(deny["Action"]) == {"Update:Replace", "Update:Delete"}
    protected = {r.removeprefix("LogicalResourceId/") for r in deny["Resource"]}
    assert {"PrimaryDb", "ImagesBucket", "ImagesAccessLogsBucket", "BackupVault"} == protected
    assert protected <= set(resources())
    # And `make deploy` sets it after every deploy.
    makefile = (REPO_ROOT / "Makefile").read_text()
    deploy = makefile[makefile.index("\ndeploy:") :].split("\n\n")[0]
    assert "sam deploy --config-env $(STAGE)" in deploy
    assert "infra/deploy/stack_policy.py $(STAGE)" in deploy
    # What the policy stands in for: the primary keeps a snapshot if it ever goes anyway.
    assert resource("PrimaryDb")["DeletionPolicy"] == "Snapshot"
    assert resource("PrimaryDb")["UpdateReplacePolicy"] == "Snapshot"


def test_every_secret_is_under_the_stages_key_and_only_readers_may_decrypt_it() -> None:
    secrets = resources("AWS::SecretsManager::Secret")
    assert len(secrets) == 5
    for name, secret in secrets.items():
        assert secret["Properties"]["KmsKeyId"] == {"Ref": "SecretsKey"}, name
    key = props("SecretsKey")
    assert key["EnableKeyRotation"] is True
    (statement,) = key["KeyPolicy"]["Statement"]
    # The account (IAM) decides; no other principal, no service, no wildcard.
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }
    key_arn = {"Fn::GetAtt": ["SecretsKey", "Arn"]}
    via_secrets_manager = {
        "StringEquals": {
            "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
        }
    }
    boundary = props("FunctionPermissionsBoundary")["PolicyDocument"]["Statement"]
    (decrypt,) = [s for s in boundary if s.get("Action") == "kms:Decrypt"]
    assert decrypt["Resource"] == key_arn and decrypt["Condition"] == via_secrets_manager
    for function in function_ids():
        policies = props(function)["Policies"]
        assert {"KMSDecryptPolicy": {"KeyId": {"Ref": "SecretsKey"}}} in policies, function
    proxy_reads = props("DbProxyRole")["Policies"][0]["PolicyDocument"]["Statement"]
    assert any(s["Action"] == "kms:Decrypt" and s["Resource"] == key_arn for s in proxy_reads)
    rotation = props("DbAppSecretRotation")["HostedRotationLambda"]
    assert rotation["KmsKeyArn"] == key_arn


# ---------------------------------------------------------------------------------------
# What CloudFormation gets: the template as SAM translates it (infra/checks/sam_translate.py)


def deployed() -> dict[str, Any]:
    """The translated resources, by the SAM CLI's own translator (as `make lint` runs it)."""
    done = subprocess.run(
        [
            str(REPO_ROOT / ".local/venvs/sam/bin/python"),
            str(REPO_ROOT / "infra/checks/sam_translate.py"),
            str(REPO_ROOT / "template.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    resources_: dict[str, Any] = json.loads(done.stdout)["template"]["Resources"]
    return resources_


def test_routes_queue_and_schedules_invoke_the_alias_and_apis_wait_for_the_migration() -> None:
    translated = deployed()
    aliases = {k for k, v in translated.items() if v["Type"] == "AWS::Lambda::Alias"}
    assert len(aliases) == len(function_ids())
    paths = translated["HttpApi"]["Properties"]["Body"]["paths"]
    integrations = [
        json.dumps(operation["x-amazon-apigateway-integration"]["uri"])
        for path in paths.values()
        for method, operation in path.items()
        if "x-amazon-apigateway-integration" in operation
    ]
    assert integrations
    assert all(re.search(r"\$\{(CommandApi|QueryApi)FunctionAliaslive\}", u) for u in integrations)
    for resource_ in translated.values():
        if resource_["Type"] == "AWS::Lambda::EventSourceMapping":
            assert resource_["Properties"]["FunctionName"]["Ref"] in aliases
        if resource_["Type"] == "AWS::Scheduler::Schedule":
            assert resource_["Properties"]["Target"]["Arn"]["Ref"] in aliases
    groups = [k for k, v in translated.items() if v["Type"] == "AWS::CodeDeploy::DeploymentGroup"]
    assert sorted(groups) == [
        "CommandApiFunctionDeploymentGroup",
        "QueryApiFunctionDeploymentGroup",
    ]
    for function in API_FUNCTIONS:
        assert translated[function]["DependsOn"] == "SchemaMigration"
        group = translated[f"{function}DeploymentGroup"]["Properties"]
        assert group["AutoRollbackConfiguration"]["Enabled"] is True
        assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
