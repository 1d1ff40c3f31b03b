"""The Lambda-shaped local runner: HTTP → API Gateway HTTP API (payload 2.0) event → handler.

No Docker here, so `sam local` cannot run; this serves the same handlers AWS runs, with the
same event and response shapes, routed as template.yaml routes them. Each function gets a
few warm "containers": worker threads with their own event loop, each running one
invocation at a time, as a Lambda execution environment does.

Stopping is bounded (`GatewayServer.stop_accepting` and `close_connections`,
`Gateway.shutdown`, put together by the supervisor): the listening socket closes, requests in
flight get a grace period, then whatever is still running is answered 503 and left behind
(containers are daemon threads nobody joins: a handler stuck on a lock or on a server that
does not answer must not keep `make run` from stopping the stack).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from giftmarket.lazy import import_declared
from giftmarket_local import docs
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

    def expire(self) -> None:
        """The runner is stopping: no time is left. Lambda would end the invocation; here a
        handler that watches its time (the outbox relay's loop) ends its work itself."""
        self._deadline = time.monotonic()


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


_INIT_LOCK = threading.Lock()


class Abandoned(Exception):
    """The runner stopped before the invocation finished (or before it could start)."""


Handler = Callable[[dict[str, Any], Any], Any]
_Invocation = tuple[Future[Any], Handler, dict[str, Any], LambdaContext]


class FunctionHost:
    """A function's warm containers: `containers` threads, one invocation each at a time."""

    def __init__(self, spec: FunctionSpec, containers: int = 4) -> None:
        self.spec = spec
        self._handler: Handler | None = None
        self.module: ModuleType | None = None
        self._containers = containers
        self._threads: list[threading.Thread] = []
        self._work: queue.SimpleQueue[_Invocation | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight: dict[Future[Any], LambdaContext] = {}
        self._closed = False

    def _loaded(self) -> Handler:
        # One init at a time in this process: in Lambda each container inits in a process of
        # its own, here two functions importing at once (the shared layer, Powertools with
        # its import cycles) can meet Python's import-deadlock detection and be handed a
        # partially initialised module: an ImportError, a 500, in no deployed stage.
        with _INIT_LOCK:
            if self._handler is None:
                self.module, self._handler = load_handler(self.spec)
            return self._handler

    def _container(self) -> None:
        give_thread_an_event_loop()
        while (item := self._work.get()) is not None:
            future, handler, event, context = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = handler(event, context)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as Lambda does
                outcome: tuple[bool, Any] = (False, exc)
            else:
                outcome = (True, result)
            try:
                if outcome[0]:
                    future.set_result(outcome[1])
                else:
                    future.set_exception(outcome[1])
            except InvalidStateError:
                pass  # abandoned by shutdown(): nobody waits for it any more

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run the handler in a free container and return its result. Raises FutureTimeout
        after the function's timeout, and Abandoned once the host is shut down."""
        handler = self._loaded()
        context = LambdaContext(
            function_name=self.spec.logical_id,
            memory_limit_in_mb=self.spec.memory_mb,
            timeout_seconds=self.spec.timeout_seconds,
        )
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise Abandoned(f"{self.spec.logical_id} is shutting down")
            if not self._threads:
                for n in range(self._containers):
                    thread = threading.Thread(
                        target=self._container,
                        name=f"lambda-{self.spec.logical_id}_{n}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
            self._in_flight[future] = context
        try:
            self._work.put((future, handler, event, context))
            try:
                return future.result(timeout=self.spec.timeout_seconds)
            except FutureTimeout:
                # Its caller has its 503: if no container has started it yet, none will
                # (a backlog of requests nobody waits for would time out every later one).
                future.cancel()
                raise
        finally:
            with self._lock:
                self._in_flight.pop(future, None)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def close(self) -> None:
        """Take no more invocations; the ones in flight go on, with no time left."""
        with self._lock:
            self._closed = True
            for context in self._in_flight.values():
                context.expire()

    def abandon(self) -> int:
        """Answer every invocation still in flight with Abandoned, and let the containers
        end once their current one returns. Returns how many were abandoned."""
        with self._lock:
            self._closed = True
            pending = list(self._in_flight)
            threads = len(self._threads)
        abandoned = 0
        for future in pending:
            try:
                future.set_exception(Abandoned(f"{self.spec.logical_id}: the runner stopped"))
                abandoned += 1
            except InvalidStateError:
                pass  # it finished meanwhile
        for _ in range(threads):
            self._work.put(None)
        return abandoned

    def shutdown(self, grace: float = 5.0) -> int:
        """close(), wait up to `grace` seconds for the invocations in flight, abandon() the
        rest. Returns how many were abandoned."""
        self.close()
        deadline = time.monotonic() + grace
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.abandon()


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
        except Abandoned:
            # The runner is stopping: as API Gateway answers while no function can run.
            return _gateway_error(HTTPStatus.SERVICE_UNAVAILABLE), route.function
        except FutureTimeout:
            log.error("%s timed out", route.function)
            return _gateway_error(HTTPStatus.SERVICE_UNAVAILABLE), route.function
        except Exception:
            # An unhandled error in a Lambda is a 500 "Internal Server Error" at the gateway.
            log.exception("%s raised", route.function)
            return _gateway_error(HTTPStatus.INTERNAL_SERVER_ERROR), route.function
        return response_from_result(result), route.function

    def init(self) -> None:
        """Init every function, one after the other, and import what their first requests
        would import on first use (the modules declared lazy, as a SnapStart snapshot
        holds them): the containers here share one process, and imports racing in its
        threads can fail where Lambda's separate processes cannot. Call before serving."""
        for host in self.hosts.values():
            host._loaded()
        with _INIT_LOCK:
            import_declared()

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

    def in_flight(self) -> int:
        return sum(host.in_flight() for host in self.hosts.values())

    def close(self) -> None:
        """Take no more invocations (they answer 503); the ones in flight go on."""
        for host in self.hosts.values():
            host.close()

    def shutdown(self, grace: float = 5.0) -> int:
        """Bounded: close, wait up to `grace` seconds for the invocations in flight, then
        answer the rest 503 and leave their threads behind. Returns how many were abandoned."""
        self.close()
        deadline = time.monotonic() + grace
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        return sum(host.abandon() for host in self.hosts.values())


class GatewayServer(ThreadingHTTPServer):
    """The HTTP side of the gateway, which knows its connections and requests in flight so
    that it can stop in bounded time (`drain`)."""

    daemon_threads = True
    # server_close() must not wait for connection threads: a keep-alive connection's thread
    # lives as long as its client keeps it open.
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._requests = 0
        self.draining = threading.Event()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def request_started(self) -> None:
        with self._lock:
            self._requests += 1

    def request_finished(self) -> None:
        with self._lock:
            self._requests -= 1

    def requests_in_flight(self) -> int:
        with self._lock:
            return self._requests

    def stop_accepting(self) -> None:
        """Close the listening socket; from now on every response closes its connection
        and a new request on a kept-alive one is answered 503."""
        self.draining.set()
        self.socket.close()

    def wait_idle(self, seconds: float) -> bool:
        """Wait up to `seconds` for the requests in flight to be answered."""
        deadline = time.monotonic() + seconds
        while self.requests_in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests_in_flight() == 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.draining.is_set() and isinstance(sys.exc_info()[1], OSError | ValueError):
            return  # a connection close_connections() shut down mid-request
        super().handle_error(request, client_address)

    def close_connections(self) -> int:
        """Shut every open connection down (idle keep-alive ones, and requests that did not
        finish in time); their threads then end. Returns how many there were."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its client
        return len(connections)


def make_server(gateway: Gateway, host: str, port: int) -> GatewayServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "giftmarket-local-gateway"
        server: GatewayServer

        def _serve(self) -> None:
            self.server.request_started()
            try:
                self._serve_one()
            finally:
                self.server.request_finished()

        def _serve_one(self) -> None:
            started = time.perf_counter()
            if self.server.draining.is_set():
                self._send(_gateway_error(HTTPStatus.SERVICE_UNAVAILABLE), None, started)
                return
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                self._send(_gateway_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE), None, started)
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                # The client went away mid-body, or the runner shut the connection: a part of
                # a request is never handed to a function.
                self.close_connection = True
                return
            path = urlsplit(self.path).path
            if self.command == "GET" and path == docs.DOCS_PATH:
                page = HttpResponse(200, [("content-type", docs.HTML_TYPE)], docs.page())
                self._send(page, None, started)
                return
            if self.command == "GET" and path.startswith(docs.ASSETS_PATH):
                asset = docs.asset(path.removeprefix(docs.ASSETS_PATH))
                if asset is None:
                    self._send(_gateway_error(HTTPStatus.NOT_FOUND), None, started)
                else:
                    self._send(
                        HttpResponse(200, [("content-type", asset[0])], asset[1]), None, started
                    )
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
            if self.server.draining.is_set():
                self.send_header("connection", "close")
                self.close_connection = True
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

    return GatewayServer((host, port), Handler)
