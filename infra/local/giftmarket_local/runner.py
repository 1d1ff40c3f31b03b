"""The Lambda-shaped local runner: HTTP → API Gateway HTTP API (payload 2.0) event → handler.

No Docker here, so `sam local` cannot run; this serves the same handlers AWS runs, with the
same event and response shapes, routed as template.yaml routes them. Each function gets a
few warm "containers": worker threads with their own event loop, each running one
invocation at a time, as a Lambda execution environment does.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from giftmarket_local.template import Application, FunctionSpec, Route

log = logging.getLogger("giftmarket.runner")

# Lambda's synchronous invocation payload limit (API Gateway answers 413 above it).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
ACCOUNT_ID = "000000000000"
_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/problem+json",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/javascript",
)


@dataclass
class LambdaContext:
    """The attributes of the context object the python3.12 runtime passes to a handler."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _is_text(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower().startswith(_TEXT_TYPES)


def build_http_api_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    route: Route,
    path_parameters: dict[str, str],
    source_ip: str = "127.0.0.1",
    now: datetime | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-format-2.0 event, as AWS builds it."""
    now = now or datetime.now(UTC)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        # Repeated headers are joined with commas in payload 2.0.
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    request_id = str(uuid.uuid4())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": merged.get("host", "127.0.0.1"),
            "domainPrefix": merged.get("host", "127.0.0.1").split(".")[0],
            "http": {
                "method": method.upper(),
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        if _is_text(merged.get("content-type", "")):
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    return event


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def route_request(
    application: Application,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
) -> tuple[Route, dict[str, Any]] | None:
    """The route and the event API Gateway would send for this request from `source_ip`
    (the client's address: requestContext.http.sourceIp), or None (404)."""
    parts = urlsplit(target)
    resolved = application.resolve(method, parts.path)
    if resolved is None:
        return None
    route, params = resolved
    event = build_http_api_event(
        method=method,
        raw_path=parts.path,
        raw_query=parts.query,
        headers=headers,
        body=body,
        route=route,
        # API Gateway hands path parameters over decoded (%2F → /), the raw path stays raw.
        path_parameters={name: unquote(value) for name, value in params.items()},
        source_ip=source_ip,
    )
    return route, event


def _gateway_error(status: HTTPStatus) -> HttpResponse:
    body = json.dumps({"message": status.phrase}).encode()
    return HttpResponse(status.value, [("content-type", "application/json")], body)


def response_from_result(result: Any) -> HttpResponse:
    """Turn a handler's return value into HTTP as API Gateway (payload 2.0) does."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # A bare value: API Gateway infers 200 with a JSON body.
        text = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("content-type", "application/json")], text.encode())
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(name, str(v)) for v in values]
    headers += [("set-cookie", c) for c in result.get("cookies") or []]
    raw = str(result.get("body") or "")
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return HttpResponse(int(result["statusCode"]), headers, body)


def load_handler(spec: FunctionSpec) -> tuple[ModuleType, Callable[[dict[str, Any], Any], Any]]:
    """Import the function's module from its CodeUri under a unique name (each is `app`)."""
    module_name = f"giftmarket_function_{spec.logical_id}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        file_spec = importlib.util.spec_from_file_location(module_name, spec.module_file)
        if file_spec is None or file_spec.loader is None:
            raise ImportError(f"cannot load {spec.module_file}")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[module_name] = module
        try:
            file_spec.loader.exec_module(module)
        except BaseException:
            # As in Lambda, a failed init is tried again on the next invocation.
            del sys.modules[module_name]
            raise
    handler = getattr(module, spec.attribute)
    if not callable(handler):
        raise TypeError(f"{spec.handler} in {spec.code_uri} is not callable")
    return module, handler


_threads = threading.local()


def give_thread_an_event_loop() -> None:
    """Mangum drives the ASGI app with asyncio.get_event_loop(), which needs a loop in the
    calling thread, as the Lambda runtime's single thread has. One loop per thread, made
    again if someone closed it."""
    loop: asyncio.AbstractEventLoop | None = getattr(_threads, "loop", None)
    if loop is None or loop.is_closed():
        loop = _threads.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)


class FunctionHost:
    """A function's warm containers: `containers` threads, one invocation each at a time."""

    def __init__(self, spec: FunctionSpec, containers: int = 4) -> None:
        self.spec = spec
        self._handler: Callable[[dict[str, Any], Any], Any] | None = None
        self.module: ModuleType | None = None
        self._load_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=containers,
            thread_name_prefix=f"lambda-{spec.logical_id}",
            initializer=give_thread_an_event_loop,
        )

    def _loaded(self) -> Callable[[dict[str, Any], Any], Any]:
        with self._load_lock:
            if self._handler is None:
                self.module, self._handler = load_handler(self.spec)
            return self._handler

    def invoke(self, event: dict[str, Any]) -> Any:
        handler = self._loaded()
        context = LambdaContext(
            function_name=self.spec.logical_id,
            memory_limit_in_mb=self.spec.memory_mb,
            timeout_seconds=self.spec.timeout_seconds,
        )
        future = self._pool.submit(handler, event, context)
        return future.result(timeout=self.spec.timeout_seconds)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Gateway:
    """Routes a request as the HTTP API would and invokes the function's handler."""

    def __init__(self, application: Application, containers: int = 4) -> None:
        self.application = application
        self.hosts = {
            name: FunctionHost(spec, containers) for name, spec in application.functions.items()
        }

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> tuple[HttpResponse, str | None]:
        routed = route_request(self.application, method, target, headers, body, source_ip)
        if routed is None:
            return _gateway_error(HTTPStatus.NOT_FOUND), None
        route, event = routed
        if len(body) > MAX_PAYLOAD_BYTES:
            return _gateway_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE), route.function
        try:
            result = self.hosts[route.function].invoke(event)
        except FutureTimeout:
            log.error("%s timed out", route.function)
            return _gateway_error(HTTPStatus.SERVICE_UNAVAILABLE), route.function
        except Exception:
            # An unhandled error in a Lambda is a 500 "Internal Server Error" at the gateway.
            log.exception("%s raised", route.function)
            return _gateway_error(HTTPStatus.INTERNAL_SERVER_ERROR), route.function
        return response_from_result(result), route.function

    def openapi(self) -> dict[str, Any]:
        """One OpenAPI document for all functions' FastAPI apps (local /docs only)."""
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "giftmarket (local)", "version": "local"},
            "paths": {},
            "components": {"schemas": {}},
        }
        for host in self.hosts.values():
            host._loaded()
            app = getattr(host.module, "app", None)
            if app is None or not hasattr(app, "openapi"):
                continue
            doc = app.openapi()
            merged["paths"].update(doc.get("paths", {}))
            for key, value in doc.get("components", {}).items():
                merged["components"].setdefault(key, {}).update(value)
        return merged

    def shutdown(self) -> None:
        for host in self.hosts.values():
            host.shutdown()


_DOCS_HTML = """<!doctype html><html><head><title>giftmarket API (local)</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""


def make_server(gateway: Gateway, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "giftmarket-local-gateway"

        def _serve(self) -> None:
            started = time.perf_counter()
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                self._send(_gateway_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE), None, started)
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            if self.command == "GET" and path == "/docs":
                page = HttpResponse(200, [("content-type", "text/html")], _DOCS_HTML.encode())
                self._send(page, None, started)
                return
            if self.command == "GET" and path == "/openapi.json":
                doc = json.dumps(gateway.openapi()).encode()
                self._send(
                    HttpResponse(200, [("content-type", "application/json")], doc), None, started
                )
                return
            response, function = gateway.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
            self._send(response, function, started)

        def _send(self, response: HttpResponse, function: str | None, started: float) -> None:
            self.send_response(response.status)
            for name, value in response.headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "%s %s → %s %s %.1fms",
                self.command,
                self.path,
                response.status,
                function or "-",
                elapsed,
            )

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request is logged by _send

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
