"""Reads template.yaml: the functions and the HTTP API routes that reach them.

The template is the single source of truth for routing; the local runner serves exactly
what API Gateway would route, to the function it would route it to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from giftmarket_local.stack import REPO_ROOT

TEMPLATE_PATH = REPO_ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub...) as Fn:: maps."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as fh:
        data: dict[str, Any] = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    return data


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str  # "module.attribute", e.g. "app.handler"
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, Any] = field(default_factory=dict)
    sqs_sources: int = 0  # how many SQS event source mappings feed it
    schedules: tuple[str, ...] = ()  # EventBridge Scheduler expressions, e.g. "rate(1 minute)"

    @property
    def module_file(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_uri / (module.replace(".", "/") + ".py")

    @property
    def attribute(self) -> str:
        return self.handler.rpartition(".")[2]


_PARAM = re.compile(r"\{([A-Za-z0-9_]+)(\+?)\}")


@dataclass(frozen=True)
class Route:
    method: str  # upper case, or ANY
    path: str  # as in the template, e.g. /api/products/{product_id}
    function: str  # logical id of the function

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        # Built once per route: every request of the local server resolves through it.
        pattern, pos = "", 0
        for m in _PARAM.finditer(self.path):
            pattern += re.escape(self.path[pos : m.start()])
            pattern += f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)"
            pos = m.end()
        return re.compile(pattern + re.escape(self.path[pos:]) + r"\Z")

    @property
    def specificity(self) -> tuple[int, int, int]:
        """API Gateway prefers literal paths over parameters, and parameters over greedy ones."""
        greedy = sum(1 for m in _PARAM.finditer(self.path) if m.group(2))
        params = len(_PARAM.findall(self.path))
        return (greedy, params, -len(self.path))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method.upper()):
            return None
        m = self._regex.match(path)
        return None if m is None else m.groupdict()


@dataclass(frozen=True)
class Application:
    functions: dict[str, FunctionSpec]
    routes: list[Route]

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        candidates = [
            (route, params)
            for route in self.routes
            if (params := route.match(method, path)) is not None
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda c: c[0].specificity)


def read_application(path: Path = TEMPLATE_PATH) -> Application:
    template = load_template(path)
    function_globals = template.get("Globals", {}).get("Function", {})
    functions: dict[str, FunctionSpec] = {}
    routes: list[Route] = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**function_globals, **resource.get("Properties", {})}
        env = {
            **function_globals.get("Environment", {}).get("Variables", {}),
            **resource.get("Properties", {}).get("Environment", {}).get("Variables", {}),
        }
        events = list((props.get("Events") or {}).values())
        functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_uri=(path.parent / str(props["CodeUri"])).resolve(),
            handler=str(props["Handler"]),
            timeout_seconds=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            environment=env,
            sqs_sources=sum(1 for e in events if e.get("Type") == "SQS"),
            schedules=tuple(
                str(e.get("Properties", {}).get("ScheduleExpression"))
                for e in events
                if e.get("Type") in ("ScheduleV2", "Schedule")
            ),
        )
        for event in events:
            if event.get("Type") != "HttpApi":
                continue
            event_props = event.get("Properties", {})
            routes.append(
                Route(
                    method=str(event_props.get("Method", "ANY")).upper(),
                    path=str(event_props.get("Path", "/{proxy+}")),
                    function=logical_id,
                )
            )
    return Application(functions=functions, routes=routes)
