"""Orphaned-image cleanup on LocalStack S3: 10^4 orphans beside 10^4 live images.

One bucket of its own is seeded behind the application's back (multi-row INSERTs on the
primary, PutObject from 16 threads) with LIVE images of open asks, each with its object.
Then, for each kind of orphan in turn, ORPHANS fresh ones are added and cleaned:

- abandoned uploads: PENDING rows two days old, each with its object;
- untracked objects: objects under images/ that no row names.

`clean_images` (jobs/images.py) runs as the scheduled function does, with its clock a day and
an hour ahead (LocalStack stamps each object with the time of its upload, and a run may
not be as of a future instant, so the run's "now" moves instead). It lists every object
under images/, so the live ones count in its work. Every run is checked: each orphan gone
from S3 and, if it had a row, DELETED with its ImageDeleted in the outbox; each live image
untouched. Hooks on the engine and the S3 client say where the wall time goes (they cost a
few dozen timer calls a run), and a smaller run under cProfile shows the CPU side.
Writes bench-results/image_janitor.{json,png}.

Run: make bench   (or .venv/bin/python tests/benchmarks/bench_image_janitor.py [orphans])
"""

from __future__ import annotations

import cProfile
import dataclasses
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchcommon import (
    OUT,
    bench_settings,
    bench_stack,
    pyplot,
    seeded_ask,
    top_functions,
    write_asks,
    write_result,
)
from sqlalchemy import Engine, func, insert, select
from sqlalchemy import event as sa_event

from giftmarket.adapters import tables
from giftmarket.adapters.images import S3ImageStore, build_s3_client
from giftmarket.bootstrap import Container, bootstrap
from giftmarket.domain.ids import new_id
from giftmarket.domain.images import s3_key_for
from giftmarket.jobs.images import CleanupReport, clean_images
from giftmarket_local.stack import Stack

ORPHANS = 10_000
LIVE = 10_000
PROFILED_ORPHANS = 3_000
INSERT_CHUNK = 5_000
PUT_THREADS = 16
BODY = b"\x89PNG\r\n\x1a\n" + b"0" * 64


@dataclasses.dataclass
class Seeded:
    owner: str
    live_images: list[str]
    live_keys: list[str]


def seed_market(container: Container) -> Seeded:
    """One seller, one product and LIVE open asks with their images and vouchers (rows
    only)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    owner, product = new_id(), new_id()
    asks = [
        seeded_ask(
            seller=owner,
            product=product,
            price=5000,
            now=now,
            listed_at=now - timedelta(days=30),
            size_bytes=len(BODY),
        )
        for _ in range(LIVE)
    ]
    with container.database.writer.begin() as conn:
        conn.execute(
            insert(tables.users),
            {
                "id": owner,
                "email": f"{owner.lower()}@bench.local",
                "nickname": "bench",
                "password_hash": "x",
                "created_at": now,
                "updated_at": now,
            },
        )
        conn.execute(
            insert(tables.products),
            {
                "id": product,
                "name": "bench",
                "brand": "bench",
                "category": "coffee",
                "face_value": 5000,
                "created_at": now,
            },
        )
        for start in range(0, len(asks), INSERT_CHUNK):
            write_asks(conn, asks[start : start + INSERT_CHUNK])
    images = [image for image, _, _ in asks]
    return Seeded(owner, [str(i["id"]) for i in images], [str(i["s3_key"]) for i in images])


def abandoned_uploads(container: Container, owner: str, count: int) -> dict[str, str]:
    """`count` PENDING rows two days old: their keys by id (objects not yet put)."""
    created = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    rows = []
    for _ in range(count):
        image_id = new_id()
        rows.append(
            {
                "id": image_id,
                "owner_id": owner,
                "s3_key": s3_key_for(owner, image_id),
                "content_type": "image/png",
                "status": "PENDING",
                "created_at": created,
            }
        )
    with container.database.writer.begin() as conn:
        for start in range(0, len(rows), INSERT_CHUNK):
            conn.execute(insert(tables.images), rows[start : start + INSERT_CHUNK])
    return {str(row["id"]): str(row["s3_key"]) for row in rows}


def put_objects(s3: Any, bucket: str, keys: Sequence[str]) -> float:
    began = time.perf_counter()

    def put(chunk: Sequence[str]) -> None:
        for key in chunk:
            s3.put_object(Bucket=bucket, Key=key, Body=BODY, ContentType="image/png")

    lanes = [keys[n::PUT_THREADS] for n in range(PUT_THREADS)]
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(put, lanes))
    return time.perf_counter() - began


def listed_keys(s3: Any, bucket: str) -> set[str]:
    return {o.key for o in S3ImageStore(s3, bucket).list_objects("")}


class Phases:
    """Wall time by phase, from hooks on the writer engine (statements by kind, commits)
    and the S3 client (ListObjectsV2, DeleteObjects)."""

    def __init__(self, engine: Engine, s3: Any) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._engine, self._s3 = engine, s3
        self._local = threading.local()
        self._commit: Any = None

    @staticmethod
    def kind(statement: str) -> str:
        words = " ".join(statement.split()).upper()
        if words.startswith("UPDATE IMAGES"):
            return "sql_update_image_rows"
        if words.startswith("INSERT INTO OUTBOX"):
            return "sql_outbox_insert"
        if "FOR UPDATE" in words:
            return "sql_lock_image_rows"
        if "FROM SELL_BIDS" in words or "FROM ORDERS" in words:
            return "sql_usage_and_candidates"
        if words.startswith("SELECT IMAGES.S3_KEY"):
            return "sql_existing_keys"
        return "sql_other"

    def attach(self) -> Phases:
        sa_event.listen(self._engine, "before_cursor_execute", self._before)
        sa_event.listen(self._engine, "after_cursor_execute", self._after)
        dialect = self._engine.dialect
        original = dialect.do_commit

        def timed_commit(connection: Any) -> None:
            began = time.perf_counter()
            try:
                original(connection)
            finally:
                self._add("sql_commit", time.perf_counter() - began)

        setattr(dialect, "do_commit", timed_commit)  # noqa: B010 - undone by detach
        events = self._s3.meta.events
        for operation in ("ListObjectsV2", "DeleteObjects"):
            events.register(f"before-call.s3.{operation}", self._before_call)
            events.register(
                f"after-call.s3.{operation}",
                self._after_call(operation),
                unique_id=f"phases-{operation}",
            )
        return self

    def detach(self) -> None:
        sa_event.remove(self._engine, "before_cursor_execute", self._before)
        sa_event.remove(self._engine, "after_cursor_execute", self._after)
        del self._engine.dialect.do_commit
        events = self._s3.meta.events
        for operation in ("ListObjectsV2", "DeleteObjects"):
            events.unregister(f"before-call.s3.{operation}", self._before_call)
            events.unregister(f"after-call.s3.{operation}", unique_id=f"phases-{operation}")

    def table(self, seconds: float) -> dict[str, dict[str, float]]:
        rows = {
            phase: {
                "seconds": round(spent, 3),
                "share": round(spent / seconds, 3),
                "calls": self.calls[phase],
            }
            for phase, spent in sorted(self.seconds.items(), key=lambda kv: -kv[1])
        }
        rest = seconds - sum(self.seconds.values())
        rows["python_and_rest"] = {"seconds": round(rest, 3), "share": round(rest / seconds, 3)}
        return rows

    def _add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds
        self.calls[phase] += 1

    def _before(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self._local.statement = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self._add(self.kind(statement), time.perf_counter() - self._local.statement)

    def _before_call(self, **_: Any) -> None:
        self._local.call = time.perf_counter()

    def _after_call(self, operation: str) -> Any:
        def after(**_: Any) -> None:
            self._add(f"s3_{operation}", time.perf_counter() - self._local.call)

        return after


@contextmanager
def janitor_container(stack: Stack, bucket: str) -> Iterator[tuple[Container, Any]]:
    """The application's container on its own bucket, its clock a day and an hour ahead."""
    settings = bench_settings(stack, images_bucket=bucket, events_queue_url=None)
    s3 = build_s3_client(stack.config.region, stack.config.localstack_url)
    store = S3ImageStore(s3, bucket)
    ahead = timedelta(days=1, hours=1)
    context = dataclasses.replace(
        bootstrap(settings, images=store).command_context,
        clock=lambda: datetime.now(UTC) + ahead,
    )
    container = bootstrap(settings, images=store, command_context=context)
    s3.create_bucket(Bucket=bucket)
    try:
        yield container, s3
    finally:
        left = sorted(listed_keys(s3, bucket))
        for start in range(0, len(left), 1000):
            store.delete_objects(left[start : start + 1000])
        s3.delete_bucket(Bucket=bucket)
        container.close()


def verify(
    container: Container,
    s3: Any,
    bucket: str,
    report: CleanupReport,
    *,
    orphan_keys: Sequence[str],
    orphan_rows: Sequence[str],
    seeded: Seeded,
) -> dict[str, Any]:
    left = listed_keys(s3, bucket)
    i, o = tables.images, tables.outbox

    def statuses(conn: Any, ids: Sequence[str]) -> dict[str, int]:
        query = select(i.c.status, func.count()).where(i.c.id.in_(ids)).group_by(i.c.status)
        return {str(status): int(count) for status, count in conn.execute(query)}

    with container.database.writer.connect() as conn:
        live_rows = statuses(conn, seeded.live_images)
        orphan_statuses = statuses(conn, orphan_rows) if orphan_rows else {}
        deleted_events = conn.execute(
            select(func.count())
            .select_from(o)
            .where(o.c.event_type == "ImageDeleted", o.c.aggregate_id.in_(orphan_rows))
        ).scalar_one()
    checks = {
        "orphans_left_in_s3": len(set(orphan_keys) & left),
        "live_objects_left_in_s3": len(set(seeded.live_keys) & left),
        "live_rows_by_status": live_rows,
        "orphan_rows_by_status": orphan_statuses,
        "image_deleted_events_in_outbox": deleted_events,
        "report": report.summary(),
    }
    assert checks["orphans_left_in_s3"] == 0, checks
    assert checks["live_objects_left_in_s3"] == len(seeded.live_keys), checks
    assert live_rows == {"ATTACHED": len(seeded.live_images)}, checks
    assert orphan_statuses == ({"DELETED": len(orphan_rows)} if orphan_rows else {}), checks
    assert deleted_events == len(orphan_rows), checks
    assert report.deleted == len(orphan_keys) and report.failed == 0, checks
    return checks


def run(
    container: Container, s3: Any, seeded: Seeded, kind: str, orphans: int, how: str
) -> dict[str, Any]:
    """One cleanup of `orphans` fresh orphans of `kind` beside the live images."""
    bucket = container.settings.images_bucket
    rows: dict[str, str] = {}
    if kind == "abandoned_uploads":
        rows = abandoned_uploads(container, seeded.owner, orphans)
        keys = list(rows.values())
    else:
        keys = [f"images/{new_id()}/{new_id()}" for _ in range(orphans)]
    put_seconds = put_objects(s3, bucket, keys)
    hooks = Phases(container.database.writer, s3).attach() if how == "hooked" else None
    profiler = cProfile.Profile() if how == "profiled" else None
    if profiler is not None:
        profiler.enable()
    began = time.perf_counter()
    report = clean_images(
        container.unit_of_work,
        container.command_context,
        container.images,
        retries=container.settings.command_retries,
    )
    seconds = time.perf_counter() - began
    if profiler is not None:
        profiler.disable()
    if hooks is not None:
        hooks.detach()
    checks = verify(
        container, s3, bucket, report, orphan_keys=keys, orphan_rows=list(rows), seeded=seeded
    )
    result: dict[str, Any] = {
        "orphans": orphans,
        "live_images": len(seeded.live_images),
        "objects_listed": len(seeded.live_images) + orphans,
        "seconds": round(seconds, 3),
        "objects_per_s": round(orphans / seconds),
        "seeding_put_objects_seconds": round(put_seconds, 1),
        "checks": checks,
    }
    if hooks is not None:
        result["phases"] = hooks.table(seconds)
    if profiler is not None:
        result["profile_top_by_own_time"] = top_functions(profiler, seconds)
    print(f"{kind} ({how}): {orphans} in {seconds:.2f}s", file=sys.stderr)
    return result


def listing_by_parser(stack: Stack, bucket: str, rounds: int = 3) -> dict[str, Any]:
    """The live images listed with the application's client and with a plain boto3 one
    (botocore's default timestamp parser), alternately: seconds per listing, best of
    `rounds`, so the machine's other load weighs on both alike."""
    import boto3

    clients = {
        "application_client": build_s3_client(stack.config.region, stack.config.localstack_url),
        "botocore_default_parser": boto3.client(
            "s3", region_name=stack.config.region, endpoint_url=stack.config.localstack_url
        ),
    }
    best: dict[str, float] = {}
    objects = 0
    for _ in range(rounds):
        for name, client in clients.items():
            began = time.perf_counter()
            objects = len(listed_keys(client, bucket))
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - began)
    for client in clients.values():
        client.close()
    return {"objects": objects, "seconds_best_of_3": {k: round(v, 3) for k, v in best.items()}}


def main(orphans: int = ORPHANS) -> None:
    with bench_stack() as stack:
        bucket = f"bench-janitor-{uuid.uuid4().hex[:12]}"
        with janitor_container(stack, bucket) as (container, s3):
            seeded = seed_market(container)
            put_objects(s3, bucket, seeded.live_keys)
            listing = listing_by_parser(stack, bucket)
            runs = {
                kind: run(container, s3, seeded, kind, orphans, "hooked")
                for kind in ("abandoned_uploads", "untracked_objects")
            }
            runs["abandoned_uploads_under_cprofile"] = run(
                container,
                s3,
                seeded,
                "abandoned_uploads",
                min(orphans, PROFILED_ORPHANS),
                "profiled",
            )
        durable = stack.config.durable
    result = {
        "orphans": orphans,
        "live_images": LIVE,
        "durable": durable,
        "seconds": {k: runs[k]["seconds"] for k in ("abandoned_uploads", "untracked_objects")},
        "objects_per_s": {
            k: runs[k]["objects_per_s"] for k in ("abandoned_uploads", "untracked_objects")
        },
        "runs": runs,
        "listing_by_timestamp_parser": listing,
    }
    write_result("image_janitor", result)
    plot(result, OUT / "image_janitor.png")


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 4), width_ratios=(2, 2, 1, 1))
    for ax, kind in zip(axes[:2], ("abandoned_uploads", "untracked_objects"), strict=True):
        hooked = result["runs"][kind]
        phases = hooked["phases"]
        names = list(phases)
        ax.barh(names, [phases[p]["seconds"] for p in names], color="#3b7dd8")
        for y, p in enumerate(names):
            ax.text(phases[p]["seconds"], y, f" {phases[p]['share']:.0%}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlabel("seconds of the run's wall time")
        ax.set_title(f"{kind.replace('_', ' ')}: {hooked['orphans']} in {hooked['seconds']:.1f}s")
    bars = result["objects_per_s"]
    axes[2].bar([k.replace("_", "\n") for k in bars], list(bars.values()), color="#3b7dd8")
    axes[2].set_ylabel("orphans deleted per second")
    axes[2].set_title(f"beside {result['live_images']} live images", fontsize=10)
    axes[2].tick_params(axis="x", labelsize=8)
    listing = result["listing_by_timestamp_parser"]
    seconds = listing["seconds_best_of_3"]
    axes[3].bar(
        ["application\nclient", "botocore's\ndefault parser"],
        [seconds["application_client"], seconds["botocore_default_parser"]],
        color=["#3b7dd8", "#999999"],
    )
    axes[3].set_ylabel("seconds")
    axes[3].set_title(f"listing {listing['objects']} objects", fontsize=10)
    axes[3].tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ORPHANS)
