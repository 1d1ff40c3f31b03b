"""The connection budget, computed from template.yaml: the most connections the functions,
the secret rotation and replication can hold at once on the primary and on the replica, kept
under 80 % of max_connections on every DbInstanceClass the template allows.

How many connections a Lambda execution environment can hold, per engine, is its pool:
DB_POOL_SIZE + DB_MAX_OVERFLOW (the function's environment, else Globals, else Settings'
default). Which engines it can open is read from the code, below (ENGINES). How many
environments a function can have is its reserved concurrency (ApiReservedConcurrency at its
MaxValue), or its SQS event source's MaximumConcurrency; every function publishes a version
behind the `live` alias, and during a release the environments of the outgoing version keep
their pools while those of the new one open theirs (the APIs' canary runs both for minutes),
so each counts twice. With UseRdsProxy the proxied functions' primary connections become the
proxy's, at most MaxConnectionsPercent of max_connections, plus the direct ones.

RDS MySQL's default max_connections is {DBInstanceClassMemory/12582880}
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/CHAP_Limits.html#RDS_Limits.MaxConnections).
DBInstanceClassMemory is the class's memory less what RDS keeps for the operating system and
its own processes; AWS publishes no figure per class, so MEMORY_GIB x USABLE_MEMORY stands for
it: 90 %, below the 91-97 % that reported defaults imply (312 connections on 4 GiB classes,
648 on 8 GiB, "around 1,300" on 16 GiB in the page above).

The table for the notes: `.venv/bin/python -m tests.unit.test_connection_budget`, or pytest -s.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tests.unit.cfn_template import template

from giftmarket.adapters.publisher import RELAY_IN_FLIGHT
from giftmarket.settings import Settings

PRIMARY = "primary"
REPLICA = "replica"

# Database.from_settings builds (lazily: an engine connects when first used) up to three
# engines per environment, each with a pool of its own.
ENGINE_SERVER = {"writer": PRIMARY, "primary_reader": PRIMARY, "reader": REPLICA}

# The engines each function's code can open. A function the template gains must be added.
ENGINES: dict[str, frozenset[str]] = {
    # Commands' unit of work, the fast-path publish after commit, the SQL sign-in guard.
    "CommandApiFunction": frozenset({"writer"}),
    # Queries on the replica (and its lag probe); the read-only primary for fallbacks and
    # consistency tokens and GET /api/health's ping of the primary. Never the writer.
    "QueryApiFunction": frozenset({"primary_reader", "reader"}),
    # Welcome coupons are commands.
    "ProjectorFunction": frozenset({"writer"}),
    # The relay claims on the writer; a rebuild beside its loop reads the primary's GTID
    # position on the read-only primary, then reads the replica, or the read-only primary
    # when it lags.
    "OutboxRelayFunction": frozenset({"writer", "primary_reader", "reader"}),
    "SettlementFunction": frozenset({"writer"}),
    "ImageJanitorFunction": frozenset({"writer"}),
    "PurgeFunction": frozenset({"writer"}),
    # Expiry batches are commands.
    "ExpireAsksFunction": frozenset({"writer"}),
    # Master-user engines for the user and Alembic (each disposed before the next), or the
    # admin-rights commands: one engine at a time, always on the instance.
    "MigrationFunction": frozenset({"writer"}),
}

# Connections an environment uses at once on one engine: it runs one invocation at a time,
# which never holds two connections of an engine (with a pool of one the second would wait
# out DB_POOL_TIMEOUT_SECONDS), except the settlement's SETTLEMENT_WORKERS threads.
THREADED = {"SettlementFunction": "settlement_workers"}

# The outbox relay: one environment at a time polls, holding the relay lock (MariaDB GET_LOCK)
# on one writer connection and claiming batches on RELAY_IN_FLIGHT more; the others (the next
# tick's run, the other version's during a release) wait for the lock on one. Each may also
# hold a rebuild's read-only primary and replica connections.
LOCKED_LOOP = "OutboxRelayFunction"
LOOP_WRITER = 1 + RELAY_IN_FLIGHT

# The MySQLMultiUser rotation function logs in as the master user to set the other user's
# password and, testing the new version, as that user; Secrets Manager runs one rotation of
# the secret at a time. Counted as two connections, should one step's linger into the next.
ROTATION_CONNECTIONS = 2
# A read replica's I/O thread holds one connection to its source.
REPLICATION_CONNECTIONS = 1
# An execution environment of the outgoing version and one of the new during a release.
VERSIONS_DURING_RELEASE = 2

# Nominal memory of each class (GiB), from the RDS hardware specifications.
MEMORY_GIB = {
    "db.t4g.medium": 4,
    "db.t4g.large": 8,
    "db.m7g.large": 8,
    "db.m7g.xlarge": 16,
    "db.m7g.2xlarge": 32,
    "db.r7g.large": 16,
    "db.r7g.xlarge": 32,
    "db.r7g.2xlarge": 64,
}
USABLE_MEMORY = 0.90
MAX_CONNECTIONS_DIVISOR = 12_582_880
HEADROOM = 0.80

Template = dict[str, Any]


def max_connections(instance_class: str, memory_gib: dict[str, int] = MEMORY_GIB) -> int:
    memory = memory_gib[instance_class] * 1024**3 * USABLE_MEMORY
    return math.floor(memory / MAX_CONNECTIONS_DIVISOR)


@dataclass(frozen=True)
class Consumer:
    """Something that holds connections: `environments` of it at worst, each with this many
    connections on each server."""

    name: str
    environments: int
    primary: int
    replica: int
    # Its primary connections go to RDS Proxy when UseRdsProxy is on.
    proxied: bool

    @property
    def on_primary(self) -> int:
        return self.environments * self.primary

    @property
    def on_replica(self) -> int:
        return self.environments * self.replica


def functions(doc: Template) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in doc["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def merged(doc: Template, function: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The function's properties and environment with the template's Globals under them."""
    globals_ = doc.get("Globals", {}).get("Function", {})
    own = doc["Resources"][function].get("Properties", {})
    env = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **own.get("Environment", {}).get("Variables", {}),
    }
    return {**globals_, **own}, env


def setting(env: dict[str, Any], name: str) -> int:
    value = env.get(name.upper(), Settings.model_fields[name].default)
    assert isinstance(value, int | str), f"{name.upper()} must be a plain value, not {value!r}"
    return int(value)


def number(doc: Template, value: Any) -> int:
    """A count as written, a parameter at its largest allowed value."""
    if isinstance(value, dict):
        ((kind, name),) = value.items()
        assert kind == "Ref", value
        parameter = doc["Parameters"][name]
        assert "MaxValue" in parameter, f"{name} has no MaxValue: nothing bounds it"
        return int(parameter["MaxValue"])
    return int(value)


def reserve_condition_is_on_at_max(doc: Template) -> bool:
    """ReserveConcurrency holds when ApiReservedConcurrency is not 0, so at its MaxValue."""
    condition: object = doc["Conditions"]["ReserveConcurrency"]
    return condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiReservedConcurrency"}, 0]}]}


def environments(doc: Template, function: str) -> int:
    """The most execution environments of one version: reserved concurrency, or the SQS
    event source's MaximumConcurrency."""
    props, _ = merged(doc, function)
    bounds = []
    reserved = props.get("ReservedConcurrentExecutions")
    if reserved is not None:
        if isinstance(reserved, dict) and "Fn::If" in reserved:
            condition, when_reserved, _ = reserved["Fn::If"]
            assert condition == "ReserveConcurrency", reserved
            reserved = when_reserved
        bounds.append(number(doc, reserved))
    for event in (props.get("Events") or {}).values():
        if event["Type"] == "SQS":
            scaling = event["Properties"].get("ScalingConfig", {})
            assert "MaximumConcurrency" in scaling, f"{function}: its queue scales it unbounded"
            bounds.append(int(scaling["MaximumConcurrency"]))
    assert bounds, f"{function}: no reserved concurrency, nothing bounds its environments"
    return min(bounds)


def proxied(doc: Template, env: dict[str, Any]) -> bool:
    host = env["DB_PRIMARY_HOST"]
    via_proxy = {"Fn::GetAtt": ["DbProxy", "Endpoint"]}
    return isinstance(host, dict) and host.get("Fn::If", [None, None])[:2] == [
        "UseRdsProxy",
        via_proxy,
    ]


def function_consumer(doc: Template, function: str) -> Consumer:
    props, env = merged(doc, function)
    assert function in ENGINES, f"{function}: say which engines its code opens (ENGINES)"
    pool = setting(env, "db_pool_size") + setting(env, "db_max_overflow")
    at_once = setting(env, THREADED[function]) if function in THREADED else 1
    assert pool >= at_once, f"{function}: {at_once} connections at once, a pool of {pool}"
    servers = [ENGINE_SERVER[engine] for engine in ENGINES[function]]
    versions = VERSIONS_DURING_RELEASE if props.get("AutoPublishAlias") else 1
    return Consumer(
        name=function,
        environments=environments(doc, function) * versions,
        primary=pool * servers.count(PRIMARY),
        replica=pool * servers.count(REPLICA),
        proxied=proxied(doc, env),
    )


def relay_consumers(doc: Template) -> list[Consumer]:
    """The relay as its lock makes it: one environment looping, the others waiting."""
    whole = function_consumer(doc, LOCKED_LOOP)
    _, env = merged(doc, LOCKED_LOOP)
    pool = setting(env, "db_pool_size") + setting(env, "db_max_overflow")
    assert pool >= LOOP_WRITER, f"{LOCKED_LOOP}: its loop holds {LOOP_WRITER}, a pool of {pool}"
    others = [ENGINE_SERVER[e] for e in ENGINES[LOCKED_LOOP] if e != "writer"]
    readers, replicas = others.count(PRIMARY), others.count(REPLICA)
    return [
        Consumer(f"{LOCKED_LOOP} looping", 1, LOOP_WRITER + readers, replicas, whole.proxied),
        Consumer(
            f"{LOCKED_LOOP} waiting", whole.environments - 1, 1 + readers, replicas, whole.proxied
        ),
    ]


def other_consumers(doc: Template) -> list[Consumer]:
    """The secret rotation (as master, on the instance the secret is attached to) and the
    replicas' replication connections."""
    resources = doc["Resources"]
    found = []
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        hosted = props.get("HostedRotationLambda", {})
        if resource["Type"] == "AWS::SecretsManager::RotationSchedule" and str(
            hosted.get("RotationType", "")
        ).startswith("MySQL"):
            assert hosted["RotationType"] == "MySQLMultiUser", name
            (attachment,) = (
                r["Properties"]
                for r in resources.values()
                if r["Type"] == "AWS::SecretsManager::SecretTargetAttachment"
                and r["Properties"]["SecretId"] == props["SecretId"]
            )
            assert attachment["TargetId"] == {"Ref": "PrimaryDb"}, "rotation logs in elsewhere"
            found.append(Consumer(name, 1, ROTATION_CONNECTIONS, 0, proxied=False))
        if resource["Type"] == "AWS::RDS::DBInstance" and "SourceDBInstanceIdentifier" in props:
            assert props["SourceDBInstanceIdentifier"] == {"Ref": "PrimaryDb"}, name
            found.append(Consumer(name, 1, REPLICATION_CONNECTIONS, 0, proxied=False))
    return found


def consumers(doc: Template) -> list[Consumer]:
    assert reserve_condition_is_on_at_max(doc)
    found = [function_consumer(doc, f) for f in functions(doc) if f != LOCKED_LOOP]
    return found + relay_consumers(doc) + other_consumers(doc)


def proxy_percent(doc: Template) -> int:
    pool = doc["Resources"]["DbProxyTargets"]["Properties"]["ConnectionPoolConfigurationInfo"]
    return int(pool["MaxConnectionsPercent"])


@dataclass(frozen=True)
class Row:
    instance_class: str
    max_connections: int
    primary_direct: int
    primary_with_proxy: int
    replica: int

    @property
    def limit(self) -> float:
        return self.max_connections * HEADROOM

    @property
    def primary(self) -> int:
        return max(self.primary_direct, self.primary_with_proxy)

    @property
    def fits(self) -> bool:
        return self.primary < self.limit and self.replica < self.limit


def budget(doc: Template, memory_gib: dict[str, int] = MEMORY_GIB) -> list[Row]:
    found = consumers(doc)
    percent = proxy_percent(doc)
    rows = []
    for instance_class in doc["Parameters"]["DbInstanceClass"]["AllowedValues"]:
        assert instance_class in memory_gib, f"{instance_class}: add its memory to MEMORY_GIB"
        limit = max_connections(instance_class, memory_gib)
        # The proxy's share of the server, counted whole: what it may hold whatever the
        # functions' concurrency (it is the proxy's to multiplex them).
        proxy_pool = math.floor(limit * percent / 100)
        rows.append(
            Row(
                instance_class=instance_class,
                max_connections=limit,
                primary_direct=sum(c.on_primary for c in found),
                primary_with_proxy=proxy_pool + sum(c.on_primary for c in found if not c.proxied),
                replica=sum(c.on_replica for c in found),
            )
        )
    return rows


def report(doc: Template) -> str:
    lines = [
        "| consumer | environments (both versions) | primary each | replica each "
        "| primary | replica |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in consumers(doc):
        via = " (proxied)" if c.proxied else ""
        lines.append(
            f"| {c.name}{via} | {c.environments} | {c.primary} | {c.replica} "
            f"| {c.on_primary} | {c.on_replica} |"
        )
    lines += [
        "",
        f"max_connections = DBInstanceClassMemory/{MAX_CONNECTIONS_DIVISOR}, "
        f"DBInstanceClassMemory taken as {USABLE_MEMORY:.0%} of the nominal memory; "
        f"RDS Proxy MaxConnectionsPercent {proxy_percent(doc)}.",
        "",
        "| class | max_connections | 80 % | primary direct | primary with proxy "
        "| primary worst | replica worst | fits |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in budget(doc):
        lines.append(
            f"| {row.instance_class} | {row.max_connections} | {math.floor(row.limit)} "
            f"| {row.primary_direct} | {row.primary_with_proxy} | {row.primary} "
            f"| {row.replica} | {'yes' if row.fits else 'NO'} |"
        )
    return "\n".join(lines)


def changed(edit: Callable[[Template], None]) -> Template:
    doc = copy.deepcopy(template())
    edit(doc)
    return doc


# ---------------------------------------------------------------------------------------


def test_every_allowed_instance_class_holds_the_worst_case_under_80_percent() -> None:
    table = report(template())
    print("\n" + table)
    assert all(row.fits for row in budget(template())), table


def test_the_instance_class_is_one_of_a_list_and_its_description_states_the_rule() -> None:
    parameter = template()["Parameters"]["DbInstanceClass"]
    assert parameter["Default"] in parameter["AllowedValues"]
    assert "80 %" in parameter["Description"]
    assert "max_connections" in parameter["Description"]
    assert "test_connection_budget" in parameter["Description"]


def test_api_reserved_concurrency_is_bounded_and_its_default_within_the_bound() -> None:
    parameter = template()["Parameters"]["ApiReservedConcurrency"]
    assert 0 < parameter["Default"] <= parameter["MaxValue"]
    assert parameter["MinValue"] == 0


def test_every_function_is_modelled_and_every_engine_is_on_a_server() -> None:
    assert set(functions(template())) == set(ENGINES)
    assert set().union(*ENGINES.values()) <= set(ENGINE_SERVER)


@pytest.mark.parametrize(
    "function",
    [
        "SettlementFunction",
        "ImageJanitorFunction",
        "PurgeFunction",
        "ExpireAsksFunction",
        "MigrationFunction",
    ],
)
def test_jobs_and_the_migration_run_one_at_a_time(function: str) -> None:
    assert environments(template(), function) == 1


def test_the_relay_runs_two_at_a_time_one_looping_one_waiting_to_take_over() -> None:
    assert environments(template(), LOCKED_LOOP) == 2
    looping, waiting = relay_consumers(template())
    assert (looping.environments, waiting.environments) == (1, 3)  # both versions counted
    assert looping.primary == LOOP_WRITER + 1 and waiting.primary == 2


def test_an_api_environment_pools_one_connection_per_engine_without_overflow() -> None:
    for function in ("CommandApiFunction", "QueryApiFunction"):
        _, env = merged(template(), function)
        assert (setting(env, "db_pool_size"), setting(env, "db_max_overflow")) == (1, 0)


def test_settlement_has_a_connection_for_each_worker_and_no_more() -> None:
    _, env = merged(template(), "SettlementFunction")
    workers = setting(env, "settlement_workers")
    assert setting(env, "db_pool_size") + setting(env, "db_max_overflow") == workers


def test_the_migration_and_the_rotation_bypass_the_proxy_and_the_others_use_it() -> None:
    found = {c.name: c for c in consumers(template())}
    assert not found["MigrationFunction"].proxied
    assert not found["DbAppSecretRotation"].proxied
    functions_ = [c for c in found.values() if c.name.split()[0] in ENGINES]
    assert len(functions_) == len(ENGINES) + 1  # the relay is two: looping and waiting
    assert all(c.proxied for c in functions_ if c.name != "MigrationFunction")


def test_max_connections_follows_the_rds_formula() -> None:
    # 4 GiB x 90 % / 12582880 = 307.2; reported defaults on 4 GiB classes are about 312.
    assert max_connections("db.t4g.medium") == 307
    assert max_connections("db.r7g.2xlarge") == 4915


# The check can fail: each of these changes, alone, breaks the budget.


def _set_globals_env(name: str, value: str) -> Callable[[Template], None]:
    def edit(doc: Template) -> None:
        doc["Globals"]["Function"]["Environment"]["Variables"][name] = value

    return edit


def _raise_api_concurrency(doc: Template) -> None:
    doc["Parameters"]["ApiReservedConcurrency"]["MaxValue"] = 100


def _raise_proxy_share(doc: Template) -> None:
    pool = doc["Resources"]["DbProxyTargets"]["Properties"]["ConnectionPoolConfigurationInfo"]
    pool["MaxConnectionsPercent"] = 80


def _raise_projector_concurrency(doc: Template) -> None:
    projector = doc["Resources"]["ProjectorFunction"]["Properties"]
    projector["Events"]["OutboxEvents"]["Properties"]["ScalingConfig"]["MaximumConcurrency"] = 40
    projector["ReservedConcurrentExecutions"] = {
        "Fn::If": ["ReserveConcurrency", 40, {"Ref": "AWS::NoValue"}]
    }


@pytest.mark.parametrize(
    "edit",
    [
        _set_globals_env("DB_MAX_OVERFLOW", "4"),  # the Settings default, for local threads
        _set_globals_env("DB_POOL_SIZE", "2"),
        _raise_api_concurrency,
        _raise_proxy_share,
        _raise_projector_concurrency,
    ],
)
def test_raising_a_pool_or_a_concurrency_breaks_the_budget(
    edit: Callable[[Template], None],
) -> None:
    assert not all(row.fits for row in budget(changed(edit)))


def test_allowing_a_smaller_class_breaks_the_budget() -> None:
    def allow_a_small_class(doc: Template) -> None:
        doc["Parameters"]["DbInstanceClass"]["AllowedValues"].append("db.t4g.small")

    rows = budget(changed(allow_a_small_class), {**MEMORY_GIB, "db.t4g.small": 2})
    assert [row.instance_class for row in rows if not row.fits] == ["db.t4g.small"]


def test_a_class_without_its_memory_in_the_table_is_refused() -> None:
    def allow_an_unknown_class(doc: Template) -> None:
        doc["Parameters"]["DbInstanceClass"]["AllowedValues"].append("db.x9g.large")

    with pytest.raises(AssertionError, match="db.x9g.large: add its memory"):
        budget(changed(allow_an_unknown_class))


def test_a_function_without_a_bound_on_its_environments_is_refused() -> None:
    def unreserve_the_relay(doc: Template) -> None:
        del doc["Resources"]["OutboxRelayFunction"]["Properties"]["ReservedConcurrentExecutions"]

    with pytest.raises(AssertionError, match="nothing bounds"):
        budget(changed(unreserve_the_relay))


def test_a_settlement_pool_smaller_than_its_workers_is_refused() -> None:
    def more_workers(doc: Template) -> None:
        env = doc["Resources"]["SettlementFunction"]["Properties"]["Environment"]["Variables"]
        env["SETTLEMENT_WORKERS"] = "8"

    with pytest.raises(AssertionError, match="8 connections at once"):
        budget(changed(more_workers))


if __name__ == "__main__":
    print(report(template()))


def test_the_connections_alarms_go_off_at_80_percent_of_each_class() -> None:
    doc = template()
    thresholds = doc["Mappings"]["DbInstanceClasses"]
    classes = doc["Parameters"]["DbInstanceClass"]["AllowedValues"]
    assert set(thresholds) == set(classes)
    for instance_class in classes:
        assert thresholds[instance_class]["ConnectionsAlarm"] == int(
            0.8 * max_connections(instance_class)
        ), instance_class
    for alarm, instance in (
        ("PrimaryConnectionsAlarm", "PrimaryDb"),
        ("ReplicaConnectionsAlarm", "ReplicaDb"),
    ):
        props = doc["Resources"][alarm]["Properties"]
        assert props["MetricName"] == "DatabaseConnections"
        assert props["Dimensions"] == [{"Name": "DBInstanceIdentifier", "Value": {"Ref": instance}}]
        assert props["Threshold"] == {
            "Fn::FindInMap": ["DbInstanceClasses", {"Ref": "DbInstanceClass"}, "ConnectionsAlarm"]
        }
