"""Database routing: commands on the primary, queries on the replica, fallback to the primary.

Engines are built once per Lambda container by the composition root (never at import time)
with pooling suited to Lambda: a tiny pool, a ping before reusing a connection that sat
idle, recycle below the server's idle timeout, and connections dropped after the errors a
Multi-AZ failover produces, so a promoted standby is reached by fresh connections and never
through a dead or read-only one.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState, QueuePool

from giftmarket.adapters.errors import DatabaseUnavailable as DatabaseUnavailable
from giftmarket.adapters.secrets import SecretValue
from giftmarket.lazy import lazy
from giftmarket.settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities import parameters
else:
    parameters = lazy("aws_lambda_powertools.utilities.parameters")

log = logging.getLogger(__name__)

T = TypeVar("T")

# MySQL errors after which a pooled connection must not be reused. SQLAlchemy already treats
# 2006 (server gone away) and 2013 (lost connection) as disconnects; 1290 (running with
# --read-only) and 1836 (read-only mode) are what a connection opened before a failover
# gets from the demoted primary, and would otherwise be handed out again and again.
FAILOVER_ERROR_CODES = frozenset({1290, 1836, 2006, 2013})

# 1213: chosen as a deadlock victim; 1205: lock wait timeout. Both roll the transaction back
# and mean only that it should run again.
RACE_ERROR_CODES = frozenset({1205, 1213})


def mysql_error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _drop_connection_on_failover_errors(context: ExceptionContext) -> None:
    if mysql_error_code(context.original_exception) in FAILOVER_ERROR_CODES:
        # Marks the connection invalid and, as for any disconnect, invalidates every
        # connection pooled before it: all of them point at the old primary.
        context.is_disconnect = True


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


# MySQL's "access denied" when logging in: the password was rotated, or is wrong.
ACCESS_DENIED = 1045


def resolve_credentials(settings: Settings, *, fresh: bool = False) -> Credentials:
    """DB credentials from Secrets Manager in AWS, else settings. Powertools caches the
    secret for 5 minutes; `fresh` reads it again past that cache (after a rotation)."""
    if settings.db_secret_arn:
        secret: Any = parameters.get_secret(
            settings.db_secret_arn, transform="json", max_age=300, force_fetch=fresh
        )
        return Credentials(username=str(secret["username"]), password=str(secret["password"]))
    return Credentials(settings.db_user, settings.db_password.get_secret_value())


# The credentials new connections log in with, shared by a Database's engines: read again
# from the secret when MySQL refuses them (see `log_in`).
CredentialSource: TypeAlias = SecretValue[Credentials]


C = TypeVar("C")


def log_in(connect: Callable[[Credentials], C], source: CredentialSource) -> C:
    """`connect` with the source's credentials and, if MySQL refuses them (1045, a rotated
    password), once more with the secret read again. Nothing has run on a connection that
    is still logging in, so retrying the login is retrying the operation that needed it:
    a command's transaction, a query, the replica monitor's probe alike."""
    credentials = source.current
    try:
        return connect(credentials)
    except Exception as exc:
        if mysql_error_code(exc) != ACCESS_DENIED:
            raise
        fresh = source.refresh(credentials)
        if fresh is None:
            raise
    return connect(fresh)


def log_in_with(engine: Engine, source: CredentialSource) -> None:
    """Every new connection of `engine` logs in through `log_in` with `source`: after a
    rotation the pool's next connections use the new password (those already open keep
    their sessions, which MySQL does not end), without rebuilding the engine, so nothing
    holding it (the publisher, the relay, the replica monitor) can keep an old one."""

    def connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        def with_credentials(credentials: Credentials) -> Any:
            params = {**cparams, "user": credentials.username, "password": credentials.password}
            return dialect.connect(*cargs, **params)

        return log_in(with_credentials, source)

    event.listen(engine, "do_connect", connect)


def mysql_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for MySQL connections: the server's certificate must chain to DB_SSL_CA (the RDS
    CA bundle in AWS) or the system trust store (which holds the Amazon roots of RDS Proxy's
    ACM certificates), and name the host connected to. None without DB_SSL_CA (local only;
    Settings refuses that in AWS)."""
    if not settings.db_ssl_ca:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=settings.db_ssl_ca)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# Every transaction states its access mode in the statement that starts it. Nothing here
# depends on session state (SET SESSION ..., init_command): behind RDS Proxy with
# SessionPinningFilters EXCLUDE_VARIABLE_SETS, a session's SETs stay on whichever backend
# connection ran them, and later transactions, this client's or any other's, run elsewhere.
START_READ_WRITE = "START TRANSACTION READ WRITE"
START_READ_ONLY = "START TRANSACTION READ ONLY"
SERVER_STATUS_IN_TRANS = 1  # in the status of each OK packet: a transaction is open


def _start(conn: Connection, statement: str) -> None:
    # The MySQL dialect's own BEGIN is a no-op (the DBAPI starts transactions implicitly);
    # this listener sends it instead, as SQLAlchemy's documented pysqlite recipe does.
    # In AUTOCOMMIT mode there is no transaction to start.
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        conn.exec_driver_sql(statement)


def _start_read_write(conn: Connection) -> None:
    _start(conn, START_READ_WRITE)


def _start_read_only(conn: Connection) -> None:
    # A query that falls back to the primary cannot write there (1792), whoever used the
    # backend connection before.
    _start(conn, START_READ_ONLY)


def _reset_on_return(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _reset: PoolResetState
) -> None:
    """The pool's reset of a connection given back: a ROLLBACK only if the server says a
    transaction is open. SQLAlchemy's own reset sends one after every commit (a unit of
    work commits, then closes its connection): a round trip per command that ends nothing.
    The server's status comes with every OK packet, and every transaction here starts with
    one (`_start`); a connection with no status yet, or another driver's, is rolled back
    as before."""
    status = getattr(dbapi_connection, "server_status", None)
    if not isinstance(status, int) or status & SERVER_STATUS_IN_TRANS:
        dbapi_connection.rollback()


# A connection given back less than this long ago is used without a ping first. A container
# serving back to back pays no ping round trip per request (SQLAlchemy's pool_pre_ping
# sends one at every checkout: 1 command in 10 of a buy-now); one that sat idle (between
# invocations, frozen) is pinged, and replaced if the server has gone. A server lost within
# the last second shows as the first statement's failure, handled as any failover error
# (`_drop_connection_on_failover_errors`, then 503 with Retry-After).
PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "giftmarket_returned_at"


def _mark_returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_RETURNED_AT] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    returned_at = record.info.get(_RETURNED_AT)
    if returned_at is not None and time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dbapi_connection.ping(reconnect=False)
    except Exception as exc:
        # The pool discards this connection and checks out another (a new one if need be).
        raise DisconnectionError(f"the pooled connection failed its ping: {exc}") from exc


class _Pool(QueuePool):
    """The engines' pool: a QueuePool with the rules above as listeners of the class, not
    of each pool. Listeners of a pool instance are copied to the new pool each time an
    engine is disposed, and SQLAlchemy's weakly keyed registry of them then raised KeyError
    while collecting the old pool (seen in the suite, which builds and disposes hundreds of
    engines)."""


event.listen(_Pool, "reset", _reset_on_return)
event.listen(_Pool, "connect", _mark_returned)  # just connected: no ping needed
event.listen(_Pool, "checkin", _mark_returned)
event.listen(_Pool, "checkout", _ping_if_idle)


def build_engine(
    settings: Settings,
    credentials: Credentials,
    host: str,
    port: int,
    *,
    read_only: bool,
    connect_timeout: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> Engine:
    """An engine on host:port; `tls`, if given, is the context mysql_tls_context(settings)
    built, shared with the Database's other engines (else one is built for this engine)."""
    url = URL.create(
        "mysql+pymysql",
        username=credentials.username,
        password=credentials.password,
        host=host,
        port=port,
        database=settings.db_name,
        query={"charset": "utf8mb4"},
    )
    connect_args: dict[str, Any] = {
        "connect_timeout": connect_timeout or settings.db_connect_timeout_seconds,
        "read_timeout": settings.db_read_timeout_seconds,
        "write_timeout": settings.db_read_timeout_seconds,
    }
    if tls is None:
        tls = mysql_tls_context(settings)
    if tls is not None:
        # PyMySQL then requires TLS (no fallback to plain) and wraps with the host name.
        connect_args["ssl"] = tls
    engine = create_engine(
        url,
        poolclass=_Pool,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_pre_ping=False,  # `_ping_if_idle` instead
        pool_reset_on_return=None,  # `_reset_on_return` does it, round trip only if needed
        # Row locks (SELECT ... FOR UPDATE) carry the concurrency rules; READ COMMITTED
        # avoids the gap locks that make REPEATABLE READ deadlock on order-book inserts. It
        # is the servers' default (transaction_isolation in the parameter group, the proxy's
        # InitQuery, the local servers' arguments), so this SET on each new connection only
        # restates it; it stays for a server without that default, reached directly.
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    event.listen(engine, "begin", _start_read_only if read_only else _start_read_write)
    event.listen(engine, "handle_error", _drop_connection_on_failover_errors)
    return engine


def is_connectivity_error(exc: BaseException) -> bool:
    """True when the error says the server is unreachable, not that the SQL was wrong."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # 2003/2005: cannot connect, 1040: too many connections, 2055: lost at the socket layer,
    # 1045: the login refused even with the secret read again (see `log_in`).
    return isinstance(exc, OperationalError) and (
        mysql_error_code(exc) in FAILOVER_ERROR_CODES | {1040, 1045, 2003, 2005, 2055}
    )


def raise_if_primary_lost(exc: BaseException) -> None:
    """Raise a primary that is unreachable or was lost (failover, outage) as
    DatabaseUnavailable, which the API answers with a retryable 503; other errors are the
    caller's to raise."""
    if is_connectivity_error(exc):
        raise DatabaseUnavailable("primary", short_reason(exc)) from exc


@dataclass(frozen=True)
class ReplicaState:
    usable: bool
    status: str  # "ok" or a short reason
    lag_seconds: float | None


class ReplicaMonitor:
    """Decides whether queries may use the replica: reachable, replicating, lag in bound.

    A reading is cached for `interval` seconds so a busy container asks the replica at most
    once a second; a query that fails on the replica marks it unusable at once.
    """

    def __init__(
        self,
        reader: Engine,
        *,
        max_lag_seconds: float,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._max_lag = max_lag_seconds
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state: ReplicaState | None = None
        self._read_at = 0.0

    def state(self) -> ReplicaState:
        with self._lock:
            now = self._clock()
            if self._state is None or now - self._read_at >= self._interval:
                self._state = self.probe()
                self._read_at = now
            return self._state

    def mark_unusable(self, reason: str) -> None:
        with self._lock:
            self._state = ReplicaState(False, reason, None)
            self._read_at = self._clock()

    def probe(self) -> ReplicaState:
        try:
            with self._reader.connect() as conn:
                row = conn.exec_driver_sql("SHOW REPLICA STATUS").mappings().first()
        except DBAPIError as exc:
            return ReplicaState(False, f"unreachable ({short_reason(exc)})", None)
        except PoolTimeoutError:
            return ReplicaState(False, "unreachable (connection pool exhausted)", None)
        if row is None:
            return ReplicaState(False, "not replicating (no replication configured)", None)
        # MariaDB and MySQL < 8.0.22 say Slave/Master, MySQL 8 says Replica/Source.
        io = row.get("Slave_IO_Running", row.get("Replica_IO_Running"))
        sql = row.get("Slave_SQL_Running", row.get("Replica_SQL_Running"))
        lag = row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source"))
        if sql != "Yes":
            return ReplicaState(False, "replication stopped (SQL thread not running)", None)
        if lag is None:
            return ReplicaState(False, f"replication broken (IO thread: {io})", None)
        lag_seconds = float(lag)
        if lag_seconds > self._max_lag:
            return ReplicaState(
                False, f"lagging {lag_seconds:.0f}s (bound {self._max_lag:.0f}s)", lag_seconds
            )
        return ReplicaState(True, "ok", lag_seconds)


def short_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    code = mysql_error_code(exc)
    message = str(getattr(orig, "args", [None, str(orig)])[-1])
    return f"{code}: {message}"[:160] if code else message[:160]


class Database:
    """The three ways into MySQL: the command writer, the replica reader and the
    read-only primary reader that queries fall back to."""

    def __init__(
        self,
        writer: Engine,
        reader: Engine | None,
        primary_reader: Engine,
        monitor: ReplicaMonitor | None,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.primary_reader = primary_reader
        self.monitor = monitor
        # What the engines log in with, re-read from the secret when refused (rotation).
        self.credentials = credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The engines of `settings`, all logging in with one CredentialSource: a rotated
        password refused on any of them is read again once, for all of them."""
        source = CredentialSource(
            lambda fresh: resolve_credentials(settings, fresh=fresh), name="database"
        )
        # One TLS context for the three engines: each costs ~40 ms of CPU to build (the
        # system trust store and the RDS bundle parsed), paid by the first request.
        tls = mysql_tls_context(settings)

        def engine(host: str, port: int, *, read_only: bool, **options: Any) -> Engine:
            built = build_engine(
                settings, source.current, host, port, read_only=read_only, tls=tls, **options
            )
            log_in_with(built, source)
            return built

        primary = (settings.db_primary_host, settings.db_primary_port)
        writer = engine(*primary, read_only=False)
        primary_reader = engine(*primary, read_only=True)
        if (settings.db_replica_host, settings.db_replica_port) == primary:
            return cls(writer, None, primary_reader, None, source)
        # A dead replica must cost a query little before it falls back: short connect timeout.
        reader = engine(
            settings.db_replica_host, settings.db_replica_port, read_only=True, connect_timeout=1
        )
        monitor = ReplicaMonitor(
            reader,
            max_lag_seconds=settings.replica_max_lag_seconds,
            interval_seconds=settings.replica_check_interval_seconds,
        )
        return cls(writer, reader, primary_reader, monitor, source)

    def writer_connection(self) -> Connection:
        """A connection to the primary; the unit of work owns its transaction. Core only:
        the ORM's Session cost a buy-now about a tenth of its CPU (0.4 ms) and a cold start
        sqlalchemy.orm's import, for an identity map nothing uses (repositories.py maps
        rows itself)."""
        return self.writer.connect()

    def run_query(self, query: Callable[[Connection], T]) -> T:
        """Run a read-only query on the replica when it is usable, else on the primary.

        If the replica fails mid-query (stopped, failing over), the same query is retried on
        the primary, so a replica outage costs latency, not errors.
        """
        if self.reader is not None and self.monitor is not None:
            if self.monitor.state().usable:
                try:
                    with self.reader.connect() as conn:
                        return query(conn)
                except Exception as exc:
                    if not is_connectivity_error(exc):
                        raise
                    self.monitor.mark_unusable(f"unreachable ({short_reason(exc)})")
                    log.warning("replica failed during a query; answering from the primary")
        return self.run_on_primary(query)

    def run_on_primary(self, query: Callable[[Connection], T]) -> T:
        """Run a read-only query on the primary (in a read-only transaction): for when the
        answer must include the latest commits, e.g. a consistency token not yet projected."""
        try:
            with self.primary_reader.connect() as conn:
                return query(conn)
        except Exception as exc:
            raise_if_primary_lost(exc)
            raise

    def caught_up_reader(self, timeout_seconds: float = 10.0) -> tuple[Engine, str]:
        """An engine whose reads include every commit made before this call, and its role:
        the replica once it has applied the primary's current GTID position, else (no
        replica, unusable, or not caught up in time) the primary's read-only engine."""
        if self.reader is None or self.monitor is None or not self.monitor.state().usable:
            return self.primary_reader, "primary"
        try:
            # On the read-only engine, as the position is anyone's to read: the relay runs
            # a rebuild beside its loop, whose claims may hold every writer connection.
            with self.primary_reader.connect() as primary:
                version = str(primary.exec_driver_sql("SELECT VERSION()").scalar())
                mariadb = "mariadb" in version.lower()
                gtids = "gtid_binlog_pos" if mariadb else "gtid_executed"
                position = primary.exec_driver_sql(f"SELECT @@GLOBAL.{gtids}").scalar()
            wait = (
                "SELECT MASTER_GTID_WAIT(%s, %s)"
                if mariadb
                else "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)"
            )
            with self.reader.connect() as replica:
                waited = replica.exec_driver_sql(wait, (position or "", timeout_seconds)).scalar()
        except DBAPIError as exc:
            if not is_connectivity_error(exc) and mysql_error_code(exc) is None:
                raise
            log.warning("cannot wait for the replica (%s); reading the primary", short_reason(exc))
            return self.primary_reader, "primary"
        if waited != 0:
            log.warning("the replica did not catch up in %ss; reading the primary", timeout_seconds)
            return self.primary_reader, "primary"
        return self.reader, "replica"

    def ping_primary(self) -> str:
        # Through the read-only engine: a query container then holds no writer connection.
        try:
            with self.primary_reader.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            if is_connectivity_error(exc):
                return f"unavailable ({short_reason(exc)})"
            raise
        return "ok"

    def dispose(self) -> None:
        for engine in (self.writer, self.reader, self.primary_reader):
            if engine is not None:
                engine.dispose()
