"""The `giftmarket` console script for operators and local use.

It reads the same settings as the Lambda functions (environment, local defaults matching
`make run`), so while the local stack runs every command works against it.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from giftmarket.adapters.dlq import redrive
from giftmarket.adapters.publisher import relay
from giftmarket.bootstrap import bootstrap
from giftmarket.commands.admins import ListAdminRights, NoAccountForEmail, SetAdmin
from giftmarket.domain.errors import InvalidField
from giftmarket.domain.settlement import parse_business_date
from giftmarket.jobs.expiry import expire_asks
from giftmarket.jobs.images import Outcome, clean_images, parse_as_of
from giftmarket.jobs.purge import purge
from giftmarket.jobs.settlement import settle
from giftmarket.projections.rebuild import rebuild_read_models
from giftmarket.queries.health import system_health
from giftmarket.read_ports import RebuildRunning

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
outbox = typer.Typer(no_args_is_help=True, help="The transactional outbox and its relay.")
app.add_typer(outbox, name="outbox")
dlq = typer.Typer(no_args_is_help=True, help="The events dead-letter queue.")
app.add_typer(dlq, name="dlq")
read_models = typer.Typer(no_args_is_help=True, help="The Redis read models of the query API.")
app.add_typer(read_models, name="read-models")
jobs = typer.Typer(
    no_args_is_help=True,
    help="The scheduled jobs: settlement, ask expiry, image cleanup, purge.",
)
app.add_typer(jobs, name="jobs")
admin = typer.Typer(no_args_is_help=True, help="Admin rights: granted by an operator, recorded.")
app.add_typer(admin, name="admin")


@app.callback()
def _root() -> None:
    """giftmarket operations: health, the outbox, the read models, the DLQ, the jobs."""


@app.command()
def health() -> None:
    """Show whether the primary, the replica (with its lag) and the cache can be used now."""
    container = bootstrap()
    try:
        report = system_health(container.database, container.redis)
    finally:
        container.close()
    typer.echo(json.dumps(report, indent=2))
    if report["status"] == "down":
        raise typer.Exit(code=1)


def _echo_report(report: Any, *, failed: bool) -> None:
    """The report as JSON; exit status 1 when something in it failed (worth a look: refused
    events stay unpublished, unsettled sellers are settled by a rerun)."""
    typer.echo(json.dumps(report.as_dict(), indent=2))
    if failed:
        raise typer.Exit(code=1)


@outbox.command("relay")
def outbox_relay() -> None:
    """Publish the outbox events still unpublished to the events queue, as the scheduled
    relay does (OUTBOX_RELAY_BATCH_SIZE rows a batch, at most OUTBOX_RELAY_MAX_BATCHES)."""
    container = bootstrap()
    if not container.settings.events_queue_url:
        typer.echo("EVENTS_QUEUE_URL is not set: there is no queue to publish to", err=True)
        raise typer.Exit(code=2)
    try:
        report = relay(container.database.writer, container.publisher, container.settings)
    finally:
        container.close()
    _echo_report(report, failed=bool(report.failed))


@dlq.command("redrive")
def dlq_redrive(
    limit: int | None = typer.Option(None, min=1, help="Move at most this many messages."),
) -> None:
    """Move dead-lettered events back to the events queue (EVENTS_DLQ_URL → EVENTS_QUEUE_URL)
    for the projector to try again, typically after the fix for what failed them."""
    container = bootstrap()
    settings = container.settings
    if not settings.events_queue_url or not settings.events_dlq_url:
        typer.echo("EVENTS_QUEUE_URL and EVENTS_DLQ_URL must both be set", err=True)
        raise typer.Exit(code=2)
    try:
        report = redrive(
            container.sqs, settings.events_dlq_url, settings.events_queue_url, max_messages=limit
        )
    finally:
        container.close()
    _echo_report(report, failed=bool(report.failed))


@read_models.command("rebuild")
def read_models_rebuild(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Rebuild every read model from the database into a new generation and switch queries
    to it at once; until then they keep reading the current one, and events arriving
    meanwhile reach both."""
    container = bootstrap()
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, disable=quiet, transient=False) as bar:
            tasks: dict[str, Any] = {}

            def advance(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=total)
                bar.update(tasks[what], completed=done)

            report = rebuild_read_models(container.settings, container.database, advance)
    except RebuildRunning as exc:
        typer.echo(f"{exc}; run it again when that one is done", err=True)
        raise typer.Exit(code=1) from exc
    finally:
        container.close()
    typer.echo(json.dumps(report.as_dict(), indent=2))


@jobs.command("settle")
def jobs_settle(
    business_date: str | None = typer.Option(
        None,
        "--date",
        metavar="YYYY-MM-DD",
        help="The business date (Asia/Seoul) to settle; default: yesterday in Korea.",
    ),
) -> None:
    """Settle sellers' proceeds for a business date exactly as the scheduled function does:
    orders PAID for 72 hours are completed first, then one settlement per seller. Running
    it again for the same date changes nothing; after a crash it finishes the work."""
    try:
        day = None if business_date is None else parse_business_date(business_date)
    except InvalidField as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(code=2) from exc
    container = bootstrap()
    try:
        report = settle(container.command_executor, container.settings, day)
    except InvalidField as exc:  # a date that has not ended yet
        typer.echo(exc.detail, err=True)
        raise typer.Exit(code=2) from exc
    finally:
        container.close()
    _echo_report(report, failed=bool(report.failed))


@jobs.command("clean-images")
def jobs_clean_images(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Report what would be deleted; change nothing."
    ),
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        metavar="ISO-8601",
        help="Apply the rules as of this instant (with its time zone), for backfills; "
        "default: now.",
    ),
) -> None:
    """Delete orphaned images as the daily scheduled function does: uploads still PENDING
    after 24 hours, images of asks cancelled over 7 days ago, objects under images/ that no
    row names after 24 hours. Prints one line per image deleted (or, with --dry-run, that
    would be), then a summary. Images S3 refuses to delete are retried on the next run."""
    try:
        instant = None if as_of is None else parse_as_of(as_of)
    except InvalidField as exc:
        typer.echo(f"--as-of: {exc.detail}", err=True)
        raise typer.Exit(code=2) from exc
    container = bootstrap()
    try:
        report = clean_images(
            container.unit_of_work,
            container.command_context,
            container.images,
            retries=container.settings.command_retries,
            as_of=instant,
            dry_run=dry_run,
        )
    except InvalidField as exc:  # an instant in the future
        typer.echo(f"--as-of: {exc.detail}", err=True)
        raise typer.Exit(code=2) from exc
    finally:
        container.close()
    shown = {Outcome.DELETED: "deleted", Outcome.WOULD_DELETE: "would delete"}
    for entry in report.entries:
        line = f"{entry.image_id or '-'} {entry.key} ({entry.reason})"
        if entry.outcome in shown:
            typer.echo(f"{shown[entry.outcome]} {line}")
        elif entry.outcome is Outcome.FAILED:
            typer.echo(f"not deleted {line}: {entry.detail}; retried on the next run", err=True)
    as_of_text = report.as_of.isoformat()
    if dry_run:
        typer.echo(
            f"dry run as of {as_of_text}: would delete {report.would_delete}, "
            f"{report.skipped_live} in use; nothing was changed"
        )
    else:
        typer.echo(
            f"as of {as_of_text}: deleted {report.deleted}, failed {report.failed}, "
            f"{report.skipped_live} in use left alone"
        )
    if report.failed:
        raise typer.Exit(code=1)


@jobs.command("purge")
def jobs_purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
) -> None:
    """Delete what is past its retention as the daily scheduled function does: published
    outbox rows older than OUTBOX_RETENTION_DAYS (default 7) and expired idempotency
    records, at most PURGE_BATCH_SIZE (1000) rows per short transaction. Prints one line per
    table, then a summary. Safe to run at any time, and again."""
    container = bootstrap()
    try:
        report = purge(container.database.writer, container.settings, dry_run=dry_run)
    finally:
        container.close()
    for table in report.tables:
        if dry_run:
            typer.echo(f"{table.table}: would delete {table.would_delete}")
        else:
            typer.echo(
                f"{table.table}: deleted {table.deleted} in {table.transactions} transactions"
                f" of at most {report.batch_size} rows"
            )
    as_of = report.as_of.isoformat()
    if dry_run:
        typer.echo(
            f"dry run as of {as_of}: would delete {report.would_delete}; nothing was changed"
        )
    else:
        typer.echo(f"as of {as_of}: deleted {report.deleted} in {report.seconds:.1f} s")


@jobs.command("expire-asks")
def jobs_expire_asks() -> None:
    """Mark EXPIRED the open asks whose voucher buy-now may no longer take (valid for less
    than ASK_EXPIRY_MARGIN_DAYS, default 1, more days in Korea, or of unknown expiry), as the
    daily scheduled function does, and free their barcodes. Safe to run at any time, and
    again: a rerun expires nothing more."""
    container = bootstrap()
    try:
        executor = container.command_executor
        report = expire_asks(executor, now=executor.context.clock())
    finally:
        container.close()
    typer.echo(
        f"expired {report.expired} asks; the open ones are valid on "
        f"{report.takeable_from.isoformat()} or later"
    )


def _operator() -> str:
    """Who runs this command, for the record: the OS user and host."""
    return f"{getpass.getuser()}@{socket.gethostname()} (cli)"


def _set_admin(email: str, is_admin: bool, by: str | None) -> None:
    command = SetAdmin(email, is_admin, by or _operator())
    container = bootstrap()
    try:
        result, _ = container.command_executor.execute(command)
    except (NoAccountForEmail, InvalidField) as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(code=2) from exc
    finally:
        container.close()
    if result.change is None:
        state = "already is" if is_admin else "already is not"
        typer.echo(f"{result.email} {state} an admin; nothing changed")
    else:
        typer.echo(
            f"{result.change.action.value} admin rights: {result.email} ({result.user_id}),"
            f" by {result.change.actor} at {result.change.recorded_at.isoformat()}"
        )


_BY = typer.Option(None, "--by", help="Who asks, for the record (default: OS user@host).")


@admin.command("grant")
def admin_grant(email: str, by: str | None = _BY) -> None:
    """Give the account with EMAIL admin rights (it must have signed up). Recorded with who
    and when; effective on its next request."""
    _set_admin(email, True, by)


@admin.command("revoke")
def admin_revoke(email: str, by: str | None = _BY) -> None:
    """Take admin rights away from the account with EMAIL; effective on its next request."""
    _set_admin(email, False, by)


@admin.command("list")
def admin_list() -> None:
    """Show the admins and the latest grants and revokes, newest first."""
    container = bootstrap()
    try:
        rights, _ = container.command_executor.execute(ListAdminRights())
    finally:
        container.close()
    typer.echo("admins:" if rights.admins else "admins: none")
    for user_id, email in rights.admins:
        typer.echo(f"  {email} ({user_id})")
    typer.echo("record:" if rights.history else "record: empty")
    for change in rights.history:
        typer.echo(
            f"  {change.recorded_at.isoformat()} {change.action.value:<6} {change.email}"
            f" by {change.actor}"
        )


def use_local_stack_settings() -> None:
    """With no ENVIRONMENT set, take the settings of the local stack that `make run` (or
    `make stack-up`) started, from its stack.json (under GM_LOCAL_DIR, `.local` by default,
    from the repository root), so the CLI reaches the same databases, Redis and LocalStack.
    Variables already set win; in AWS, ENVIRONMENT=aws is set and nothing is read."""
    if "ENVIRONMENT" in os.environ:
        return
    state = Path(os.environ.get("GM_LOCAL_DIR", ".local")) / "run" / "stack.json"
    if state.is_file():
        for key, value in json.loads(state.read_text())["env"].items():
            os.environ.setdefault(key, value)


def main() -> None:
    use_local_stack_settings()
    app()


if __name__ == "__main__":
    main()
