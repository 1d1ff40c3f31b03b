"""`make load`: the market scenario (locustfile.py) run headless against a URL, then the
checks, then a report: bench-results/load/<label>.md beside Locust's CSV files.

    .venv/bin/python -m tests.load.run --url http://127.0.0.1:3000 --users 20 [--duration 60s]
        [--spawn-rate 2] [--label NAME] [--stack-checks auto|on|off]

Users arrive at --spawn-rate a second, then all of them play for --duration: Locust runs
for USERS/SPAWN_RATE seconds plus that, and its figures cover both (the arrivals' signups
included, so nothing that failed while they came is left out).

The admin the scenario needs (products, inspections, disputes, coupons) comes from
GM_LOAD_ADMIN_EMAIL / GM_LOAD_ADMIN_PASSWORD. Without them, against the local stack, this
script signs up a fresh account, has `giftmarket admin grant` make it an admin, and revokes it
at the end; against any other URL the run trades the stage's existing products and skips
the admin's steps. The database checks run when the URL is on this machine (`auto`), on the
`run` profile's primary as giftmarket_local configures it (GM_LOCAL_DIR, GM_RUN_*_PORT).

Exits 1 when a check fails (Locust's own failures are reported, not fatal: a load test that
overloads a stage is still a measurement), 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.load.checks import Check, api_checks, stack_checks
from tests.load.scenario import LOAD_EMAIL_DOMAIN, Call, UrllibSend, read_journal

from giftmarket_local.stack import REPO_ROOT, StackConfig

OUT = REPO_ROOT / "bench-results" / "load"
LOCUST = REPO_ROOT / ".local" / "venvs" / "load" / "bin" / "locust"
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Route:
    method: str
    name: str
    requests: int
    failures: int
    p50: str
    p95: str
    p99: str
    max_ms: str
    rps: float


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")


def seconds(duration: str) -> int:
    """`90`, `60s`, `5m`, `1h30m` (Locust's own --run-time forms) in seconds."""
    match = _DURATION.fullmatch(duration.strip())
    if not duration.strip() or match is None:
        raise ValueError(f"a duration is like 90, 60s, 5m or 1h30m, not {duration!r}")
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def run_seconds(users: int, spawn_rate: float, duration: str) -> int:
    """Locust's --run-time: the arrivals (a default of 2 a second: each signup hashes a
    password with argon2id, and 10 a second swamped `make run` on 2 shared cores), then
    `duration` with every user."""
    return math.ceil(users / spawn_rate) + seconds(duration)


def read_stats(path: Path) -> list[Route]:
    """Locust's _stats.csv: one row per (method, route), then the Aggregated row."""
    with path.open(newline="") as f:
        return [
            Route(
                method=row["Type"],
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p50=row["50%"],
                p95=row["95%"],
                p99=row["99%"],
                max_ms=str(round(float(row["Max Response Time"]))),
                rps=float(row["Requests/s"]),
            )
            for row in csv.DictReader(f)
        ]


def read_failures(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class LocalAdmin:
    """A fresh admin for one run on the local stack, granted and revoked by the operator's
    CLI as PRODUCT.md has it (the CLI finds the stack from its stack.json)."""

    def __init__(self, base_url: str) -> None:
        self.email = f"load-admin-{uuid.uuid4().hex[:12]}@{LOAD_EMAIL_DOMAIN}"
        self.password = secrets.token_urlsafe(18)
        send = UrllibSend(base_url)
        body = {"email": self.email, "password": self.password, "nickname": "load admin"}
        reply = send(Call("POST", "/api/auth/signup", json=body))
        if reply.status != 201:
            raise RuntimeError(f"signing up the run's admin answered {reply.status}: {reply.body}")
        self._cli("grant")

    def _cli(self, action: str) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "giftmarket.cli",
                "admin",
                action,
                self.email,
                "--by",
                "make load",
            ],
            check=True,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    def revoke(self) -> None:
        self._cli("revoke")


def run_locust(
    url: str,
    users: int,
    spawn_rate: float,
    run_seconds: int,
    prefix: Path,
    journal: Path,
    admin: tuple[str, str] | None,
) -> int:
    if not LOCUST.exists():
        raise SystemExit(
            f"{LOCUST} missing: run infra/local/bootstrap.sh --with-load (make load does)"
        )
    env = {
        **os.environ,
        # The scenario is imported as tests.load.scenario; nothing of the project's venv.
        "PYTHONPATH": str(REPO_ROOT),
        "GM_LOAD_JOURNAL": str(journal),
        "GM_LOAD_RUN_ID": prefix.name + "-" + uuid.uuid4().hex[:6],
    }
    classes = ["VisitorUser", "BuyerUser", "SellerUser"]
    if admin is not None:
        env["GM_LOAD_ADMIN_EMAIL"], env["GM_LOAD_ADMIN_PASSWORD"] = admin
        classes.append("OperatorUser")
    argv = [
        str(LOCUST),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        f"{run_seconds}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        *classes,
    ]
    return subprocess.run(argv, env=env, cwd=REPO_ROOT, check=False).returncode


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "n/a"


def render(
    *,
    args: argparse.Namespace,
    routes: Sequence[Route],
    failures: Sequence[dict[str, str]],
    journal: Sequence[dict[str, Any]],
    checks: Sequence[Check],
    notes: Sequence[str],
    began: str,
    load_before: str,
    load_after: str,
    locust_status: int,
) -> str:
    conflicts: list[Any] = next((e["counts"] for e in journal if e.get("kind") == "conflicts"), [])
    lines = [
        f"# Load run `{args.label}`: {args.users} users against {args.url}",
        "",
        f"- started {began}: {args.users} users arriving at {args.spawn_rate:g}/s, then"
        f" {args.duration} with all of them ({args.run_seconds} s in all; the figures cover"
        " the arrivals and every user's signup too)",
        f"- `uptime` before: `{load_before}`",
        f"- `uptime` after: `{load_after}`",
        f"- locust exit status {locust_status} (1 when any request failed)",
        *(f"- {note}" for note in notes),
        "",
        "## Per route (ms; Locust rounds times above 100 ms to 2 significant digits)",
        "",
        "| method | route | requests | failures | p50 | p95 | p99 | max | req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in routes:
        name = f"**{r.name}**" if r.name == "Aggregated" else f"`{r.name}`"
        lines.append(
            f"| {r.method} | {name} | {r.requests} | {r.failures} | {r.p50} | {r.p95} | {r.p99}"
            f" | {r.max_ms} | {r.rps:.1f} |"
        )
    lines += ["", "## The market's answers (409s counted as answered, not failed)", ""]
    if conflicts:
        lines += ["| method | route | code | count |", "|---|---|---|---:|"]
        lines += [f"| {m} | `{n}` | {code} | {count} |" for m, n, code, count in conflicts]
    else:
        lines.append("none")
    lines += ["", "## Failures", ""]
    if failures:
        lines += ["| method | route | error | count |", "|---|---|---|---:|"]
        lines += [
            f"| {f['Method']} | `{f['Name']}` | {f['Error'][:160]} | {f['Occurrences']} |"
            for f in failures
        ]
    else:
        lines.append("none")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in checks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the API's base URL")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", default="60s", help="with every user: 90, 60s, 5m, 1h30m")
    parser.add_argument("--spawn-rate", type=float, default=2.0, help="users arriving a second")
    parser.add_argument("--label", default=None, help="report name (default u<USERS>)")
    parser.add_argument("--stack-checks", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")
    if args.spawn_rate <= 0:
        parser.error("--spawn-rate must be positive")
    try:
        args.run_seconds = run_seconds(args.users, args.spawn_rate, args.duration)
    except ValueError as exc:
        parser.error(str(exc))
    args.label = args.label or f"u{args.users}"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.label):
        parser.error("--label: letters, digits, '.', '_' and '-' only")
    local = urlparse(args.url).hostname in LOOPBACK
    stack = args.stack_checks == "on" or (args.stack_checks == "auto" and local)

    OUT.mkdir(parents=True, exist_ok=True)
    prefix = OUT / args.label
    for stale in OUT.glob(f"{args.label}_*.csv"):
        stale.unlink()  # a run that dies must not be reported with the last one's figures
    notes: list[str] = []
    env_admin = os.environ.get("GM_LOAD_ADMIN_EMAIL"), os.environ.get("GM_LOAD_ADMIN_PASSWORD")
    local_admin: LocalAdmin | None = None
    admin: tuple[str, str] | None = None
    if env_admin[0] and env_admin[1]:
        admin = (env_admin[0], env_admin[1])
        notes.append(f"admin: {admin[0]} (GM_LOAD_ADMIN_EMAIL)")
    elif local:
        try:
            local_admin = LocalAdmin(args.url)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"load: no admin for the run: {exc}", file=sys.stderr)
            return 2
        admin = (local_admin.email, local_admin.password)
        notes.append("admin: a fresh account granted by `giftmarket admin grant`, revoked after")

    began = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="gm-load-") as tmp:
        # Bearer tokens: kept in a temporary folder, gone with it.
        journal_path = Path(tmp) / "journal.jsonl"
        try:
            status = run_locust(
                args.url, args.users, args.spawn_rate, args.run_seconds, prefix, journal_path, admin
            )
            load_after = uptime()
            journal = read_journal(journal_path)
            setup = next((e for e in journal if e.get("kind") == "setup"), None)
            notes.append(f"setup: {setup['note'] if setup else 'did not finish (see above)'}")
            started = time.monotonic()
            checks = api_checks(UrllibSend(args.url), journal)
            if stack:
                checks += stack_checks(StackConfig.for_profile("run").app_settings())
            else:
                notes.append("database checks: skipped (not the local stack)")
            notes.append(f"checks took {time.monotonic() - started:.1f} s after the run")
        finally:
            if local_admin is not None:
                local_admin.revoke()

    stats_csv = prefix.with_name(prefix.name + "_stats.csv")
    if not stats_csv.exists():
        print(f"load: Locust wrote no {stats_csv.name} (exit status {status})", file=sys.stderr)
        return 2
    report = render(
        args=args,
        routes=read_stats(stats_csv),
        failures=read_failures(prefix.with_name(prefix.name + "_failures.csv")),
        journal=journal,
        checks=checks,
        notes=notes,
        began=began,
        load_before=load_before,
        load_after=load_after,
        locust_status=status,
    )
    md = prefix.with_name(f"{prefix.name}.md")
    md.write_text(report)
    print(report)
    print(f"report: {md.relative_to(REPO_ROOT)}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
