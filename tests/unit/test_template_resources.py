"""template.yaml's resources as the design needs them: the events queue and its DLQ wired to
the projector, least-privilege IAM capped by one boundary, Multi-AZ databases and cache with
encryption, a private images bucket, parameters that are all used."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.unit.cfn_template import (
    ACTIONS_WITHOUT_RESOURCE_LEVEL,
    Grant,
    all_allow_grants,
    boundary_grants,
    events,
    function_env,
    function_grants,
    function_ids,
    function_props,
    props,
    refs,
    resources,
    template,
)

from giftmarket_local.template import TEMPLATE_PATH


def projector_source() -> dict[str, Any]:
    (source,) = events("ProjectorFunction", "SQS").values()
    return source


def test_the_projector_consumes_the_events_queue_with_partial_batch_responses() -> None:
    source = projector_source()
    assert source["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= source["BatchSize"] <= 10  # a FIFO event source's maximum
    assert source["ScalingConfig"]["MaximumConcurrency"] >= 2


def test_visibility_timeout_is_at_least_six_times_the_projector_timeout() -> None:
    timeout = function_props("ProjectorFunction")["Timeout"]
    assert props("EventsQueue")["VisibilityTimeout"] >= 6 * timeout


def test_the_events_queue_is_a_high_throughput_fifo_queue_deduplicated_by_outbox_id() -> None:
    queue = props("EventsQueue")
    assert queue["FifoQueue"] is True
    assert queue["QueueName"]["Fn::Sub"].endswith(".fifo")
    # The publishers send MessageDeduplicationId = outbox id; content would dedupe too much.
    assert queue["ContentBasedDeduplication"] is False
    assert (queue["DeduplicationScope"], queue["FifoThroughputLimit"]) == (
        "messageGroup",
        "perMessageGroupId",
    )


def test_poison_events_end_in_a_fifo_dead_letter_queue_after_bounded_retries() -> None:
    redrive = props("EventsQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}
    assert 2 <= redrive["maxReceiveCount"] <= 10
    dlq = props("EventsDeadLetterQueue")
    assert dlq["FifoQueue"] is True
    assert dlq["MessageRetentionPeriod"] >= props("EventsQueue")["MessageRetentionPeriod"]
    source_queue = props("EventsQueue")["QueueName"]["Fn::Sub"]
    (allowed,) = dlq["RedriveAllowPolicy"]["sourceQueueArns"]
    assert allowed["Fn::Sub"].endswith(":" + source_queue)


def test_publishers_send_to_the_queue_the_projector_reads() -> None:
    for function in function_ids():
        assert function_env(function)["EVENTS_QUEUE_URL"] == {"Ref": "EventsQueue"}


def is_wildcard(action: str) -> bool:
    return action == "*" or action.endswith(":*")


def test_no_allow_grants_every_action() -> None:
    for grant in all_allow_grants():
        assert not any(is_wildcard(a) for a in grant.actions), grant


def test_no_allow_grants_every_resource_where_iam_has_a_narrower_one() -> None:
    for grant in all_allow_grants():
        if "*" in grant.resources:
            assert set(grant.actions) <= ACTIONS_WITHOUT_RESOURCE_LEVEL, grant


def test_functions_name_no_managed_policy_and_all_share_the_boundary() -> None:
    for function in function_ids():
        assert "Role" not in props(function)
        assert all(isinstance(p, dict) for p in props(function).get("Policies", []))
    boundary = template()["Globals"]["Function"]["PermissionsBoundary"]
    assert boundary == {"Ref": "FunctionPermissionsBoundary"}


def covered(need: Grant, boundary: list[Grant]) -> bool:
    for action in need.actions:
        for resource_ in need.resources:
            if not any(action in b.actions and resource_ in b.resources for b in boundary):
                return False
    return True


@pytest.mark.parametrize("function", function_ids())
def test_the_boundary_lets_each_function_do_what_its_own_policies_grant(function: str) -> None:
    boundary = boundary_grants()
    for need in function_grants(function):
        assert covered(need, boundary), need


def test_the_boundary_lets_functions_write_only_their_own_log_groups() -> None:
    log_groups = {props(f)["LoggingConfig"]["LogGroup"]["Ref"]: f for f in function_ids()}
    assert set(log_groups) <= set(resources("AWS::Logs::LogGroup"))
    (logs,) = [b for b in boundary_grants() if "logs:PutLogEvents" in b.actions]
    (pattern,) = logs.resources
    prefix = pattern["Fn::Sub"].split(":log-group:", 1)[1].removesuffix("*:*")
    for group in log_groups:
        assert props(group)["LogGroupName"]["Fn::Sub"].startswith(prefix)
    assert not props("ApiAccessLogs")["LogGroupName"]["Fn::Sub"].startswith(prefix)


def test_the_database_is_a_multi_az_encrypted_mysql_8_4_lts_with_a_read_replica() -> None:
    primary = props("PrimaryDb")
    assert primary["Engine"] == "mysql"
    assert primary["EngineVersion"] == {"Ref": "DbEngineVersion"}
    version = template()["Parameters"]["DbEngineVersion"]
    # 8.0 is past RDS standard support (paid Extended Support): only 8.4 LTS is allowed.
    pattern = re.compile(version["AllowedPattern"])
    assert pattern.fullmatch(version["Default"]) and version["Default"].startswith("8.4")
    assert pattern.fullmatch("8.4.7") and not pattern.fullmatch("8.0.46")
    assert props("DbParameters")["Family"] == "mysql8.4"
    # 8.4 has no default_authentication_plugin; users get caching_sha2_password, over TLS.
    assert "mysql_native_password" not in TEMPLATE_PATH.read_text()
    assert primary["MultiAZ"] is True
    assert primary["StorageEncrypted"] is True
    assert primary["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in primary
    assert primary["BackupRetentionPeriod"] == {"Ref": "DbBackupRetentionDays"}
    assert template()["Parameters"]["DbBackupRetentionDays"]["MinValue"] >= 1
    assert primary["DeletionProtection"] == {"Ref": "DbDeletionProtection"}
    assert primary["PubliclyAccessible"] is False
    assert props("ReplicaDb")["SourceDBInstanceIdentifier"] == {"Ref": "PrimaryDb"}


def test_the_databases_have_gtids_for_read_your_writes_and_row_binlogs_for_read_committed() -> None:
    parameters = props("DbParameters")["Parameters"]
    assert parameters["gtid-mode"] == "ON"
    assert parameters["enforce_gtid_consistency"] == "ON"
    assert parameters["binlog_format"] == "ROW"
    for db in ("PrimaryDb", "ReplicaDb"):
        assert props(db)["DBParameterGroupName"] == {"Ref": "DbParameters"}


def test_the_application_user_secret_has_the_shape_the_code_reads() -> None:
    generated = props("DbAppSecret")["GenerateSecretString"]
    # username and password for the code; the rest for the rotation (test_rotation.py).
    shape, _ = generated["SecretStringTemplate"]["Fn::Sub"]
    assert json.loads(shape)["username"] == "giftmarket_app"
    assert set(json.loads(shape)) == {"username", "dbname", "masterarn", "ssl"}
    assert generated["GenerateStringKey"] == "password"


def test_rds_proxy_is_optional_and_fronts_the_writer_with_the_application_user() -> None:
    proxy = resources()["DbProxy"]
    assert proxy["Condition"] == "UseRdsProxy"
    (auth,) = proxy["Properties"]["Auth"]
    assert auth["SecretArn"] == {"Ref": "DbAppSecret"}
    targets = props("DbProxyTargets")
    assert targets["DBInstanceIdentifiers"] == [{"Ref": "PrimaryDb"}]
    assert (
        "EXCLUDE_VARIABLE_SETS"
        in targets["ConnectionPoolConfigurationInfo"]["SessionPinningFilters"]
    )
    host = template()["Globals"]["Function"]["Environment"]["Variables"]["DB_PRIMARY_HOST"]
    assert host["Fn::If"][0] == "UseRdsProxy"
    assert host["Fn::If"][1] == {"Fn::GetAtt": ["DbProxy", "Endpoint"]}


def test_redis_is_a_replicated_multi_az_group_with_encryption_and_auth() -> None:
    cache = props("Cache")
    assert cache["NumCacheClusters"] == 2  # cluster mode disabled: one shard, one replica
    assert "NumNodeGroups" not in cache
    assert cache["AutomaticFailoverEnabled"] is True and cache["MultiAZEnabled"] is True
    assert cache["AtRestEncryptionEnabled"] is True and cache["TransitEncryptionEnabled"] is True
    assert "CacheAuthSecret" in cache["AuthToken"]["Fn::Sub"]
    assert props("CacheParameters")["Properties"]["maxmemory-policy"] == "noeviction"
    env = template()["Globals"]["Function"]["Environment"]["Variables"]
    assert env["REDIS_URL"]["Fn::Sub"].startswith("rediss://${Cache.PrimaryEndPoint.Address}")
    assert env["REDIS_AUTH_SECRET_ARN"] == {"Ref": "CacheAuthSecret"}


def test_functions_databases_and_cache_live_in_the_private_subnets_of_two_azs() -> None:
    private = [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
    assert template()["Globals"]["Function"]["VpcConfig"]["SubnetIds"] == private
    assert props("DbSubnetGroup")["SubnetIds"] == private
    assert props("CacheSubnetGroup")["SubnetIds"] == private
    zones = {json.dumps(props(s)["AvailabilityZone"]) for s in ("PrivateSubnetA", "PrivateSubnetB")}
    assert len(zones) == 2


def ingress_ports(group: str) -> dict[int, set[str]]:
    rules = list(props(group).get("SecurityGroupIngress", []))
    rules += [
        r["Properties"]
        for r in resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Ref": group}
    ]
    found: dict[int, set[str]] = {}
    for rule in rules:
        assert rule["FromPort"] == rule["ToPort"]
        assert "CidrIp" not in rule, rule  # only from security groups, never an address range
        found.setdefault(rule["FromPort"], set()).update(refs(rule["SourceSecurityGroupId"]))
    return found


def test_mysql_and_redis_accept_only_the_functions_on_their_own_ports() -> None:
    assert ingress_ports("DatabaseSecurityGroup") == {
        3306: {"LambdaSecurityGroup", "DatabaseSecurityGroup"}  # the second: RDS Proxy
    }
    assert ingress_ports("CacheSecurityGroup") == {6379: {"LambdaSecurityGroup"}}
    egress = {
        (r["Properties"]["FromPort"], r["Properties"]["DestinationSecurityGroupId"]["Ref"])
        for r in resources("AWS::EC2::SecurityGroupEgress").values()
    }
    assert egress == {(3306, "DatabaseSecurityGroup"), (6379, "CacheSecurityGroup")}


def test_functions_reach_sqs_secrets_and_s3_without_internet_by_default() -> None:
    assert template()["Parameters"]["NetworkAccess"]["Default"] == "VpcEndpoints"
    services = {
        props(e)["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]: resources()[e].get("Condition")
        for e in resources("AWS::EC2::VPCEndpoint")
    }
    endpoint = "UseVpcEndpoints"
    # RDS: the DB secret's rotation function looks the primary's host up (DescribeDBInstances).
    assert services == {"s3": None, "sqs": endpoint, "secretsmanager": endpoint, "rds": endpoint}
    nat = resources("AWS::EC2::NatGateway")
    assert len(nat) == 2 and {r["Condition"] for r in nat.values()} == {"UseNatGateway"}


def test_the_images_bucket_is_private_encrypted_and_open_to_presigned_uploads_only() -> None:
    bucket = props("ImagesBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    (cors,) = bucket["CorsConfiguration"]["CorsRules"]
    assert "PUT" in cors["AllowedMethods"] and "content-type" in cors["AllowedHeaders"]
    assert any(
        "AbortIncompleteMultipartUpload" in r for r in bucket["LifecycleConfiguration"]["Rules"]
    )
    replication = bucket["ReplicationConfiguration"]["Fn::If"]
    assert replication[0] == "ReplicateImages" and replication[2] == {"Ref": "AWS::NoValue"}
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"  # replication needs it


def test_the_bucket_refuses_plain_http() -> None:
    (statement,) = props("ImagesBucketPolicy")["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_functions_run_python_3_12_on_arm64_with_the_core_layer_and_tracing() -> None:
    layer = props("CoreLayer")
    metadata = resources()["CoreLayer"]["Metadata"]
    # The makefile build is SAM's python3.12 build plus the RDS CA bundle (layers/core/Makefile).
    assert (metadata["BuildMethod"], metadata["BuildArchitecture"]) == ("makefile", "arm64")
    for function in function_ids():
        p = function_props(function)
        assert (p["Runtime"], p["Architectures"]) == ("python3.12", ["arm64"])
        assert p["Layers"] == [{"Ref": "CoreLayer"}]
        assert p["Tracing"] == "Active"
        assert p["Runtime"] in layer["CompatibleRuntimes"]


@pytest.mark.parametrize("function", ["CommandApiFunction", "QueryApiFunction"])
def test_api_functions_have_reserved_concurrency_to_protect_the_database(function: str) -> None:
    reserved = props(function)["ReservedConcurrentExecutions"]["Fn::If"]
    assert reserved[:2] == ["ReserveConcurrency", {"Ref": "ApiReservedConcurrency"}]
    # HTTP API gives up after 30 s; a function must answer (503 at worst) before that.
    assert function_props(function)["Timeout"] < 30


def test_every_parameter_is_used() -> None:
    body = {k: v for k, v in template().items() if k != "Parameters"}
    used = refs(body)
    conditions = json.dumps(template()["Conditions"])
    for name in template()["Parameters"]:
        assert name in used or f'"Ref": "{name}"' in conditions, name


def test_the_http_api_has_throttling_cors_and_access_logs() -> None:
    api = props("HttpApi")
    assert api["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert "x-consistency-token" in api["CorsConfiguration"]["ExposeHeaders"]
    assert "idempotency-key" in api["CorsConfiguration"]["AllowHeaders"]
    assert api["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}
    json.loads(api["AccessLogSettings"]["Format"])
