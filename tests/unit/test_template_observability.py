"""The alarms and the dashboard of template.yaml watch metrics that exist: AWS metrics of
resources in the template, and giftmarket metrics that the functions' code really emits, under
the service name the function really runs with."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.unit.cfn_template import function_env, function_ids, handler_file, props, resources

MetricKey = tuple[str, str, tuple[tuple[str, str], ...]]


def dimension_value(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def alarm_metrics(alarm: dict[str, Any]) -> list[MetricKey]:
    stats = [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
    if "MetricName" in alarm:
        stats.append(alarm)
    return [
        (
            m["Namespace"],
            m["MetricName"],
            tuple((d["Name"], dimension_value(d["Value"])) for d in m.get("Dimensions", [])),
        )
        for m in stats
    ]


def alarms() -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in resources("AWS::CloudWatch::Alarm").items()}


def watched() -> set[MetricKey]:
    return {key for alarm in alarms().values() for key in alarm_metrics(alarm)}


def getatt(logical_id: str, attribute: str) -> str:
    return dimension_value({"Fn::GetAtt": [logical_id, attribute]})


def ref(logical_id: str) -> str:
    return dimension_value({"Ref": logical_id})


@pytest.mark.parametrize(
    ("what", "key"),
    [
        (
            "events DLQ depth",
            (
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                (("QueueName", getatt("EventsDeadLetterQueue", "QueueName")),),
            ),
        ),
        (
            "projector errors",
            ("AWS/Lambda", "Errors", (("FunctionName", ref("ProjectorFunction")),)),
        ),
        (
            "oldest event",
            (
                "AWS/SQS",
                "ApproximateAgeOfOldestMessage",
                (("QueueName", getatt("EventsQueue", "QueueName")),),
            ),
        ),
        ("replica lag", ("AWS/RDS", "ReplicaLag", (("DBInstanceIdentifier", ref("ReplicaDb")),))),
        (
            "API 5xx",
            ("AWS/ApiGateway", "5xx", (("ApiId", ref("HttpApi")), ("Stage", "$default"))),
        ),
        (
            "settlement failures",
            ("AWS/Lambda", "Errors", (("FunctionName", ref("SettlementFunction")),)),
        ),
        (
            "projection lag",
            ("giftmarket", "ProjectionLag", (("service", "giftmarket-projector"),)),
        ),
    ],
)
def test_an_alarm_watches(what: str, key: MetricKey) -> None:
    assert key in watched(), what


def release_guards() -> set[str]:
    """The alarms CodeDeploy watches while a release of an API function shifts traffic."""
    return {
        alarm["Ref"]
        for function in function_ids()
        for alarm in props(function).get("DeploymentPreference", {}).get("Alarms", [])
    }


def test_every_alarm_but_the_release_guards_notifies_the_alarm_topic_both_ways() -> None:
    guards = release_guards()
    assert guards  # the two API functions release gradually
    for name, alarm in alarms().items():
        assert alarm["AlarmDescription"], name
        if name in guards:
            # A guard's job is the rollback; the on-call alarms page for the same causes.
            assert "AlarmActions" not in alarm and "OKActions" not in alarm, name
            continue
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["OKActions"] == [{"Ref": "AlarmTopic"}], name


def test_the_projection_lag_alarm_asks_for_the_unit_the_projector_emits() -> None:
    lag = props("ProjectionLagAlarm")
    assert lag["Unit"] == "Milliseconds"
    assert "MetricUnit.Milliseconds" in handler_file("ProjectorFunction").read_text()


def services() -> dict[str, str]:
    return {function_env(f)["POWERTOOLS_SERVICE_NAME"]: f for f in function_ids()}


def dashboard() -> dict[str, Any]:
    body = props("Dashboard")["DashboardBody"]["Fn::Sub"]
    # ${Resource} and ${Resource.Attr} become their names, which are valid JSON strings.
    data: dict[str, Any] = json.loads(re.sub(r"\$\{([^}]+)\}", r"<\1>", body))
    return data


def dashboard_metrics() -> list[list[Any]]:
    """Every metric line of the dashboard with CloudWatch's "." and "..." shorthands expanded."""
    lines: list[list[Any]] = []
    for widget in dashboard()["widgets"]:
        previous: list[Any] = []
        for line in widget.get("properties", {}).get("metrics", []):
            values = [v for v in line if not isinstance(v, dict)]
            if values and values[0] == "...":
                tail = values[1:]
                values = previous[: len(previous) - len(tail)] + tail
            values = [previous[i] if v == "." else v for i, v in enumerate(values)]
            lines.append(values)
            previous = values
    return lines


def test_giftmarket_metrics_on_alarms_and_dashboard_are_emitted_by_that_service() -> None:
    shown = {(line[1], line[3]) for line in dashboard_metrics() if line[0] == "giftmarket"} | {
        (m, dict(dims)["service"]) for ns, m, dims in watched() if ns == "giftmarket"
    }
    assert ("ProjectionLag", "giftmarket-projector") in shown
    for metric, service in shown:
        code = handler_file(services()[service]).read_text()
        assert f'"{metric}"' in code, f"{service} does not emit {metric}"


def test_dashboard_metrics_name_resources_of_the_template() -> None:
    names = set(resources())
    for line in dashboard_metrics():
        assert line[0] in {"giftmarket"} or line[0].startswith("AWS/"), line
        for value in line[3::2]:
            for placeholder in re.findall(r"<([^>]+)>", str(value)):
                assert placeholder.split(".", 1)[0] in names | {"AWS::Region"}, line


def test_the_dashboard_shows_every_alarm_and_the_system_at_a_glance() -> None:
    (alarm_widget,) = [w for w in dashboard()["widgets"] if w["type"] == "alarm"]
    assert {
        a.removesuffix(".Arn>").lstrip("<") for a in alarm_widget["properties"]["alarms"]
    } == set(alarms())
    namespaces = {line[0] for line in dashboard_metrics()}
    assert namespaces == {
        "AWS/ApiGateway",
        "AWS/Lambda",
        "AWS/SQS",
        "AWS/RDS",
        "AWS/ElastiCache",
        "giftmarket",
    }
    metrics = {line[1] for line in dashboard_metrics()}
    assert {"Latency", "5xx", "ProjectionLag", "ApproximateNumberOfMessagesVisible"} <= metrics
    assert {"ReplicaLag", "DatabaseConnections", "DatabaseMemoryUsagePercentage"} <= metrics
