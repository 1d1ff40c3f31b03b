"""Every setting giftmarket reads, from the environment, with local defaults.

Outside local/test mode the unsafe local defaults are refused, so a deployment cannot
silently run with the development password or JWT secret.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from giftmarket.domain.vouchers import InspectionMode

_LOCAL_DB_PASSWORD = "giftmarket-local"  # noqa: S105 - the loopback development database
_LOCAL_JWT_SECRET = "local-development-secret-change-me-0123456789"  # noqa: S105
_LOCAL_FINGERPRINT_KEY = "local-development-fingerprint-key-0123456789"  # noqa: S105
_LOCAL_BARCODE_KEYS = (  # noqa: S105
    '{"current": "local-1", "local-1": "local-development-barcode-key-0123456789"}'
)


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    AWS = "aws"


_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def is_loopback_url(url: str) -> bool:
    """An http(s) URL whose host is this machine: 127.0.0.0/8, ::1 or localhost."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OidcProvider(BaseModel):
    """One OpenID provider users may sign in with (PRODUCT.md, "Social sign-in"); its keys
    are found through the issuer's discovery document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, max_length=255)
    # The audiences our apps' ID tokens carry: the app's client id at the provider (Kakao's
    # REST API key, Google's per-platform OAuth client ids, Apple's bundle or services id).
    client_ids: tuple[Annotated[str, Field(min_length=1, max_length=255)], ...] = Field(
        min_length=1, max_length=20
    )
    # Whether an email the provider marks verified may link to an existing account.
    trust_email: bool = False
    # Other `iss` values its ID tokens may carry besides `issuer` (Google also signs as
    # "accounts.google.com", without the scheme).
    also_issued_as: tuple[Annotated[str, Field(min_length=1, max_length=255)], ...] = ()

    @property
    def token_issuers(self) -> tuple[str, ...]:
        return (self.issuer, *self.also_issued_as)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    environment: Environment = Environment.LOCAL

    # Databases: the command side writes to the primary; queries read the replica.
    db_primary_host: str = "127.0.0.1"
    db_primary_port: int = 13306
    db_replica_host: str = "127.0.0.1"
    db_replica_port: int = 13307
    db_name: str = "giftmarket"
    db_user: str = "giftmarket"
    db_password: SecretStr = SecretStr(_LOCAL_DB_PASSWORD)
    # In AWS the credentials come from this Secrets Manager secret (JSON with username and
    # password), fetched through Powertools Parameters; when set it wins over DB_USER/PASSWORD.
    db_secret_arn: str | None = None
    # Only the migration function: the RDS-managed master user's secret, with which it
    # creates the application user and runs the DDL the application user may not.
    db_master_secret_arn: str | None = None

    # Pooling for one Lambda container: it serves one request at a time, so a tiny pool;
    # overflow covers the local runner and tests, which call a handler from many threads.
    db_pool_size: int = Field(default=1, ge=1)
    db_max_overflow: int = Field(default=4, ge=0)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # Below MySQL's wait_timeout and RDS Proxy's idle timeout: never hand out a connection
    # the server has already dropped.
    db_pool_recycle_seconds: int = Field(default=280, gt=0)
    db_connect_timeout_seconds: int = Field(default=3, ge=1)
    db_read_timeout_seconds: int = Field(default=10, ge=1)
    # TLS to MySQL: the CA bundle (PEM) the server's certificate must chain to; its host name
    # is checked too. In AWS the RDS CA bundle shipped in the layer (mandatory there); locally
    # the stack's own CA (`python -m giftmarket_local env`). Unset (local only): TLS is still
    # tried but the server is not verified.
    db_ssl_ca: str | None = None
    # TLS to Redis is on when REDIS_URL is rediss:// (mandatory in AWS), always verifying the
    # certificate and host name: against this CA bundle, or the system trust store when unset
    # (ElastiCache's certificates are Amazon-issued, publicly trusted).
    redis_ssl_ca: str | None = None

    # Queries leave the replica for the primary when it lags more than this, or is down.
    replica_max_lag_seconds: float = Field(default=5.0, ge=0)
    # How long one replica health reading is trusted before it is taken again.
    replica_check_interval_seconds: float = Field(default=1.0, ge=0)

    redis_url: str = "redis://127.0.0.1:16379/0"
    # In AWS the ElastiCache AUTH token comes from this Secrets Manager secret (a plain
    # string), fetched through Powertools Parameters; REDIS_URL then carries no password.
    redis_auth_secret_arn: str | None = None
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    # Once Redis was unreachable or timed out, queries and sign-in counters go to SQL without
    # trying it for this long (adapters/cache.py RedisBreaker); 0 tries it on every call.
    redis_retry_after_seconds: float = Field(default=2.0, ge=0, le=60)

    jwt_secret: SecretStr = SecretStr(_LOCAL_JWT_SECRET)
    # In AWS the signing key comes from this Secrets Manager secret (Powertools Parameters).
    jwt_secret_arn: str | None = None
    jwt_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    # argon2id cost; the defaults are RFC 9106's second recommendation, sized for a
    # 1 GB Lambda. Tests lower them to keep signups fast.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8)
    # Commands retried after a deadlock or lock-wait timeout before answering 503.
    command_retries: int = Field(default=3, ge=0)
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # The key of the HMAC that fingerprints a request under an Idempotency-Key: a body may
    # hold a password, so the record keeps only a keyed fingerprint of it. In AWS it comes
    # from this Secrets Manager secret (a plain string), read through Powertools Parameters.
    fingerprint_key: SecretStr = SecretStr(_LOCAL_FINGERPRINT_KEY)
    fingerprint_key_secret_arn: str | None = None
    # Voucher barcodes are kept only as HMACs under these keys (adapters/barcodes.py has
    # the format and how to rotate them); in AWS they come from this Secrets Manager secret.
    barcode_keys: SecretStr = SecretStr(_LOCAL_BARCODE_KEYS)
    barcode_keys_secret_arn: str | None = None
    # Vouchers (PRODUCT.md): listable only while valid this many days after today (KST);
    # buy-now leaves the last `ask_expiry_margin_days` of a voucher alone; every order is
    # inspected automatically at match time, or by an admin (manual).
    min_voucher_validity_days: int = Field(default=3, ge=1, le=3650)
    ask_expiry_margin_days: int = Field(default=1, ge=1, le=3650)
    inspection_mode: InspectionMode = InspectionMode.AUTO
    # Local stacks only: these emails become admins at signup, for convenience. A deployed
    # stage refuses it: emails are not verified, so an operator grants admin rights there
    # (`giftmarket admin grant`, or the migration function's event).
    admin_emails: str = ""
    # Sign-in abuse: this many failed logins of one email, or from one source address, in a
    # window from the first of them, and logins for it answer 429 until the window ends.
    login_failures_per_email: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=50, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    welcome_coupon_amount: int = Field(default=1000, ge=0, le=10**9)
    # Social sign-in (adapters/oidc.py): JSON, name -> {issuer, client_ids, trust_email}.
    # The issuers' keys are fetched with this timeout per request, kept this long, and
    # fetched again for an unknown `kid` at most once per floor (forged kids cannot make the
    # API hammer a provider).
    oidc_providers: Annotated[dict[str, OidcProvider], NoDecode] = Field(default_factory=dict)
    oidc_timeout_seconds: float = Field(default=2.0, gt=0, le=10)
    oidc_keys_max_age_seconds: int = Field(default=3600, ge=60)
    oidc_keys_refetch_floor_seconds: float = Field(default=10.0, ge=0)
    seller_fee_bps: int = Field(default=500, ge=0, le=10_000)
    # Sellers settled at once, each in its own transaction on its own connection: the
    # database round trips of one overlap the others'. At most the pool's connections.
    settlement_workers: int = Field(default=4, ge=1, le=32)

    # AWS_REGION is set by the Lambda runtime; AWS_ENDPOINT_URL points boto3 at LocalStack.
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    images_bucket: str = "giftmarket-images"
    events_queue_url: str | None = None
    events_dlq_url: str | None = None
    # One relay run claims this many outbox rows per transaction, for at most this many
    # batches; what is left waits for the next run (every minute) or a concurrent one.
    # Rows a relay claims at a time, and the SendMessageBatch calls in flight for them
    # (SqsPublisher's lanes, by message group): 1000 rows are 100 calls, over 32 lanes 4
    # round trips; the relay claims the next batches while one is sent (RELAY_IN_FLIGHT).
    # bench_relay.py, 20 ms stand-in, a busy 2-core machine: 5.0k-5.5k events/s, 440 on 1
    # lane; 64 lanes measured no faster (the process's CPU binds first).
    outbox_relay_batch_size: int = Field(default=1000, ge=1, le=1000)
    outbox_relay_lanes: int = Field(default=32, ge=1, le=64)
    outbox_relay_max_batches: int = Field(default=200, ge=1)
    # How a command's events reach the queue. "relay": the command commits its outbox rows
    # and answers; the relay's loop, which polls the outbox every `outbox_relay_poll_ms`,
    # sends them tens of milliseconds later, batched across commands. "in_request": the
    # command also sends its own rows after the commit, before it answers (the fast path of
    # old: a SendMessageBatch round trip in every command's time; kept for comparison, see
    # tests/benchmarks/bench_buy_now.py).
    events_publish: Literal["relay", "in_request"] = "relay"
    # A relay invocation polls the outbox for this long (0: one pass, as the CLI does).
    # Deployed, longer than the schedule's minute: the next run waits on the relay lock and
    # takes over the moment this one ends, so there is always one loop and never two.
    outbox_relay_run_seconds: float = Field(default=0, ge=0, le=840)
    outbox_relay_poll_ms: int = Field(default=20, ge=1, le=10_000)
    # The daily purge (jobs/purge.py): published outbox rows are kept this many days; rows
    # past their retention are deleted at most this many per transaction, and after each
    # batch the purge rests this many times as long as the batch took, so the commands
    # keep the database's CPU (tests/benchmarks/bench_purge.py: 1000-row
    # batches back to back tripled buy-now p99 on a two-core machine).
    outbox_retention_days: int = Field(default=7, ge=1)
    purge_batch_size: int = Field(default=200, ge=1, le=1000)
    purge_rest_ratio: float = Field(default=3.0, ge=0, le=100)

    @field_validator("oidc_providers", mode="before")
    @classmethod
    def _parse_oidc_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"OIDC_PROVIDERS is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError("OIDC_PROVIDERS must be a JSON object: name -> provider")
        for name in value:
            if not isinstance(name, str) or not _PROVIDER_NAME.match(name):
                raise ValueError(
                    f"OIDC_PROVIDERS: {name!r} is not a provider name (a-z, 0-9, _ and -)"
                )
        return value

    @model_validator(mode="after")
    def _oidc_issuers_secure(self) -> Self:
        for name, provider in self.oidc_providers.items():
            parts = urlsplit(provider.issuer)
            if parts.query or parts.fragment or not parts.hostname:
                raise ValueError(f"OIDC_PROVIDERS: {name}'s issuer is not an issuer URL")
            loopback = self.environment is not Environment.AWS and is_loopback_url(provider.issuer)
            if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
                raise ValueError(
                    f"OIDC_PROVIDERS: {name}'s issuer must be https "
                    "(http only on a loopback address of a local stack)"
                )
        return self

    @model_validator(mode="after")
    def _refuse_local_defaults_in_aws(self) -> Self:
        if self.environment is Environment.AWS:
            local_secret = self.jwt_secret.get_secret_value() == _LOCAL_JWT_SECRET
            if local_secret and self.jwt_secret_arn is None:
                raise ValueError("JWT_SECRET_ARN (or JWT_SECRET) must be set outside local mode")
            local_key = self.fingerprint_key.get_secret_value() == _LOCAL_FINGERPRINT_KEY
            if local_key and self.fingerprint_key_secret_arn is None:
                raise ValueError(
                    "FINGERPRINT_KEY_SECRET_ARN (or FINGERPRINT_KEY) must be set outside local mode"
                )
            local_barcodes = self.barcode_keys.get_secret_value() == _LOCAL_BARCODE_KEYS
            if local_barcodes and self.barcode_keys_secret_arn is None:
                raise ValueError(
                    "BARCODE_KEYS_SECRET_ARN (or BARCODE_KEYS) must be set outside local mode"
                )
            if self.admin_email_set:
                raise ValueError(
                    "ADMIN_EMAILS is for local stacks only: on a deployed stage an operator "
                    "grants admin rights (giftmarket admin grant EMAIL)"
                )
            if self.db_secret_arn is None and (
                self.db_password.get_secret_value() == _LOCAL_DB_PASSWORD
            ):
                raise ValueError("DB_SECRET_ARN (or DB_PASSWORD) must be set outside local mode")
        return self

    @model_validator(mode="after")
    def _require_tls_in_aws(self) -> Self:
        if self.environment is Environment.AWS:
            if not self.db_ssl_ca:
                raise ValueError(
                    "DB_SSL_CA (the RDS CA bundle) must be set outside local mode: "
                    "MySQL connections are TLS only and verify the server"
                )
            if not self.redis_url.startswith("rediss://"):
                raise ValueError("REDIS_URL must be rediss:// (TLS) outside local mode")
        return self

    @model_validator(mode="after")
    def _margin_within_validity(self) -> Self:
        if self.ask_expiry_margin_days > self.min_voucher_validity_days:
            raise ValueError("ASK_EXPIRY_MARGIN_DAYS must not exceed MIN_VOUCHER_VALIDITY_DAYS")
        return self

    @property
    def admin_email_set(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.admin_emails.split(",") if e.strip())
