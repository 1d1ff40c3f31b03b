"""The composition root: builds settings, engines and clients once per Lambda container.

Nothing is built at import time, nor imported: SQLAlchemy, redis, pydantic-settings and the
command modules are lazy modules (giftmarket/lazy.py), imported when the part that needs them
is built (importing a handler is a cold start's cost: tests/benchmarks/bench_cold_start.py).
The first request asks for the container; each part is built the first time something needs
it (a query never pays for the S3 client or the password hasher), and later requests in the
same warm container reuse it. Tests build a container with their own parts, named keyword
arguments (a misspelt one is a TypeError): `bootstrap(settings, database=..., images=...)`.

It only wires: the use cases live beside what they drive (jobs/settlement.py `settle`,
jobs/images.py `clean_images`, jobs/purge.py `purge`, projections/rebuild.py
`rebuild_read_models` and `ensure_read_models`, adapters/publisher.py `relay` and the
`publish_after_commit` fast path), and the functions' handlers and the CLI call them with
the container's parts.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from giftmarket import snapstart
from giftmarket.lazy import import_declared, lazy

if TYPE_CHECKING:
    import redis
    from aws_lambda_powertools.utilities import parameters
    from mypy_boto3_sqs import SQSClient
    from sqlalchemy import Engine

    from giftmarket import settings as _settings
    from giftmarket.adapters import barcodes as _barcodes
    from giftmarket.adapters import cache as _cache
    from giftmarket.adapters import db as _db
    from giftmarket.adapters import images as _images
    from giftmarket.adapters import jwt_keys as _jwt_keys
    from giftmarket.adapters import oidc as _oidc
    from giftmarket.adapters import passwords as _passwords
    from giftmarket.adapters import publisher as _publisher
    from giftmarket.adapters import read_models as _read_models
    from giftmarket.adapters import sign_in_guard as _sign_in_guard
    from giftmarket.adapters import unit_of_work as _unit_of_work
    from giftmarket.adapters.cache import RedisBreaker
    from giftmarket.adapters.db import Database
    from giftmarket.adapters.jwt_keys import KeyRing
    from giftmarket.commands import context as _context
    from giftmarket.commands import executor as _executor
    from giftmarket.commands import handlers as _handlers
    from giftmarket.commands.context import CommandContext
    from giftmarket.commands.executor import CommandExecutor
    from giftmarket.commands.ports import (
        IdTokenVerifier,
        ImageStore,
        PasswordHasher,
        Publisher,
        SignInGuard,
        UnitOfWork,
        UnitOfWorkFactory,
    )
    from giftmarket.domain import ids as _ids
    from giftmarket.domain import sign_in as _sign_in
    from giftmarket.domain import vouchers as _vouchers
    from giftmarket.projections import projector as _projector
    from giftmarket.projections.projector import Projector
    from giftmarket.queries import reads as _reads
    from giftmarket.queries.reads import Reads
    from giftmarket.read_ports import ReadModelStore
    from giftmarket.settings import Settings
else:
    parameters = lazy("aws_lambda_powertools.utilities.parameters")
    _settings = lazy("giftmarket.settings")
    _barcodes = lazy("giftmarket.adapters.barcodes")
    _cache = lazy("giftmarket.adapters.cache")
    _db = lazy("giftmarket.adapters.db")
    _images = lazy("giftmarket.adapters.images")
    _jwt_keys = lazy("giftmarket.adapters.jwt_keys")
    _oidc = lazy("giftmarket.adapters.oidc")
    _passwords = lazy("giftmarket.adapters.passwords")
    _publisher = lazy("giftmarket.adapters.publisher")
    _read_models = lazy("giftmarket.adapters.read_models")
    _sign_in_guard = lazy("giftmarket.adapters.sign_in_guard")
    _unit_of_work = lazy("giftmarket.adapters.unit_of_work")
    _context = lazy("giftmarket.commands.context")
    _executor = lazy("giftmarket.commands.executor")
    _handlers = lazy("giftmarket.commands.handlers")
    _ids = lazy("giftmarket.domain.ids")
    _sign_in = lazy("giftmarket.domain.sign_in")
    _vouchers = lazy("giftmarket.domain.vouchers")
    _projector = lazy("giftmarket.projections.projector")
    _reads = lazy("giftmarket.queries.reads")


class Container:
    """Settings and the parts built from them, each on first use. A part given here (a
    fake, a test double) wins over the one the container would build."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        database: Database | None = None,
        redis: redis.Redis | None = None,
        images: ImageStore | None = None,
        sqs: SQSClient | None = None,
        publisher: Publisher | None = None,
        passwords: PasswordHasher | None = None,
        jwt_keys: KeyRing | None = None,
        fingerprint_key: bytes | None = None,
        sign_in_guard: SignInGuard | None = None,
        id_tokens: IdTokenVerifier | None = None,
        command_context: CommandContext | None = None,
        command_executor: CommandExecutor | None = None,
        read_models: ReadModelStore | None = None,
        reads: Reads | None = None,
        projector: Projector | None = None,
        unit_of_work: UnitOfWorkFactory | None = None,
    ) -> None:
        if settings is None:
            settings = _settings.Settings()
        self.settings = settings
        self._unit_of_work = unit_of_work
        self._lock = threading.Lock()
        given = {
            "database": database,
            "redis": redis,
            "images": images,
            "sqs": sqs,
            "publisher": publisher,
            "passwords": passwords,
            "jwt_keys": jwt_keys,
            "fingerprint_key": fingerprint_key,
            "sign_in_guard": sign_in_guard,
            "id_tokens": id_tokens,
            "command_context": command_context,
            "command_executor": command_executor,
            "read_models": read_models,
            "reads": reads,
            "projector": projector,
        }
        # Stored where each cached_property keeps what it built, so it is never built.
        self.__dict__.update({name: part for name, part in given.items() if part is not None})

    @cached_property
    def database(self) -> Database:
        return _db.Database.from_settings(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        return _cache.build_redis(self.settings)

    @cached_property
    def redis_breaker(self) -> RedisBreaker:
        """One per container: the queries and the sign-in guard both skip a Redis found
        unreachable, for REDIS_RETRY_AFTER_SECONDS."""
        return _cache.RedisBreaker(self.settings.redis_retry_after_seconds)

    @cached_property
    def images(self) -> ImageStore:
        client = _images.build_s3_client(self.settings.aws_region, self.settings.aws_endpoint_url)
        return _images.S3ImageStore(client, self.settings.images_bucket)

    @cached_property
    def sqs(self) -> SQSClient:
        return _publisher.build_sqs_client(
            self.settings.aws_region,
            self.settings.aws_endpoint_url,
            connections=self.settings.outbox_relay_lanes,
        )

    @cached_property
    def publisher(self) -> Publisher:
        if not self.settings.events_queue_url:
            raise RuntimeError("EVENTS_QUEUE_URL is not set: there is no queue to publish to")
        return _publisher.SqsPublisher(
            self.sqs, self.settings.events_queue_url, lanes=self.settings.outbox_relay_lanes
        )

    @cached_property
    def passwords(self) -> PasswordHasher:
        return _passwords.Argon2Passwords(
            time_cost=self.settings.password_hash_time_cost,
            memory_kib=self.settings.password_hash_memory_kib,
        )

    @cached_property
    def jwt_keys(self) -> KeyRing:
        """The JWT keys by kid: in AWS the secret's AWSCURRENT (signs) and AWSPREVIOUS
        versions, read again every 5 minutes or on an unknown kid; locally JWT_SECRET."""
        arn = self.settings.jwt_secret_arn
        if arn:
            return _jwt_keys.KeyRing(lambda: _jwt_keys.keys_from_secret(arn))
        secret = self.settings.jwt_secret.get_secret_value()
        return _jwt_keys.KeyRing.fixed(_jwt_keys.KeySet.of(secret))

    @property
    def jwt_secret(self) -> str:
        """The current signing key, for tools and tests that sign tokens themselves."""
        return self.jwt_keys.keys().current.secret

    @cached_property
    def fingerprint_key(self) -> bytes:
        """The HMAC key of idempotency fingerprints (Secrets Manager in AWS)."""
        if self.settings.fingerprint_key_secret_arn:
            arn = self.settings.fingerprint_key_secret_arn
            return str(parameters.get_secret(arn, max_age=300)).encode()
        return self.settings.fingerprint_key.get_secret_value().encode()

    @cached_property
    def id_tokens(self) -> IdTokenVerifier:
        """Social sign-in's ID-token checks; the providers' keys are held per container."""
        settings = self.settings
        return _oidc.OidcVerifier(
            settings.oidc_providers,
            timeout_seconds=settings.oidc_timeout_seconds,
            keys_max_age_seconds=settings.oidc_keys_max_age_seconds,
            refetch_floor_seconds=settings.oidc_keys_refetch_floor_seconds,
            allow_loopback_http=settings.environment is not _settings.Environment.AWS,
        )

    @cached_property
    def sign_in_guard(self) -> SignInGuard:
        settings = self.settings
        limits = _sign_in.SignInLimits(
            settings.login_failures_per_email,
            settings.login_failures_per_address,
            settings.login_failure_window_seconds,
        )
        # Emails and addresses are stored only as HMACs under the server-side key.
        keys = _sign_in_guard.SubjectKeys(lambda: self.fingerprint_key, limits)
        return _sign_in_guard.FallbackSignInGuard(
            _sign_in_guard.RedisSignInGuard(self.redis, keys, limits),
            _sign_in_guard.SqlSignInGuard(self.database.writer, keys, limits),
            self.redis_breaker,
        )

    @cached_property
    def command_context(self) -> CommandContext:
        return _context.CommandContext(
            ids=_ids.new_id,
            passwords=self.passwords,
            images=self.images,
            admin_emails=self.settings.admin_email_set,
            welcome_coupon_amount=self.settings.welcome_coupon_amount,
            barcodes=_barcodes.HmacBarcodeFingerprinter(self._barcode_keys),
            vouchers=_vouchers.VoucherRules(
                min_validity_days=self.settings.min_voucher_validity_days,
                ask_expiry_margin_days=self.settings.ask_expiry_margin_days,
                inspection=self.settings.inspection_mode,
            ),
        )

    def _barcode_keys(self) -> str:
        """The barcode HMAC keys' JSON: in AWS the secret, through Powertools' 5-minute
        cache; locally BARCODE_KEYS."""
        arn = self.settings.barcode_keys_secret_arn
        if arn:
            return str(parameters.get_secret(arn, max_age=300))
        return self.settings.barcode_keys.get_secret_value()

    @cached_property
    def command_executor(self) -> CommandExecutor:
        after_commit = None
        # By default a command answers once it has committed: the relay's loop sends its
        # events. "in_request" sends them before the answer too (settings.events_publish).
        # Without a queue (unit tests, a local run without SQS) nothing is sent at all.
        if self.settings.events_queue_url and self.settings.events_publish == "in_request":
            after_commit = _publisher.publish_after_commit(self._writer, self._publisher)
        return _executor.CommandExecutor(
            self.unit_of_work,
            self.command_context,
            _handlers.COMMAND_HANDLERS,
            retries=self.settings.command_retries,
            after_commit=after_commit,
        )

    def _writer(self) -> Engine:
        # Read when a commit happens, not when the executor is built.
        return self.database.writer

    def _publisher(self) -> Publisher:
        # Built once even when the settlement's worker threads commit at the same moment.
        with self._lock:
            return self.publisher

    @cached_property
    def read_models(self) -> ReadModelStore:
        return _read_models.ReadModels(self.redis)

    @cached_property
    def reads(self) -> Reads:
        return _reads.Reads(self.read_models, self.database, breaker=self.redis_breaker)

    @cached_property
    def projector(self) -> Projector:
        return _projector.Projector(self.read_models, self.command_executor)

    def unit_of_work(self) -> UnitOfWork:
        if self._unit_of_work is not None:
            return self._unit_of_work()
        return _unit_of_work.SqlAlchemyUnitOfWork(
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


# A container from the given parts, the rest built from settings (default: the
# environment's) when first needed.
bootstrap = Container


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


# SnapStart (snapstart.py): every module a request may need is imported before the
# snapshot; nothing that connects is built then, and should anything have been, a restored
# environment builds its own.
snapstart.before_snapshot(import_declared)


@snapstart.after_restore
def forget_connections() -> None:
    """The container (its pools, Redis and boto3 clients) and the cached secrets were the
    snapshot's environment's: forgotten, not closed, as after a fork, since closing would
    talk on sockets whose peers are gone; the next request builds and reads them anew."""
    set_container(None)
    parameters.clear_caches()  # type: ignore[no-untyped-call]  # Powertools leaves it untyped
