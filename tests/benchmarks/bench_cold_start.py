"""Cold start: importing each Lambda handler module in a fresh process, then its first request.

For each function's functions/<name>/app.py, a new Python process (this virtualenv's
interpreter) times, with time.perf_counter, the import of the app file (importlib, as the
Lambda runtime loads it); interpreter start-up is not in it. In INVOKE_REPEATS of those
processes (spread evenly over the rounds) it then times, in the same process, the handler's
first invocation with a realistic event (what the runtime does next), then a second one
(warm, for reference); the invocation's event and context are made off the clock. REPEATS
processes per handler, interleaved round-robin with the other handlers and the baseline so
that a busy moment of the machine falls on all of them alike; median and p90. Import +
first invocation is summed per process, then its median taken.

Why both: work deferred from import to the first invocation (the X-Ray SDK behind
Powertools' Tracer, SQLAlchemy, redis, boto3: observability.with_tracing, bootstrap.py) is
moved, not saved, for whatever the first request needs. A Lambda cold start a user waits for
is init (the import) + the first invocation, so each handler's import + first invocation is
reported beside the baseline's import + first invocation, and only what no request of the
function ever uses is really saved.

The baseline is a process that imports bare fastapi and mangum, builds a trivial FastAPI
app with one route and wraps it in Mangum: the least any HTTP handler of this stack can
import; its first invocation is a GET of that route. Goal (issue 18): the command and query
API handlers' import + first invocation median ≤ 2× the baseline's (an earlier goal, the
import alone ≤ 1.5× the baseline's import, is still shown beside each import).

The floor (cold_start_floor.py) is measured alike, interleaved with the rest: the baseline
app in Powertools' Logger, Tracer and Metrics, its one route running SELECT 1 through a
SQLAlchemy engine over PyMySQL and a GET through redis-py, both over TLS as deployed, and no
giftmarket code. It is what the parts the stack is built from cost any handler whose first
request reaches its stores: if it is already over the goal's ratio, no code of the project's
can meet the goal, and a handler's ratio to the floor is what the project's own code adds.

Every module imported has its bytecode here (the virtualenv is installed compiled, and `make
bench` compiles the project's own), as the layer ships it since layers/core/Makefile's
layer-bytecode: Lambda's /opt is read-only, and the layer built before it had none, so each cold
start compiled every module it imported (the command API's import and its first request's
modules: 2.9-3.7 s without, 0.95-1.1 s with, measured on 2026-12-07 with the site-packages
copied without their .pyc files; infra/build/check_layer.py now refuses a layer without).

SnapStart (giftmarket/snapstart.py), emulated in as many more processes for the two API
handlers and the baseline: the import, then the before-snapshot hooks (what Lambda runs once
when a version is published: every lazy module imported, the Tracer built, a request that
touches no store answered), then, timed as a restored environment's, the after-restore hooks
and the first invocation. The snapshot must hold no connection (0 socket connects before
it). Lambda's restore of the microVM itself (its Restore Duration metric) is not
in the figure: it is beside it, for every function alike.

The child's environment is a Lambda's (LAMBDA_TASK_ROOT set, so Powertools' Tracer is
enabled as with `Tracing: Active`, a sampled X-Ray trace header, region, service name) with
the application's stores (MariaDB, Redis, SQS/S3 via AWS_ENDPOINT_URL) on an unused
loopback port, where a connect is refused at once: importing a handler must not connect
anywhere (the child counts every socket connect attempted during the import: it must be 0);
the invocations do try, fail fast, and answer as they would with a store down (503, batch
item failures, an exception), which still runs what a first request builds: the Tracer,
the container, the engine, the clients. No server runs or is needed; X-Ray's SDK may drop
its marker file in /tmp/.aws-xray/ and sends its segments by UDP to 127.0.0.1:2000, where
nothing listens (UDP: nothing waits).

The stores are configured as the template deploys them: TLS to MySQL verified against a CA
bundle (DB_SSL_CA; in AWS the RDS bundle in the layer, here the system's bundle, of a like
size), rediss:// for Redis; building the TLS contexts is part of a first request's work.
Without a CA, PyMySQL would instead try TLS on every connection with a context of its own.
Not in the figure: the secrets a deployed first request reads from Secrets Manager (the DB
and Redis credentials; a boto3 client and a round trip), since nothing here answers them.

For attribution, one more child per handler (and for the baseline) runs under
`python -X importtime`, import only: the ten costliest entries by cumulative time, and the
modules the handler imports beyond the baseline's, their own time summed by top-level
package; and one more per handler that also invokes it once: the modules its first
invocation imports, their own time summed by top-level package (what the first request
pays beyond the import). Writes bench-results/cold_start.{json,png}.

Run: make bench   (or .venv/bin/python tests/benchmarks/bench_cold_start.py --repeats 15
--invoke-repeats 6)
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchcommon import OUT, percentile, pyplot, write_result

from giftmarket_local.stack import REPO_ROOT

HANDLERS = ("command_api", "query_api", "projector", "outbox_relay", "settlement", "image_janitor")
BASELINE = "baseline"
# The baseline plus the parts of the stack every API handler's first request uses
# (cold_start_floor.py): what the stack costs whoever writes the code.
FLOOR = "floor"
FLOOR_APP = Path(__file__).with_name("cold_start_floor.py")
# Issue 18: each API handler's import + first invocation ≤ 2× the baseline's.
GOAL_RATIO = 2.0
GOAL_HANDLERS = ("command_api", "query_api")
# An earlier goal on the import alone, still reported beside each handler's import.
IMPORT_GOAL_RATIO = 1.5
REPEATS = 15
# Of those, the processes that also invoke the handler (spread evenly over the rounds): an
# invocation that reaches for unreachable stores costs more than the import, and the whole
# benchmark is to stay within a few minutes on a 2-core machine.
INVOKE_REPEATS = 6
# Issue 18's figures (import + first invocation over the baseline's), for reference.
MEASURED_BEFORE = {
    "command_api_import_plus_first_ratio": 3.84,
    "query_api_import_plus_first_ratio": 3.34,
}
UNUSED = "127.0.0.1:9"  # the discard port: nothing listens, a connect is refused at once
CHILD_TIMEOUT_SECONDS = 60  # a child that hangs fails the benchmark instead of stalling it
RESULT_MARK = "COLD_START_RESULT "  # the handlers log to stdout too
FIRST_MARK = "COLD_START_FIRST_INVOCATION"  # on stderr, between the import and the invocation
# DB_SSL_CA's stand-in for the RDS CA bundle the layer ships (about as many certificates).
CA_BUNDLE = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
PRODUCT_ID = "01KAQ3Y4MA7T2N5Q8R1S4V6X9Z"  # any ULID: the stores are unreachable anyway

# Runs in the child: `python -c CHILD <target> <app.py or ""> <event JSON>`. It imports only
# the standard library before the clock starts; the invocations' event and context are made
# after the import is timed and before the invocation clock starts.
CHILD = """
import importlib.util, json, socket, sys, time
target, path, event_json, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
connects = []
_connect = socket.socket.connect
def connect(self, address):
    connects.append(repr(address))
    return _connect(self, address)
socket.socket.connect = connect
began = time.perf_counter()
if target == "baseline":
    from fastapi import FastAPI
    from mangum import Mangum
    app = FastAPI()
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}
    handler = Mangum(app, lifespan="off")
else:
    spec = importlib.util.spec_from_file_location(f"{target}_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    handler = module.handler
    assert callable(handler)
seconds = time.perf_counter() - began
modules = len(sys.modules)
import_connects = list(connects)
result = {"seconds": seconds, "modules": modules, "connects": import_connects}
def done():
    sys.stdout.flush()
    print("COLD_START_RESULT " + json.dumps(result), flush=True)
    sys.exit(0)
if not event_json:  # no event: the import only
    done()

class Context:  # the attributes of the python3.12 runtime's context object
    def __init__(self, request_id):
        self.function_name = f"giftmarket-{target}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:ap-northeast-2:000000000000:function:{self.function_name}"
        )
        self.memory_limit_in_mb = 1024
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "2026/01/01/[$LATEST]bench"
        self._deadline = time.monotonic() + 30
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

def outcome(answer):
    if isinstance(answer, dict) and "statusCode" in answer:
        return f"HTTP {answer['statusCode']}"
    if isinstance(answer, dict) and "batchItemFailures" in answer:
        return f"{len(answer['batchItemFailures'])} batch item failures"
    return "returned"

def invoke(n):
    event, context = json.loads(event_json), Context(f"bench-{n}")  # not timed
    before = len(connects)
    began = time.perf_counter()
    try:
        result = outcome(handler(event, context))
    except Exception as exc:
        result = f"raised {type(exc).__name__}"
    return {
        "seconds": time.perf_counter() - began,
        "outcome": result,
        "connects": len(connects) - before,
    }

if mode == "snapstart":
    # What Lambda does at publish: init, then the before-snapshot hooks; then, in each
    # environment resumed from the snapshot, the after-restore hooks and the first
    # invocation. The restore of the microVM itself is Lambda's and is not in this.
    before = len(connects)
    began = time.perf_counter()
    if target != "baseline":
        from giftmarket import snapstart
        snapstart.run_before_snapshot()
    result["before_snapshot_seconds"] = time.perf_counter() - began
    result["before_snapshot_connects"] = len(connects) - before
    result["modules_in_snapshot"] = len(sys.modules)
    began = time.perf_counter()
    if target != "baseline":
        snapstart.run_after_restore()
    result["after_restore_seconds"] = time.perf_counter() - began
# FIRST_MARK: under -X importtime, the first invocation's imports follow it.
sys.stderr.write("COLD_START_FIRST_INVOCATION\\n")
sys.stderr.flush()
result["first"] = invoke(1)
result["warm"] = invoke(2)
done()
"""


def child_env(target: str) -> dict[str, str]:
    """A Lambda's environment for the function, its stores on an unused loopback port."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    service = f"giftmarket-{target.replace('_', '-')}"
    trace_root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
    env |= {
        "LAMBDA_TASK_ROOT": str(REPO_ROOT / "functions" / target),
        "AWS_LAMBDA_FUNCTION_NAME": service,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": "ap-northeast-2",
        "AWS_DEFAULT_REGION": "ap-northeast-2",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        # The runtime sets this per invocation under `Tracing: Active`; sampled, so the
        # first invocation builds and sends its segments as a traced one does.
        "_X_AMZN_TRACE_ID": f"Root={trace_root};Parent={uuid.uuid4().hex[:16]};Sampled=1",
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": "giftmarket",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "ENVIRONMENT": "local",
        "DB_PRIMARY_HOST": "127.0.0.1",
        "DB_PRIMARY_PORT": "9",
        "DB_REPLICA_HOST": "127.0.0.1",
        "DB_REPLICA_PORT": "9",
        "DB_CONNECT_TIMEOUT_SECONDS": "1",
        "DB_READ_TIMEOUT_SECONDS": "2",
        "DB_POOL_TIMEOUT_SECONDS": "1",
        "DB_SSL_CA": CA_BUNDLE,
        "REDIS_URL": f"rediss://{UNUSED}/0",
        "REDIS_TIMEOUT_SECONDS": "0.25",
        "AWS_ENDPOINT_URL": f"http://{UNUSED}",
        "EVENTS_QUEUE_URL": f"http://{UNUSED}/000000000000/events.fifo",
    }
    return env


def http_event(
    method: str, path: str, route: str, params: dict[str, str] | None = None, body: str = ""
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-2.0 event, as AWS builds it (see runner.py)."""
    now = datetime.now(UTC)
    headers = {
        "host": "abc123.execute-api.ap-northeast-2.amazonaws.com",
        "user-agent": "bench_cold_start",
        "accept": "application/json",
    }
    if body:
        headers |= {"content-type": "application/json", "content-length": str(len(body))}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "abc123",
            "domainName": headers["host"],
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": headers["user-agent"],
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if params:
        event["pathParameters"] = params
    if body:
        event["body"] = body
    return event


def sample_event(function: str, name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(
        (REPO_ROOT / "functions" / function / "events" / name).read_text()
    )
    return event


# Each function's first request: one that reaches its stores, as most first requests do.
# A login reads the user from the primary (an unsigned token would stop at auth, touching
# nothing); a product page reads Redis, then SQL on the replica, then the primary.
EVENTS: dict[str, tuple[str, Any]] = {
    BASELINE: ("GET /health", lambda: http_event("GET", "/health", "/health")),
    FLOOR: ("GET /health", lambda: http_event("GET", "/health", "/health")),
    "command_api": (
        "POST /api/auth/login",
        lambda: http_event(
            "POST",
            "/api/auth/login",
            "/api/auth/login",
            body=json.dumps({"email": "a@b.co", "password": "password123"}),
        ),
    ),
    "query_api": (
        "GET /api/products/{product_id}",
        lambda: http_event(
            "GET",
            f"/api/products/{PRODUCT_ID}",
            "/api/products/{product_id}",
            {"product_id": PRODUCT_ID},
        ),
    ),
    "projector": (
        "events/sqs_fifo_batch.json",
        lambda: sample_event("projector", "sqs_fifo_batch.json"),
    ),
    "outbox_relay": (
        "events/scheduled.json",
        lambda: sample_event("outbox_relay", "scheduled.json"),
    ),
    "settlement": ("events/scheduled.json", lambda: sample_event("settlement", "scheduled.json")),
    "image_janitor": (
        "events/scheduled.json",
        lambda: sample_event("image_janitor", "scheduled.json"),
    ),
}


def command(target: str, *flags: str, invoke: bool = True, snapstart: bool = False) -> list[str]:
    """The child's command line; without `invoke` it only imports (an empty event); with
    `snapstart` it runs the before-snapshot hooks after the import, then times the
    after-restore hooks and the first invocation as a restored environment's."""
    path = {BASELINE: "", FLOOR: str(FLOOR_APP)}.get(
        target, str(REPO_ROOT / "functions" / target / "app.py")
    )
    event = json.dumps(EVENTS[target][1]()) if invoke or snapstart else ""
    mode = "snapstart" if snapstart else "plain"
    return [sys.executable, *flags, "-c", CHILD, target, path, event, mode]


def child_result(target: str, stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARK))
            return result
    raise RuntimeError(f"{target}: the child printed no result\n{stdout[-2000:]}")


def measure_once(target: str, *, invoke: bool = True, snapstart: bool = False) -> dict[str, Any]:
    began = time.perf_counter()
    done = subprocess.run(
        command(target, invoke=invoke, snapstart=snapstart),
        env=child_env(target),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
    )
    process = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{target}: the child failed\n{done.stderr}")
    result = child_result(target, done.stdout)
    result["process_seconds"] = process
    return result


def importtime(target: str, *, invoke: bool = False) -> list[tuple[int, int, int, str]]:
    """(depth, own µs, cumulative µs, module) of every import, from `-X importtime`; with
    `invoke`, those of the first invocation only."""
    done = subprocess.run(
        command(target, "-X", "importtime", invoke=invoke),
        env=child_env(target),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=CHILD_TIMEOUT_SECONDS,
    )
    rows = []
    lines = done.stderr.splitlines()
    if invoke:
        lines = lines[lines.index(FIRST_MARK) + 1 :]
    for line in lines:
        if not line.startswith("import time:") or "imported package" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((depth, int(own), int(cumulative), name.strip()))
    return rows


def attribution(
    rows: list[tuple[int, int, int, str]], baseline: set[str], top: int = 10
) -> dict[str, Any]:
    costliest = sorted(rows, key=lambda r: -r[2])[:top]
    beyond: defaultdict[str, int] = defaultdict(int)
    for _, own, _, name in rows:
        if name not in baseline:
            beyond[name.split(".")[0]] += own
    # -X importtime keeps one account per process: imports made by two threads at once (the
    # relay's rebuild beside its loop) get negative self times, and the sums mean nothing.
    if any(own < 0 for _, own, _, _ in rows):
        return {
            "top_cumulative": [],
            "beyond_baseline_own_ms_by_package": {},
            "beyond_baseline_total_own_ms": None,
            "unreliable": "imports ran in two threads at once: -X importtime's self times "
            "are per process, so some came out negative",
        }
    return {
        "top_cumulative": [
            {"module": name, "depth": depth, "cumulative_ms": round(cum / 1000, 1)}
            for depth, _, cum, name in costliest
        ],
        "beyond_baseline_own_ms_by_package": {
            package: round(own / 1000, 1)
            for package, own in sorted(beyond.items(), key=lambda kv: -kv[1])[:top]
        },
        "beyond_baseline_total_own_ms": round(sum(beyond.values()) / 1000, 1),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Import figures over every process; invocation figures over those that invoked."""
    seconds = [s["seconds"] for s in samples]
    process = [s["process_seconds"] for s in samples if "first" not in s]
    invoked = [s for s in samples if "first" in s]
    first = [s["first"]["seconds"] for s in invoked]
    warm = [s["warm"]["seconds"] for s in invoked]
    cold = [s["seconds"] + s["first"]["seconds"] for s in invoked]
    outcomes = sorted({s["first"]["outcome"] for s in invoked})
    return {
        "median_ms": ms(statistics.median(seconds)),
        "p90_ms": ms(percentile(seconds, 90)),
        "min_ms": ms(min(seconds)),
        "first_invocation_median_ms": ms(statistics.median(first)),
        "first_invocation_p90_ms": ms(percentile(first, 90)),
        "import_plus_first_median_ms": ms(statistics.median(cold)),
        "import_plus_first_p90_ms": ms(percentile(cold, 90)),
        "warm_invocation_median_ms": ms(statistics.median(warm)),
        "first_invocation_outcome": ", ".join(outcomes),
        "socket_connects_during_first_invocation": max(s["first"]["connects"] for s in invoked),
        "processes_invoking": len(invoked),
        "process_median_ms": ms(statistics.median(process)) if process else None,
        "modules_loaded": samples[-1]["modules"],
        "socket_connects_during_import": max(len(s["connects"]) for s in samples),
    }


def snapstart_summary(samples: list[dict[str, Any]], base_cold_ms: float) -> dict[str, Any]:
    """A restored environment's wait: the after-restore hooks + the first invocation."""
    init = [s["seconds"] + s["before_snapshot_seconds"] for s in samples]
    restored = [s["after_restore_seconds"] + s["first"]["seconds"] for s in samples]
    restored_ms = ms(statistics.median(restored))
    return {
        "init_with_before_snapshot_median_ms": ms(statistics.median(init)),
        "before_snapshot_median_ms": ms(
            statistics.median(s["before_snapshot_seconds"] for s in samples)
        ),
        "after_restore_median_ms": ms(
            statistics.median(s["after_restore_seconds"] for s in samples)
        ),
        "restored_first_invocation_median_ms": ms(
            statistics.median(s["first"]["seconds"] for s in samples)
        ),
        "restore_to_first_answer_median_ms": restored_ms,
        "restore_to_first_answer_p90_ms": ms(percentile(restored, 90)),
        "restore_to_first_answer_ratio_to_baseline_cold": round(restored_ms / base_cold_ms, 2),
        "first_invocation_outcome": ", ".join(sorted({s["first"]["outcome"] for s in samples})),
        "warm_invocation_median_ms": ms(statistics.median(s["warm"]["seconds"] for s in samples)),
        "modules_in_snapshot": samples[-1]["modules_in_snapshot"],
        "socket_connects_before_snapshot": max(s["before_snapshot_connects"] for s in samples),
        "processes": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="processes per handler")
    parser.add_argument(
        "--invoke-repeats",
        type=int,
        default=INVOKE_REPEATS,
        help="of those, the processes that also invoke the handler (twice); as many again "
        "emulate a SnapStart restore for the API handlers and the baseline",
    )
    parser.add_argument(
        "--handlers", nargs="+", default=list(HANDLERS), choices=HANDLERS, help="which ones"
    )
    args = parser.parse_args()
    if not Path(CA_BUNDLE).is_file():  # the first requests would fail on it, not as measured
        raise SystemExit(f"no CA bundle at {CA_BUNDLE} for DB_SSL_CA (install ca-certificates)")
    invoke_repeats = max(1, min(args.invoke_repeats, args.repeats))
    invoking = {i * args.repeats // invoke_repeats for i in range(invoke_repeats)}
    targets = [BASELINE, FLOOR, *args.handlers]
    snapstart_targets = [t for t in targets if t == BASELINE or t in GOAL_HANDLERS]
    began = time.perf_counter()
    for target in targets:  # a first, unmeasured round: the files are in the page cache
        measure_once(target)
    samples: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    restores: dict[str, list[dict[str, Any]]] = {t: [] for t in snapstart_targets}
    for round_ in range(args.repeats):
        for target in targets:
            samples[target].append(measure_once(target, invoke=round_ in invoking))
            if round_ in invoking and target in restores:
                restores[target].append(measure_once(target, snapstart=True))
    figures = {t: summary(samples[t]) for t in targets}
    base_rows = importtime(BASELINE)
    base_modules = {name for *_, name in base_rows}
    base_ms = figures[BASELINE]["median_ms"]
    base_cold_ms = figures[BASELINE]["import_plus_first_median_ms"]
    snapstart = {t: snapstart_summary(restores[t], base_cold_ms) for t in snapstart_targets}
    floor = figures[FLOOR]
    floor_cold_ms = floor["import_plus_first_median_ms"]
    floor_ratio = round(floor_cold_ms / base_cold_ms, 2)
    assert floor["socket_connects_during_import"] == 0, samples[FLOOR][-1]
    handlers: dict[str, Any] = {}
    for name in args.handlers:
        figure = figures[name]
        ratio = round(figure["median_ms"] / base_ms, 2)
        cold_ratio = round(figure["import_plus_first_median_ms"] / base_cold_ms, 2)
        handlers[name] = {
            **figure,
            "first_invocation_event": EVENTS[name][0],
            "ratio_to_baseline": ratio,
            "meets_import_goal": ratio <= IMPORT_GOAL_RATIO,
            "import_plus_first_ratio_to_baseline": cold_ratio,
            # Only the API handlers have the goal; the others are measured alike.
            "has_goal": name in GOAL_HANDLERS,
            "meets_goal": cold_ratio <= GOAL_RATIO,
            # What the project's own code costs beyond the stack's parts.
            "import_plus_first_ratio_to_floor": round(
                figure["import_plus_first_median_ms"] / floor_cold_ms, 2
            ),
            "importtime": attribution(importtime(name), base_modules),
            # What the first request imports (all of it beyond the handler's import).
            "first_invocation_importtime": attribution(importtime(name, invoke=True), set()),
        }
        if name in snapstart:
            handlers[name]["snapstart"] = snapstart[name]
            # A snapshot must hold no connection: a restored environment could not use it.
            assert snapstart[name]["socket_connects_before_snapshot"] == 0, (name, restores[name])
        assert figure["socket_connects_during_import"] == 0, (name, samples[name][-1])
    goal_handlers = [h for h in handlers.values() if h["has_goal"]]
    result = {
        "repeats": args.repeats,
        "invoke_repeats": invoke_repeats,
        "python": sys.version.split()[0],
        "goal_ratio": GOAL_RATIO,
        "goal_handlers": list(GOAL_HANDLERS),
        "import_goal_ratio": IMPORT_GOAL_RATIO,
        "measured_before": MEASURED_BEFORE,
        "what": (
            "median_ms/p90_ms: the handler module's import; first_invocation_*: its first "
            "invocation in the same process; import_plus_first_*: their sum per process (the "
            "cold start a caller waits for; the goal's figure); warm_invocation: the second "
            "invocation. Cost deferred from import to the first invocation is moved, not "
            "saved. snapstart: an emulated SnapStart restore in as many other processes: "
            "import and before-snapshot hooks (paid once per published version), then "
            "after-restore hooks + first invocation (what a restored environment's caller "
            "waits for, beside the microVM restore itself, which is Lambda's)."
        ),
        "baseline": {
            **figures[BASELINE],
            "first_invocation_event": EVENTS[BASELINE][0],
            "what": "import fastapi + mangum, a one-route FastAPI app wrapped in Mangum",
            "importtime_top_cumulative": attribution(base_rows, set())["top_cumulative"],
            "snapstart": snapstart[BASELINE],
        },
        "floor": {
            **floor,
            "first_invocation_event": EVENTS[FLOOR][0],
            "what": (
                "the baseline wrapped in Powertools' Logger, Tracer and Metrics, its route "
                "running SELECT 1 through SQLAlchemy + PyMySQL and a GET through redis-py, "
                "both over TLS (tests/benchmarks/cold_start_floor.py): no giftmarket code"
            ),
            "import_plus_first_ratio_to_baseline": floor_ratio,
            # The goal is within reach of the project's code only if its parts leave room.
            "leaves_room_for_goal": floor_ratio <= GOAL_RATIO,
            "importtime": attribution(importtime(FLOOR), base_modules),
            "first_invocation_importtime": attribution(importtime(FLOOR, invoke=True), set()),
        },
        "handlers": handlers,
        "worst_ratio": max(h["ratio_to_baseline"] for h in handlers.values()),
        "worst_import_plus_first_ratio": max(
            (h["import_plus_first_ratio_to_baseline"] for h in goal_handlers), default=None
        ),
        "meets_goal": all(h["meets_goal"] for h in goal_handlers),
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_result("cold_start", result)
    plot(result, OUT / "cold_start.png")


def plot(result: dict[str, Any], path: Path) -> None:
    handlers = result["handlers"]
    base = result["baseline"]
    names = [BASELINE, FLOOR, *handlers]
    rows = [base, result["floor"], *handlers.values()]
    imports = [r["median_ms"] for r in rows]
    firsts = [r["first_invocation_median_ms"] for r in rows]
    totals = [r["import_plus_first_median_ms"] for r in rows]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = ["#8a8a8a", "#6f6f6f"] + [
        "#b0b0b0" if not h["has_goal"] else "#3b7dd8" if h["meets_goal"] else "#d8633b"
        for h in handlers.values()
    ]
    ax.bar(names, imports, color=colors, label="median import (init)")
    ax.bar(
        names,
        firsts,
        bottom=imports,
        color=colors,
        alpha=0.4,
        hatch="//",
        edgecolor="white",
        label="+ median first invocation (stores refused: fails fast)",
    )
    base_import, base_cold = base["median_ms"], base["import_plus_first_median_ms"]
    # Bars: the median import and the median first invocation stacked; the text's sum is the
    # median of each process's own sum (the figure the ratio is of), near their sum.
    for x, (imported, first, total) in enumerate(zip(imports, firsts, totals, strict=True)):
        ax.text(
            x,
            max(total, imported + first),
            f"import {imported:.0f} ({imported / base_import:.2f}×)\n"
            f"+ 1st call {first:.0f}\n"
            f"= {total:.0f} ms ({total / base_cold:.2f}×)",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.axhline(
        base_cold * result["goal_ratio"],
        color="red",
        linestyle=":",
        label=f"goal (API handlers): import + first invocation ≤ {result['goal_ratio']:g}× "
        f"the baseline's ({base_cold * result['goal_ratio']:.0f} ms)",
    )
    restored = [
        (x, r["snapstart"]["restore_to_first_answer_median_ms"])
        for x, r in enumerate(rows)
        if "snapstart" in r
    ]
    ax.scatter(
        [x for x, _ in restored],
        [y for _, y in restored],
        marker="D",
        color="#2a9d4b",
        zorder=3,
        label="SnapStart, emulated: after-restore hooks + first invocation (median)",
    )
    for x, y in restored:
        ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(8, 0), fontsize=7)
    ax.axhline(
        base_cold,
        color="grey",
        linestyle="--",
        label=f"baseline import + first invocation {base_cold:.0f} ms",
    )
    ax.set_ylabel("ms (fresh process, median)")
    ax.set_title(
        "Cold start: import of functions/*/app.py + first invocation, medians of "
        f"{result['repeats']} processes ({result['invoke_repeats']} invoking)\n"
        "ratios to the baseline's import, and to its import + first invocation",
        fontsize=10,
    )
    ax.tick_params(axis="x", labelsize=8)
    top = max(*(i + f for i, f in zip(imports, firsts, strict=True)), *totals)
    ax.set_ylim(0, top * 1.35)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
