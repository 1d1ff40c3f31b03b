"""template.yaml as data, for the tests that keep it honest: its functions with Globals merged
in, their environment, and every IAM statement it writes (SAM policy templates expanded)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from giftmarket_local.runner import give_thread_an_event_loop
from giftmarket_local.template import TEMPLATE_PATH, load_template

REPO_ROOT = TEMPLATE_PATH.parent


@cache
def template() -> dict[str, Any]:
    return load_template()


def resources(resource_type: str | None = None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = template()["Resources"]
    return {k: v for k, v in found.items() if resource_type in (None, v["Type"])}


def resource(logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = template()["Resources"][logical_id]
    return found


def props(logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = resource(logical_id).get("Properties", {})
    return found


def function_ids() -> list[str]:
    return list(resources("AWS::Serverless::Function"))


def function_props(logical_id: str) -> dict[str, Any]:
    """A function's properties with the template's Globals under them, as SAM merges them."""
    globals_: dict[str, Any] = template().get("Globals", {}).get("Function", {})
    return {**globals_, **props(logical_id)}


def function_env(logical_id: str) -> dict[str, Any]:
    globals_ = template().get("Globals", {}).get("Function", {})
    return {
        **globals_.get("Environment", {}).get("Variables", {}),
        **props(logical_id).get("Environment", {}).get("Variables", {}),
    }


def handler_file(logical_id: str) -> Path:
    p = function_props(logical_id)
    module, _, _ = str(p["Handler"]).rpartition(".")
    return REPO_ROOT / str(p["CodeUri"]) / (module.replace(".", "/") + ".py")


def import_handler_module(logical_id: str) -> ModuleType:
    """The function's module imported from its file, as Lambda imports it from CodeUri."""
    path = handler_file(logical_id)
    spec = importlib.util.spec_from_file_location(f"template_check_{logical_id}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    give_thread_an_event_loop()  # Mangum looks for the thread's loop when it is built
    spec.loader.exec_module(module)
    return module


def events(logical_id: str, event_type: str) -> dict[str, dict[str, Any]]:
    found = props(logical_id).get("Events") or {}
    return {k: v.get("Properties", {}) for k, v in found.items() if v["Type"] == event_type}


def refs(value: Any) -> set[str]:
    """Logical ids (and parameters) that an intrinsic-bearing value refers to."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return {str(value["Ref"])}
        if set(value) == {"Fn::GetAtt"}:
            return {str(value["Fn::GetAtt"][0])}
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return {part.split("}", 1)[0].split(".", 1)[0] for part in str(text).split("${")[1:]}
        return set().union(*(refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value)) if value else set()
    return set()


# Resource-independent actions: IAM takes no resource narrower than "*" for them.
ACTIONS_WITHOUT_RESOURCE_LEVEL = frozenset(
    {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:GetSamplingStatisticSummaries",
    }
)


@dataclass(frozen=True)
class Grant:
    """One Allow statement: where it is written, its actions and its resources."""

    owner: str
    actions: tuple[str, ...]
    resources: tuple[Any, ...]


def _listed(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _allows(owner: str, statements: list[dict[str, Any]]) -> list[Grant]:
    return [
        Grant(owner, tuple(_listed(s["Action"])), _listed(s["Resource"]))
        for s in statements
        if s.get("Effect") == "Allow"
    ]


def queue_arn_from_name(queue_name: Any) -> Any:
    """SQSSendMessagePolicy's QueueName (!GetAtt Q.QueueName) as the queue's ARN."""
    logical_id = queue_name["Fn::GetAtt"][0]
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def function_grants(logical_id: str) -> list[Grant]:
    """Everything the function's role is given by the template, SAM's templates expanded:
    its Policies, its event sources' permissions and its failure destinations."""
    grants: list[Grant] = []
    for policy in props(logical_id).get("Policies", []):
        assert isinstance(policy, dict), f"{logical_id}: managed policy by name {policy!r}"
        ((kind, value),) = policy.items()
        if kind == "Statement":
            grants += _allows(logical_id, value)
        elif kind == "AWSSecretsManagerGetSecretValuePolicy":
            grants.append(
                Grant(logical_id, ("secretsmanager:GetSecretValue",), (value["SecretArn"],))
            )
        elif kind == "KMSDecryptPolicy":
            # kms:Decrypt on arn:...:key/${KeyId}: with KeyId a !Ref to a key, that key's Arn.
            (key,) = refs(value["KeyId"])
            grants.append(Grant(logical_id, ("kms:Decrypt",), ({"Fn::GetAtt": [key, "Arn"]},)))
        elif kind == "SQSSendMessagePolicy":
            grants.append(
                Grant(logical_id, ("sqs:SendMessage",), (queue_arn_from_name(value["QueueName"]),))
            )
        else:
            raise AssertionError(f"{logical_id}: policy template {kind} is not modelled here")
    for source in events(logical_id, "SQS").values():
        polling = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
        grants.append(Grant(logical_id, polling, (source["Queue"],)))
    destination = (
        props(logical_id)
        .get("EventInvokeConfig", {})
        .get("DestinationConfig", {})
        .get("OnFailure", {})
    )
    if destination:
        assert destination["Type"] == "SQS"
        grants.append(Grant(logical_id, ("sqs:SendMessage",), (destination["Destination"],)))
    return grants


def boundary_grants() -> list[Grant]:
    boundary = function_props(function_ids()[0])["PermissionsBoundary"]
    (logical_id,) = refs(boundary)
    return _allows(logical_id, props(logical_id)["PolicyDocument"]["Statement"])


def all_allow_grants() -> list[Grant]:
    """Every Allow the template writes: functions, roles, managed policies."""
    grants = [g for f in function_ids() for g in function_grants(f)]
    for logical_id, res in resources("AWS::IAM::Role").items():
        for policy in res["Properties"].get("Policies", []):
            grants += _allows(logical_id, policy["PolicyDocument"]["Statement"])
    for logical_id, res in resources("AWS::IAM::ManagedPolicy").items():
        grants += _allows(logical_id, res["Properties"]["PolicyDocument"]["Statement"])
    return grants
