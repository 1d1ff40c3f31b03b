"""The composition root: builds settings, engines and clients once per Lambda container.

Nothing is built at import time, nor imported: SQLAlchemy, redis, pydantic-settings and the
command modules are imported by the parts that need them, when those are built (importing
a handler is a cold start's cost: tests/benchmarks/bench_cold_start.py). The first request
asks for the container; each part is built the first time something needs it (a query never
pays for the S3 client or the password hasher), and later requests in the same warm
container reuse it. Tests build a
container with their own parts: `bootstrap(settings, database=..., images=...)`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    from mypy_boto3_sqs import SQSClient

    from giftmarket.adapters.db import Database
    from giftmarket.adapters.publisher import Publisher, RelayReport
    from giftmarket.adapters.read_models import ReadModels
    from giftmarket.commands.context import CommandContext, ImageStore, PasswordHasher
    from giftmarket.commands.executor import CommandExecutor
    from giftmarket.commands.ports import SignInGuard, UnitOfWork
    from giftmarket.http.auth import KeyRing
    from giftmarket.jobs.images import CleanupReport
    from giftmarket.jobs.purge import PurgeReport
    from giftmarket.jobs.settlement import SettlementReport
    from giftmarket.projections.projector import Projector
    from giftmarket.projections.rebuild import Progress, RebuildReport
    from giftmarket.queries.reads import Reads
    from giftmarket.settings import Settings


class Container:
    def __init__(self, settings: Settings, **parts: Any) -> None:
        self.settings = settings
        # Parts given here (fakes, test doubles) win over the ones built from settings.
        for name, part in parts.items():
            if part is not None:
                setattr(self, name, part)

    @cached_property
    def database(self) -> Database:
        from giftmarket.adapters.db import Database

        return Database.from_settings(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        from giftmarket.adapters.cache import build_redis

        return build_redis(self.settings)

    @cached_property
    def images(self) -> ImageStore:
        from giftmarket.adapters.images import S3ImageStore, build_s3_client

        client = build_s3_client(self.settings.aws_region, self.settings.aws_endpoint_url)
        return S3ImageStore(client, self.settings.images_bucket)

    @cached_property
    def sqs(self) -> SQSClient:
        from giftmarket.adapters.publisher import build_sqs_client

        return build_sqs_client(
            self.settings.aws_region,
            self.settings.aws_endpoint_url,
            connections=self.settings.outbox_relay_lanes,
        )

    @cached_property
    def publisher(self) -> Publisher:
        from giftmarket.adapters.publisher import SqsPublisher

        if not self.settings.events_queue_url:
            raise RuntimeError("EVENTS_QUEUE_URL is not set: there is no queue to publish to")
        return SqsPublisher(
            self.sqs, self.settings.events_queue_url, lanes=self.settings.outbox_relay_lanes
        )

    def publish_committed(self, outbox_ids: Sequence[str]) -> None:
        """Publish a command's events right after its commit (the fast path). Failures are
        logged, not raised: the relay sends what this misses. Without a queue configured
        (unit tests, a local run without SQS) it does nothing."""
        if not outbox_ids or not self.settings.events_queue_url:
            return
        from giftmarket.adapters.publisher import publish_committed

        publish_committed(self.database.writer, self.publisher, outbox_ids)

    def relay_outbox(self) -> RelayReport:
        """Publish whatever is still unpublished: the scheduled relay and the CLI."""
        from giftmarket.adapters.publisher import relay_outbox

        return relay_outbox(
            self.database.writer,
            self.publisher,
            batch_size=self.settings.outbox_relay_batch_size,
            max_batches=self.settings.outbox_relay_max_batches,
        )

    @cached_property
    def passwords(self) -> PasswordHasher:
        from giftmarket.adapters.passwords import Argon2Passwords

        return Argon2Passwords(
            time_cost=self.settings.password_hash_time_cost,
            memory_kib=self.settings.password_hash_memory_kib,
        )

    @cached_property
    def jwt_keys(self) -> KeyRing:
        """The JWT keys by kid: in AWS the secret's AWSCURRENT (signs) and AWSPREVIOUS
        versions, read again every 5 minutes or on an unknown kid; locally JWT_SECRET."""
        from giftmarket.http.auth import KeyRing, KeySet, keys_from_secret

        arn = self.settings.jwt_secret_arn
        if arn:
            return KeyRing(lambda: keys_from_secret(arn))
        return KeyRing.fixed(KeySet.of(self.settings.jwt_secret.get_secret_value()))

    @property
    def jwt_secret(self) -> str:
        """The current signing key, for tools and tests that sign tokens themselves."""
        return self.jwt_keys.keys().current.secret

    @cached_property
    def fingerprint_key(self) -> bytes:
        """The HMAC key of idempotency fingerprints (Secrets Manager in AWS)."""
        if self.settings.fingerprint_key_secret_arn:
            from aws_lambda_powertools.utilities import parameters

            arn = self.settings.fingerprint_key_secret_arn
            return str(parameters.get_secret(arn, max_age=300)).encode()
        return self.settings.fingerprint_key.get_secret_value().encode()

    @cached_property
    def sign_in_guard(self) -> SignInGuard:
        from giftmarket.adapters.sign_in_guard import (
            FallbackSignInGuard,
            RedisSignInGuard,
            SqlSignInGuard,
            SubjectKeys,
        )
        from giftmarket.domain.sign_in import SignInLimits

        settings = self.settings
        limits = SignInLimits(
            settings.login_failures_per_email,
            settings.login_failures_per_address,
            settings.login_failure_window_seconds,
        )
        # Emails and addresses are stored only as HMACs under the server-side key.
        keys = SubjectKeys(lambda: self.fingerprint_key, limits)
        return FallbackSignInGuard(
            RedisSignInGuard(self.redis, keys, limits),
            SqlSignInGuard(self.database.writer, keys, limits),
        )

    @cached_property
    def command_context(self) -> CommandContext:
        from giftmarket.commands.context import CommandContext
        from giftmarket.domain.ids import new_id

        return CommandContext(
            ids=new_id,
            passwords=self.passwords,
            images=self.images,
            admin_emails=self.settings.admin_email_set,
            welcome_coupon_amount=self.settings.welcome_coupon_amount,
        )

    @cached_property
    def command_executor(self) -> CommandExecutor:
        from giftmarket.commands.executor import CommandExecutor

        return CommandExecutor(
            self.unit_of_work,
            self.command_context,
            retries=self.settings.command_retries,
            after_commit=self.publish_committed,
        )

    @cached_property
    def read_models(self) -> ReadModels:
        from giftmarket.adapters.read_models import ReadModels

        return ReadModels(self.redis)

    @cached_property
    def reads(self) -> Reads:
        from giftmarket.queries.reads import Reads

        return Reads(self.read_models, self.database)

    @cached_property
    def projector(self) -> Projector:
        from giftmarket.projections.projector import Projector

        return Projector(self.read_models, self.command_executor)

    def settle(self, business_date: date | None, now: datetime | None = None) -> SettlementReport:
        """Daily settlement of `business_date` (default: the day just ended in Korea) as of
        `now`: the scheduled function and `giftmarket jobs settle` both come here."""
        from giftmarket.domain.settlement import default_business_date
        from giftmarket.jobs.settlement import settle_business_date

        at = now or self.command_context.clock()
        settings = self.settings
        if settings.events_queue_url:
            self.publisher  # noqa: B018 - built here once, not by racing worker threads
        return settle_business_date(
            self.command_executor,
            business_date=business_date or default_business_date(at),
            now=at,
            fee_bps=settings.seller_fee_bps,
            # Each worker holds one pooled connection at a time; none may wait for one.
            workers=min(
                settings.settlement_workers, settings.db_pool_size + settings.db_max_overflow
            ),
        )

    def clean_images(self, as_of: datetime | None = None, dry_run: bool = False) -> CleanupReport:
        """The orphaned-image cleanup as of `as_of` (default now): the scheduled function
        and `giftmarket jobs clean-images` both come here."""
        from giftmarket.commands.executor import CommandExecutor
        from giftmarket.jobs.images import ImageJanitor, ImageObjects

        if not isinstance(self.images, ImageObjects):
            raise RuntimeError("the image store cannot list or delete objects")
        # No fast path for its events: nothing waits for them, and the relay sends a
        # batch's thousand ImageDeleted rows within a minute without slowing the run.
        commands = CommandExecutor(
            self.unit_of_work, self.command_context, retries=self.settings.command_retries
        )
        return ImageJanitor(commands, self.images).run(as_of, dry_run=dry_run)

    def purge(
        self,
        dry_run: bool = False,
        now: datetime | None = None,
        seconds_left: float | None = None,
    ) -> PurgeReport:
        """Delete (or, dry, count) the rows past their retention as of `now` (default
        now), stopping between batches after `seconds_left` (the next run goes on): the
        scheduled function and `giftmarket jobs purge` both come here."""
        import time

        from giftmarket.commands.context import utc_now
        from giftmarket.jobs.purge import Purger, Retention

        settings = self.settings
        retention = Retention(now or utc_now(), settings.outbox_retention_days)
        purger = Purger(
            self.database.writer,
            batch_size=settings.purge_batch_size,
            rest_ratio=settings.purge_rest_ratio,
        )
        deadline = None if seconds_left is None else time.monotonic() + seconds_left
        return purger.run(retention, dry_run=dry_run, deadline=deadline)

    def rebuild_read_models(self, progress: Progress | None = None) -> RebuildReport:
        """Every read model rebuilt from the database into a new generation, switched in."""
        from giftmarket.adapters.cache import BULK_TIMEOUT_SECONDS, build_redis
        from giftmarket.adapters.read_models import ReadModels
        from giftmarket.projections.rebuild import rebuild

        client = build_redis(self.settings, timeout=BULK_TIMEOUT_SECONDS)
        try:
            return rebuild(ReadModels(client), self.database, progress=progress)
        finally:
            client.close()

    def ensure_read_models(self) -> RebuildReport | None:
        """Rebuild the read models if Redis has none (a new deployment, or a cache that lost
        its data); until then every query is answered by SQL. None when there was nothing
        to do or another rebuild is running."""
        from giftmarket.adapters.read_models import RebuildRunning

        if self.read_models.generation() is not None:
            return None
        try:
            return self.rebuild_read_models()
        except RebuildRunning:
            return None

    def unit_of_work(self) -> UnitOfWork:
        from giftmarket.adapters.unit_of_work import SqlAlchemyUnitOfWork

        return SqlAlchemyUnitOfWork(
            self.database, idempotency_ttl=timedelta(hours=self.settings.idempotency_ttl_hours)
        )

    def close(self) -> None:
        if "database" in self.__dict__:
            self.database.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
        if "publisher" in self.__dict__:
            self.publisher.close()
        if "sqs" in self.__dict__:
            self.sqs.close()
        if "images" in self.__dict__:
            self.images.close()


_lock = threading.Lock()
_container: Container | None = None


def bootstrap(settings: Settings | None = None, **parts: Any) -> Container:
    """A container from the given parts, the rest built from settings when first needed."""
    from giftmarket.settings import Settings

    return Container(settings or Settings(), **parts)


def get_container() -> Container:
    """The container of this process, built on first use."""
    global _container
    if _container is None:
        with _lock:
            if _container is None:
                _container = bootstrap()
    return _container


def close_container() -> None:
    """Close the process's container, if one was built (its pools and clients)."""
    with _lock:
        if _container is not None:
            _container.close()


def set_container(container: Container | None) -> None:
    """Install (or, with None, forget) the process-wide container; for tests and tools."""
    global _container
    with _lock:
        _container = container
