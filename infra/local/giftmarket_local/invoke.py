"""Call a function's Lambda handler in this process, as API Gateway would: for tests and
benchmarks that want the whole handler without an HTTP server in between."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from giftmarket_local.runner import (
    LambdaContext,
    give_thread_an_event_loop,
    load_handler,
    route_request,
)
from giftmarket_local.template import Application, FunctionSpec, read_application


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def __str__(self) -> str:
        return f"{self.status} {self.headers} {self.raw[:600]!r}"


def reply_from_result(result: dict[str, Any]) -> Reply:
    raw = str(result.get("body") or "")
    data = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    return Reply(int(result["statusCode"]), headers, data)


class LocalInvoker:
    def __init__(self, application: Application | None = None) -> None:
        self.application = application or read_application()

    def invoke_event_raw(self, function: str, event: dict[str, Any]) -> Any:
        """Invoke `function` (its template logical id) with a ready-made event; returns what
        the handler returned (an SQS batch response, a job report...)."""
        spec: FunctionSpec = self.application.functions[function]
        give_thread_an_event_loop()  # before the import: Mangum looks for a loop when built
        _, handler = load_handler(spec)
        context = LambdaContext(spec.logical_id, spec.memory_mb, spec.timeout_seconds)
        return handler(event, context)

    def invoke_event(self, function: str, event: dict[str, Any]) -> Reply:
        """Invoke an HTTP API function with a ready-made API Gateway event."""
        result: dict[str, Any] = self.invoke_event_raw(function, event)
        return reply_from_result(result)

    def http(
        self,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        source_ip: str = "127.0.0.1",
    ) -> Reply:
        """`target` is the raw path with an optional query; it is routed by the template as
        a request from `source_ip`."""
        routed = route_request(
            self.application, method, target, list((headers or {}).items()), body, source_ip
        )
        if routed is None:
            raise LookupError(f"{method} {target} is not routed by template.yaml")
        route, event = routed
        return self.invoke_event(route.function, event)
