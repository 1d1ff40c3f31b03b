"""One report of every benchmark's figures: bench-results/report.md and results.json.

`make bench` runs it after the benchmarks; it only reads their JSON files (a benchmark not
run shows as such), so it can also be run alone after any one of them. Each figure sits
beside its goal and beside an anchor: what a published system or the machine's own floor
measured for the same thing.

Run: .venv/bin/python tests/benchmarks/report.py
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchcommon import OUT

Row = tuple[str, str, str, str]  # figure, measured, goal (met?), anchor

ANCHOR_SPRING = "Spring + Redis CQRS read model: 19 → 14 ms per query"
ANCHOR_COMMAND = "the same write-up: 90–130 ms per command"
ANCHOR_SQS = "published SQS → Lambda delivery: p50 16 / p99 105 ms (standard), 28 / 645 ms (FIFO)"


def load(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def read_models(r: dict[str, Any]) -> list[Row]:
    latency = r["latency"]
    floor = latency["redis_get_floor"]
    handler_floor = latency["handler_floors"]["handler_404_no_store"]
    rows: list[Row] = [
        (
            "Redis GET on loopback (the floor)",
            f"p50 {floor['p50_ms']} / p99 {floor['p99_ms']} ms",
            "",
            "the floor of any Redis read here",
        ),
        (
            "query handler, a request touching no store",
            f"p50 {handler_floor['p50_ms']} / p99 {handler_floor['p99_ms']} ms",
            "",
            "JWT, FastAPI, Mangum, Powertools: in every answer",
        ),
    ]
    near = latency.get("near_floor")
    if near:
        rows.append(
            (
                "product_detail via the handler against the floor (no-store answer + Redis GET)",
                f"p50 {near['handler_p50_ms']} vs {near['floor_p50_ms']} ms: "
                f"{near['over_floor']}× the floor",
                f"≤ {near['goal_over_floor']:g}×: {verdict(near['met'])}",
                "",
            )
        )
    for name, t in latency["routes"].items():
        redis, sql = t["redis_handler"], t["sql_handler"]
        ratio = t["ratio_sql_to_redis"]
        goal = ""
        if name in latency["goals"]:
            g = latency["goals"][name]
            goal = (
                f"≥ {g['ratio_goal']:g}× and p99 ≤ {g['handler_p99_goal_ms']:g} ms: "
                f"{verdict(g['met'])}"
            )
        rows.append(
            (
                f"{name}: read model vs SQL on the replica, via the handler",
                f"p50 {redis['p50_ms']} vs {sql['p50_ms']} ms, p99 {redis['p99_ms']} vs "
                f"{sql['p99_ms']} ms; ratio {ratio['handler']['p50_ms']}× "
                f"(raw reads {ratio['raw']['p50_ms']}×)",
                goal,
                ANCHOR_SPRING,
            )
        )
    rebuild = r["rebuild"]
    measured = f"{rebuild['rows_per_second_best']:,} rows/s (best of {len(rebuild['runs'])})"
    scripts = rebuild.get("script_seconds_server")
    if scripts:
        # What bounds it: Redis runs the apply script (one thread) this share of the time.
        busy = [s / run["seconds"] for s, run in zip(scripts, rebuild["runs"], strict=True)]
        measured += "; Redis in the apply script " + " / ".join(f"{b:.0%}" for b in busy)
        measured += " of the wall time"
    rows.append(
        (
            f"rebuild of {rebuild['runs'][0]['total_rows']:,} rows",
            measured,
            f"≥ {rebuild['goal_rows_per_second']:,} rows/s: {verdict(rebuild['met'])}",
            "",
        )
    )
    per_entity = r["redis_memory"]["bytes_per_entity"]
    memory = ", ".join(f"{k} {v}" for k, v in per_entity.items())
    rows.append(("Redis memory per entity (bytes)", memory, "", ""))
    return rows + read_models_by_size(r)


def passes_of(entry: dict[str, Any]) -> str:
    """The read model's share of a size's samples: it answers them `redis_passes` times."""
    passes = entry.get("redis_passes", 1)
    return f", the read model's {passes} times over" if passes > 1 else ""


def read_models_by_size(r: dict[str, Any], route: str = "product_detail") -> list[Row]:
    """The handler's figures against data size: `route` at each size, then how flat the
    read model's p99 is across sizes, per route."""
    by_size, goals = r.get("by_size"), r.get("by_size_goals")
    if not by_size or not goals:
        return []
    rows: list[Row] = []
    for size in sorted(by_size, key=int):
        entry = by_size[size]
        t = entry["routes"][route]
        p99_goal = goals["routes"][route]["p99_goal_ms"]
        goal = f"read model p99 ≤ {p99_goal:g} ms: {verdict(t['redis_p99_ms'] <= p99_goal)}"
        if int(size) == goals["main"]:
            ratio_goal = goals["routes"][route]["ratio_goal"]
            goal += f"; ≥ {ratio_goal:g}× (p50): {verdict(t['ratio_p50'] >= ratio_goal)}"
        seconds = entry["seconds"]
        rows.append(
            (
                f"{route} at {int(size):,} orders: read model vs SQL, via the handler "
                f"({t['samples']} samples{passes_of(entry)})",
                f"p50 {t['redis_p50_ms']} vs {t['sql_p50_ms']} ms, p99 {t['redis_p99_ms']} vs "
                f"{t['sql_p99_ms']} ms; ratio {t['ratio_p50']}× (p99: {t['ratio_p99']}×); "
                f"seed {seconds['seed']:g} s, rebuild {seconds['rebuild']:g} s, Redis "
                f"{entry['redis_used_memory_bytes'] / 2**20:,.0f} MiB",
                goal,
                "",
            )
        )
    sizes = goals["sizes"]
    flat = goals["routes"]
    figures = ", ".join(
        f"{name} {g['flatness_p99_largest_over_smallest']}×" for name, g in flat.items()
    )
    met = all(g["flat"] for g in flat.values())
    goal_flat = next(iter(flat.values()))["flatness_goal"]
    items = {
        name: [by_size[str(size)]["routes"][name].get("items_per_answer") for size in sizes]
        for name in flat
    }
    uneven = {name: n for name, n in items.items() if None not in n and len(set(n)) > 1}
    if uneven:
        # A page costs its items: answers shorter at one size are cheaper for that alone.
        figures += "; items per answer " + ", ".join(
            f"{name} {' / '.join(f'{v:g}' for v in n)}" for name, n in uneven.items()
        )
    spread = {
        name: [by_size[str(size)]["routes"][name].get("redis_p99_ms_by_pass") for size in sizes]
        for name in flat
    }
    if all(all(p99s) for p99s in spread.values()):
        # One pass's p99 each: how far a single pass would have moved the figure.
        figures += "; each pass's p99 " + ", ".join(
            f"{name} " + " / ".join(f"{min(p):g}–{max(p):g}" for p in p99s if p)
            for name, p99s in spread.items()
        )
    floors = [by_size[str(size)].get("floors_p99_ms") for size in sizes]
    if all(floors):
        # The machine's own p99 at each size (Redis GET, no-store answer): load, not data.
        figures += "; floors' p99 (GET / no-store answer): " + ", ".join(
            f"{f['redis_get']:g} / {f['handler_no_store']:g} ms" for f in floors if f
        )
    rows.append(
        (
            f"read model flat in data size: handler p99 at {sizes[-1]:,} / at {sizes[0]:,} orders",
            figures,
            f"≤ {goal_flat:g}× (every route): {verdict(met)}",
            "",
        )
    )
    every = all(g["p99_met_at_every_size"] for g in flat.values())
    p99s = "; ".join(
        f"{name} {' / '.join(f'{v:g}' for v in g['redis_p99_ms'].values())}"
        for name, g in flat.items()
    )
    rows.append(
        (
            "read model handler p99 at "
            + " / ".join(f"{size:,}" for size in sizes)
            + " orders (ms)",
            p99s,
            f"≤ {flat[route]['p99_goal_ms']:g} ms (every route, every size): {verdict(every)}",
            "",
        )
    )
    return rows


def projection_lag(r: dict[str, Any]) -> list[Row]:
    goal = r["goal"]
    rows: list[Row] = []
    # Older results have one mode, the in-request fast path, at the top level.
    modes = r.get("modes", {"in_request": r})
    for mode in ("relay_loop", "in_request"):
        if mode not in modes:
            continue
        m = modes[mode]
        lag, in_command = m["commit_to_visible"], m.get("in_command_commit_to_sent")
        who = {
            "relay_loop": "the relay's loop publishes (the default)",
            "in_request": "the command publishes before it answers (before)",
        }[mode]
        rows.append(
            (
                f"projection lag, commit → visible in Redis, {who} ({r['samples']} samples)",
                f"p50 {lag['p50_ms']} / p99 {lag['p99_ms']} ms (max {lag['max_ms']})"
                + (f"; in the command p50 {in_command['p50_ms']} ms" if in_command else ""),
                f"p50 ≤ {goal['p50_ms']:g}, p99 ≤ {goal['p99_ms']:g} ms: "
                f"{verdict(m['meets_goal'])}",
                ANCHOR_SQS,
            )
        )
    return rows


def relay(r: dict[str, Any]) -> list[Row]:
    ceiling = max(c["events_per_s"] for c in r["localstack_ceiling_without_database"])
    runs = r["runs"]
    goal = f"≥ {r['goal_events_per_s']:,}/s"
    rows: list[Row] = [
        (
            f"outbox relay ({r['events']:,} events), {runs['as_configured']['lanes']} lanes",
            f"{r['events_per_s']:,} events/s; 1 lane: {runs['one_lane']['events_per_s']:,}/s"
            f" ({r['lanes_speedup_on_localstack']}×)",
            # The goal is against the stand-in (below): LocalStack bounds this one.
            "",
            f"LocalStack alone accepts {ceiling:,}/s here: the bound on this machine",
        )
    ]
    if "stand_in_sqs" in runs:
        overlap = ""
        if "stand_in_sqs_no_overlap" in runs:
            overlap = (
                f"; one batch at a time: {runs['stand_in_sqs_no_overlap']['events_per_s']:,}/s"
                f" (overlap {r['overlap_speedup_on_stand_in']}×)"
            )
        rows.append(
            (
                f"the relay against a stand-in SQS ({r['stand_in_rtt_ms']:.0f} ms a batch),"
                f" {r.get('relay_in_flight', 1)} batches in flight",
                f"{runs['stand_in_sqs']['events_per_s']:,} events/s on"
                f" {runs['stand_in_sqs']['lanes']} lanes;"
                f" 1 lane: {runs['stand_in_sqs_one_lane']['events_per_s']:,}/s{overlap}",
                f"{goal}: {verdict(r['stand_in_meets_goal'])}",
                "the relay's own ceiling, LocalStack out of the way (an assumed round trip)",
            )
        )
    if "stand_in_ceiling" in r:
        c = r["stand_in_ceiling"]
        bounds = ", ".join(
            f"{name.replace('_', ' ')} {v:,}/s" for name, v in c["events_per_s"].items()
        )
        rows.append(
            (
                "what bounds it (each alone, as events/s)",
                f"{bounds}; next: **{c['next_bound'].replace('_', ' ')}**",
                "",
                f"{c['cpu_us_per_event']} µs CPU an event (one core: the GIL), claim"
                f" {c['claim_ms_per_batch']} ms and UPDATE + commit"
                f" {c['mark_and_commit_ms_per_batch']} ms a batch, {c['events_per_call']}"
                f" events a call of {c['call_ms']} ms",
            )
        )
    return rows


def buy_now(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    goal = r.get("goal", {"p50_ms_at_1": 5.0, "orders_per_s_at_8": 300.0})
    starts = r.get("mode_starts", {})
    for path, levels in r["levels"].items():
        figures = ", ".join(f"{x['clients']}: {x['orders_per_s']}/s" for x in levels)
        p50s = ", ".join(f"{x['p50_ms']}" for x in levels)
        if path in starts:
            start = starts[path]
            p50s += (
                f" (started after {start['replica_catch_up_s']} s of replica catch-up,"
                f" load {start['load_1m']})"
            )
        by_clients = {x["clients"]: x for x in levels}
        one, eight = by_clients.get(1), by_clients.get(8)
        met = (
            one is not None
            and eight is not None
            and one["p50_ms"] <= goal["p50_ms_at_1"]
            and eight["orders_per_s"] >= goal["orders_per_s_at_8"]
        )
        rows.append(
            (
                f"buy-now through the {path.replace('_', ' ')} (clients: orders/s)",
                f"{figures}; p50 {p50s} ms",
                f"p50 ≤ {goal['p50_ms_at_1']:g} ms at 1, ≥ {goal['orders_per_s_at_8']:g}/s"
                f" at 8: {verdict(met)}",
                ANCHOR_COMMAND,
            )
        )
        if eight is not None and "cpu_ms_per_order" in eight:
            rows.append(cpu_per_order(path, eight["cpu_ms_per_order"], r.get("cpu_cores")))
    # The command with nothing sent (no_queue) does strictly less than with the relay's
    # loop: a goal it misses in the same run is out of this machine's reach.
    floor = {x["clients"]: x for x in r["levels"].get("executor, no_queue", [])}
    if 1 in floor and 8 in floor:
        p50_ok = floor[1]["p50_ms"] <= goal["p50_ms_at_1"]
        rate_ok = floor[8]["orders_per_s"] >= goal["orders_per_s_at_8"]
        rows.append(
            (
                "the goals against the floor (nothing sent, same run)",
                f"p50 {floor[1]['p50_ms']} ms at 1, {floor[8]['orders_per_s']}/s at 8",
                f"the floor itself: p50 ≤ {goal['p50_ms_at_1']:g} ms {verdict(p50_ok)}, "
                f"≥ {goal['orders_per_s_at_8']:g}/s {verdict(rate_ok)}",
                "a goal the floor misses cannot be met with events flowing on this machine",
            )
        )
    checks = r["checks"]
    rows.append(
        (
            "double-sells, ledger",
            f"asks sold twice {checks['asks_sold_twice']}, ledger sum {checks['ledger_sum']}",
            f"0 and 0: {verdict(checks['asks_sold_twice'] == 0 and checks['ledger_sum'] == 0)}",
            "",
        )
    )
    if "relay_loop" in r:
        loop = r["relay_loop"]
        left = checks.get("unpublished_after_relay_loop")
        rows.append(
            (
                "the relay's loop during the relay_loop levels (events flowing to SQS)",
                f"{loop['published']:,} events in {loop['batches']:,} batches over"
                f" {loop['polls']:,} polls; drained {loop['drained_after_load_s']} s after the"
                f" load; unpublished after it: {left}",
                f"every event published: {verdict(left == 0)}",
                "",
            )
        )
    return rows


def cpu_per_order(path: str, cpu_ms: dict[str, float], cores: int | None) -> Row:
    """Where an order's CPU went at 8 clients, and the rate the machine's cores allow."""
    total = sum(cpu_ms.values())
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu_ms.items(), key=lambda kv: -kv[1]))
    bound = f"; {cores} cores allow ≤ {cores * 1000 / total:,.0f} orders/s" if cores else ""
    return (
        f"  CPU per order at 8 clients, {path.replace('_', ' ')} (ms)",
        f"{total:.2f} ms: {parts}{bound}",
        "",
        "servers over the whole level (the clients' start-up too), clients from the start line",
    )


def cores_bound(us_per_order: dict[str, float], orders: int, cores: int | None) -> str:
    """The least time that CPU takes on the machine's cores (Python and both database
    servers share them here), as a phrase to append; empty without the core count."""
    if not cores:
        return ""
    least = sum(us_per_order.values()) * orders / 1e6 / cores
    return f"; its CPU alone needs ≥ {least:.1f} s of the {cores} cores"


def settlement(r: dict[str, Any]) -> list[Row]:
    cpu = r.get("cpu_seconds", {})
    per_order = r.get("cpu_us_per_order", {})
    cores = r.get("cpu_cores")
    spent = ", ".join(
        f"{k} {v} s" + (f" ({per_order[k]} µs/order)" if k in per_order else "")
        for k, v in cpu.items()
    )
    load = r.get("load_average_1m_before_after")
    rows = [
        (
            f"settlement of {r['orders']:,} orders of {r['sellers']:,} sellers",
            f"{r['seconds']} s ({r['orders_per_s']:,} orders/s); CPU: {spent}"
            + cores_bound(per_order, r["orders"], cores)
            + (f"; load {load[0]} → {load[1]} on {cores} cores" if load else ""),
            f"< {r['goal_seconds']:g} s: {verdict(r['meets_goal'])}",
            "",
        )
    ]
    # The job's UPDATE alone, with the orders' indexes and with none: the floor (no goal).
    for variant, alone in r.get("update_alone", {}).items():
        us = alone["cpu_us_per_order"]
        rows.append(
            (
                f"its per-seller UPDATE alone, {variant.replace('_', ' ')}",
                f"{alone['seconds_until_replicated']} s to the replica"
                f" ({alone['seconds_primary']} s on the primary); CPU µs/order: "
                + ", ".join(f"{k} {v}" for k, v in us.items())
                + cores_bound(us, alone["orders"], cores),
                "(floor, no goal)",
                "",
            )
        )
    return rows


def purge(r: dict[str, Any]) -> list[Row]:
    return [
        (
            f"buy-now p99 while the purge of {r['rows']:,} rows runs, round {i + 1}",
            f"{x['p99_during_ms']} ms against {x['p99_quiet_ms']} ms stopped: {x['ratio']}x",
            f"<= {r['goal_ratio']}x in one round: {verdict(r['meets_goal'])}"
            if i == len(r["rounds"]) - 1
            else "",
            "",
        )
        for i, x in enumerate(r["rounds"])
    ]


def image_janitor(r: dict[str, Any]) -> list[Row]:
    return [
        (
            f"image cleanup, {r['orphans']:,} orphans ({case.replace('_', ' ')})",
            f"{r['seconds'][case]} s ({r['objects_per_s'][case]:,} objects/s)",
            "",
            "",
        )
        for case in r["seconds"]
    ]


def replication_lag(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "replication lag, commit → applied on the replica",
            f"p50 {r['p50_ms']} / p99 {r['p99_ms']} ms",
            "",
            "",
        )
    ]


def cold_start(r: dict[str, Any]) -> list[Row]:
    """Per handler, its import and, beside it, its import + first invocation (the goal's
    figure for the two API handlers: work deferred from import to the first request is
    moved, not saved); then, for those two, an emulated SnapStart restore."""
    base = r["baseline"]
    if "goal_handlers" not in r:  # a result of an older run: its own goal, not issue 18's
        return [("cold start (an older run's result)", f"{r.get('worst_ratio')}×", "", "")]
    base_cold = base["import_plus_first_median_ms"]
    measured = {
        name: r["measured_before"].get(f"{name}_import_plus_first_ratio") for name in r["handlers"]
    }
    rows: list[Row] = [
        (
            "bare FastAPI + Mangum import (the baseline)",
            f"median {base['median_ms']} / p90 {base['p90_ms']} ms",
            "",
            "the least any HTTP handler here imports",
        ),
        (
            "bare FastAPI + Mangum import + first invocation (the baseline's cold start; "
            f"{base['first_invocation_event']}, {r['invoke_repeats']} processes)",
            f"median {base_cold} / p90 {base['import_plus_first_p90_ms']} ms (first "
            f"invocation median {base['first_invocation_median_ms']} ms)",
            "",
            "a Lambda cold start a caller waits for is init (import) + first invocation",
        ),
    ]
    floor = r.get("floor")  # absent from older runs' results
    if floor:
        parts = floor["importtime"]["beyond_baseline_own_ms_by_package"]
        rows.append(
            (
                "the floor: the baseline in Powertools' Logger, Tracer and Metrics, its route "
                "running SQLAlchemy + PyMySQL and redis-py over TLS, no giftmarket code "
                f"(cold_start_floor.py; {floor['first_invocation_event']}: "
                f"{floor['first_invocation_outcome']})",
                f"import + first invocation median {floor['import_plus_first_median_ms']} ms: "
                f"{floor['import_plus_first_ratio_to_baseline']}× the baseline's; its imports "
                "beyond the baseline's (ms): "
                + ", ".join(f"{package} {ms:g}" for package, ms in list(parts.items())[:6]),
                f"leaves room for ≤ {r['goal_ratio']:g}×: "
                + ("yes" if floor["leaves_room_for_goal"] else "**no**, the stack's parts alone"),
                "what the stack costs whoever writes the code; a handler's ratio to it is what "
                "the project's own code adds",
            )
        )
    for name, h in r["handlers"].items():
        beyond = h["importtime"]["beyond_baseline_own_ms_by_package"]
        costs = ", ".join(f"{package} {ms:g}" for package, ms in list(beyond.items())[:4])
        first = h.get("first_invocation_importtime")  # absent from older runs' results
        first_costs = (
            ""
            if not first
            else f"; its imports: not attributed ({first['unreliable']})"
            if first.get("unreliable")
            else f"; its imports (-X importtime, one more process) "
            f"{first['beyond_baseline_total_own_ms']:g} ms: "
            + ", ".join(
                f"{package} {ms:g}"
                for package, ms in list(first["beyond_baseline_own_ms_by_package"].items())[:6]
            )
        )
        rows.append(
            (
                f"import of functions/{name}/app.py ({r['repeats']} fresh processes)",
                f"median {h['median_ms']} / p90 {h['p90_ms']} ms: {h['ratio_to_baseline']}× "
                f"the baseline's import; beyond it (ms, -X importtime): {costs}",
                f"earlier goal ≤ {r['import_goal_ratio']:g}×: {verdict(h['meets_import_goal'])}",
                f"bare FastAPI + Mangum import (the baseline): {base['median_ms']} ms",
            )
        )
        rows.append(
            (
                f"import + first invocation of functions/{name}/app.py "
                f"({h['first_invocation_event']}, stores unreachable: "
                f"{h['first_invocation_outcome']}; {h['processes_invoking']} processes)",
                f"median {h['import_plus_first_median_ms']} ms: "
                f"{h['import_plus_first_ratio_to_baseline']}× the baseline's"
                + (
                    f", {to_floor}× the floor's"
                    if (to_floor := h.get("import_plus_first_ratio_to_floor"))
                    else ""
                )
                + "; first "
                f"invocation median {h['first_invocation_median_ms']} / p90 "
                f"{h['first_invocation_p90_ms']} ms{first_costs}; warm (second) "
                f"{h['warm_invocation_median_ms']} ms",
                f"≤ {r['goal_ratio']:g}×: {verdict(h['meets_goal'])}" if h["has_goal"] else "",
                f"baseline import + first invocation {base_cold} ms"
                + (f"; issue 18 measured {before}×" if (before := measured.get(name)) else ""),
            )
        )
        snap = h.get("snapstart")
        if snap:
            rows.append(
                (
                    f"SnapStart, emulated, functions/{name}/app.py: after-restore hooks + "
                    f"first invocation ({snap['processes']} processes; "
                    f"{snap['first_invocation_outcome']})",
                    f"median {snap['restore_to_first_answer_median_ms']} / p90 "
                    f"{snap['restore_to_first_answer_p90_ms']} ms: "
                    f"{snap['restore_to_first_answer_ratio_to_baseline_cold']}× the baseline's "
                    f"cold start, plus Lambda's restore of the microVM; init with the "
                    f"before-snapshot hooks {snap['init_with_before_snapshot_median_ms']} ms "
                    f"once per published version ({snap['modules_in_snapshot']} modules, "
                    f"{snap['socket_connects_before_snapshot']} connects)",
                    "",
                    f"warm invocation {snap['warm_invocation_median_ms']} ms",
                )
            )
    return rows


EXTRA_PLOTS = {"read_models": (OUT / "read_models_by_size.png",)}

SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], list[Row]]]] = [
    ("Queries: read models against SQL", "read_models", read_models),
    ("Projection lag", "projection_lag", projection_lag),
    ("Outbox relay", "relay", relay),
    ("Commands", "buy_now", buy_now),
    ("Settlement", "settlement", settlement),
    ("Purge under load", "purge", purge),
    ("Orphaned-image cleanup", "image_janitor", image_janitor),
    ("Replication", "replication_lag", replication_lag),
    ("Cold start: import + first invocation, SnapStart", "cold_start", cold_start),
]


def main() -> Path:
    lines = [
        "# giftmarket benchmarks",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()}). Every process of the "
        "stack (MariaDB primary and replica, Redis, LocalStack) shares this machine's cores "
        "with the benchmark: figures are of this machine, ratios are the portable part.",
        "",
    ]
    results: dict[str, Any] = {}
    for title, name, rows_of in SECTIONS:
        lines += [f"## {title}", ""]
        result = load(name)
        if result is None:
            lines += [f"Not run: no bench-results/{name}.json.", ""]
            continue
        results[name] = result
        lines += ["| figure | measured | goal | anchor |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in rows_of(result)]
        for plot in (OUT / f"{name}.png", *EXTRA_PLOTS.get(name, ())):
            if plot.exists():
                lines += ["", f"![{plot.stem}]({plot.name})"]
        lines.append("")
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = OUT / "report.md"
    report.write_text("\n".join(lines))
    return report


if __name__ == "__main__":
    print(main())
