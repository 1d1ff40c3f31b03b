"""The application's transactions keep their access mode and isolation on connections that
a proxy multiplexes, as RDS Proxy does with SessionPinningFilters EXCLUDE_VARIABLE_SETS.

The proxy is emulated on the real primary: a few raw PyMySQL "backend" connections shared by
every client session of the app's writer and read-only primary engines (built by
Database.from_settings, as in AWS, where DB_PRIMARY_HOST is the proxy for both). Each
transaction borrows a backend chosen at random and gives it back as it left it, whatever it
SET there: the next borrower, of either engine, inherits that session state. One backend also
carries a `SET SESSION TRANSACTION READ ONLY` from an earlier client (an older version of a
function still running during a deployment). Then every transaction must still be what the
app asked for: the writer's can write, the readers' refuse to (1792), all are READ COMMITTED.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql
import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError
from tests.support.stack import settings_for
from tests.unit.cfn_template import props

from giftmarket.adapters.db import Database, mysql_error_code, mysql_tls_context
from giftmarket.adapters.tables import products
from giftmarket.adapters.unit_of_work import SqlAlchemyUnitOfWork
from giftmarket.projections.rebuild import SnapshotRefused, start_snapshot
from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

READ_ONLY_TRANSACTION = 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
BACKENDS = 4
ROUNDS = 40


def template_init_query() -> str:
    pool = props("DbProxyTargets")["ConnectionPoolConfigurationInfo"]
    query: str = pool["InitQuery"]
    return query


# ---------------------------------------------------------------------------------------
# The emulated proxy


class Backends:
    """The proxy's connections to the primary. A transaction borrows one at random and gives
    it back as it was left: no SET is tracked or undone (EXCLUDE_VARIABLE_SETS)."""

    def __init__(self, init_query: str | None, seed: int) -> None:
        self._init_query = init_query
        self._random = random.Random(seed)
        self._free: list[Any] = []
        self.all: list[Any] = []

    def open(self, connect: Callable[[], Any], count: int) -> None:
        for _ in range(count):
            backend = connect()
            if self._init_query:  # what the proxy runs on each connection it opens
                self.run(backend, self._init_query)
            self._free.append(backend)
            self.all.append(backend)

    @staticmethod
    def run(backend: Any, statement: str) -> None:
        with backend.cursor() as cursor:
            cursor.execute(statement)
        backend.commit()

    def borrow(self) -> Any:
        if not self._free:
            raise AssertionError("every emulated backend connection is in a transaction")
        backend = self._random.choice(self._free)
        self._free.remove(backend)
        return backend

    def give_back(self, backend: Any) -> None:
        self._free.append(backend)

    def any(self) -> Any:
        """A backend to ask something outside any transaction (ping, server version)."""
        return self._random.choice(self.all)

    def close(self) -> None:
        for backend in self.all:
            backend.close()


class ClientSession:
    """What the app's pool holds in place of a PyMySQL connection: its session with the
    proxy. A backend is borrowed at the first statement and given back when the transaction
    ends (commit, rollback, a COMMIT or ROLLBACK statement)."""

    def __init__(self, backends: Backends, init_command: str | None) -> None:
        self._backends = backends
        self._backend: Any = None
        if init_command:
            # PyMySQL runs it once, as it connects (then commits): on one backend only.
            self.cursor().execute(init_command)
            self.commit()

    def bound(self) -> Any:
        if self._backend is None:
            self._backend = self._backends.borrow()
        return self._backend

    def end_transaction(self) -> None:
        if self._backend is not None:
            self._backends.give_back(self._backend)
            self._backend = None

    def cursor(self, *args: Any) -> ClientCursor:
        return ClientCursor(self)

    def commit(self) -> None:
        if self._backend is not None:
            self._backend.commit()
        self.end_transaction()

    def rollback(self) -> None:
        if self._backend is not None:
            self._backend.rollback()
        self.end_transaction()

    def close(self) -> None:
        self.rollback()

    def __getattr__(self, name: str) -> Any:
        # ping, get_server_info, character_set_name...: answered by any backend.
        return getattr(self._backend or self._backends.any(), name)


class ClientCursor:
    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self._cursor: Any = None

    def _run(self, method: str, query: str, args: Any) -> Any:
        self._cursor = self._session.bound().cursor()
        try:
            return getattr(self._cursor, method)(query, args)
        finally:
            if query.strip().upper() in ("COMMIT", "ROLLBACK"):
                self._session.end_transaction()

    def execute(self, query: str, args: Any = None) -> Any:
        return self._run("execute", query, args)

    def executemany(self, query: str, args: Any) -> Any:
        return self._run("executemany", query, args)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def behind_the_proxy(engines: list[Engine], backends: Backends, first_leak: str) -> None:
    """Every new connection of `engines` becomes a ClientSession of `backends`, which are
    opened at the first (as the app asks for its connections, minus init_command)."""
    for engine in engines:
        dialect = engine.dialect
        dbapi_connect = dialect.connect

        def connect(*cargs: Any, _dbapi_connect: Any = dbapi_connect, **cparams: Any) -> Any:
            if not backends.all:
                params = {k: v for k, v in cparams.items() if k != "init_command"}
                backends.open(lambda: _dbapi_connect(*cargs, **params), BACKENDS)
                backends.run(backends.all[0], first_leak)
            return ClientSession(backends, cparams.get("init_command"))

        # The dialect's own connect, which the app's login listener (log_in_with) calls with
        # the credentials: the app's whole path to a connection is kept.
        setattr(dialect, "connect", connect)  # noqa: B010 - an instance attribute on purpose


# ---------------------------------------------------------------------------------------
# The checks, inside one transaction


Runner = Connection


def backend_id(runner: Runner) -> int:
    return int(runner.execute(text("SELECT CONNECTION_ID()")).scalar_one())


@dataclass
class Probe:
    """Two rows: one whose name another connection changes between two reads, and one the
    transactions try to write."""

    other: Any  # a direct autocommit connection, not behind the proxy
    read_row: str
    write_row: str
    seen: dict[str, set[int]] = field(default_factory=dict)

    def read(self, runner: Runner) -> str:
        query = text("SELECT name FROM products WHERE id = :id")
        return str(runner.execute(query, {"id": self.read_row}).scalar_one())

    def change_from_outside(self) -> str:
        """Another connection renames the read row, committed at once; the new name."""
        changed = uuid.uuid4().hex
        with self.other.cursor() as cursor:
            cursor.execute("UPDATE products SET name = %s WHERE id = %s", (changed, self.read_row))
        return changed

    def read_committed(self, runner: Runner, where: str) -> None:
        first = self.read(runner)
        changed = self.change_from_outside()
        second = self.read(runner)
        assert second == changed != first, (
            f"{where}: a commit made between two reads of one transaction was not seen by "
            f"the second: not READ COMMITTED"
        )

    def write(self, runner: Runner) -> int | None:
        """None if the write went through, else the MySQL error it got."""
        try:
            runner.execute(
                text("UPDATE products SET brand = :brand WHERE id = :id"),
                {"brand": uuid.uuid4().hex[:20], "id": self.write_row},
            )
        except DBAPIError as exc:
            return mysql_error_code(exc)
        return None

    def record(self, kind: str, runner: Runner) -> tuple[int, str]:
        backend = backend_id(runner)
        self.seen.setdefault(kind, set()).add(backend)
        return backend, f"{kind} on backend {backend}"


# ---------------------------------------------------------------------------------------
# Fixtures


def direct_connection(settings: Settings) -> Any:
    return pymysql.connect(
        host=settings.db_primary_host,
        port=settings.db_primary_port,
        user=settings.db_user,
        password=settings.db_password.get_secret_value(),
        database=settings.db_name,
        ssl=mysql_tls_context(settings),
        autocommit=True,
    )


@pytest.fixture
def probe(stack: Stack) -> Iterator[Probe]:
    other = direct_connection(settings_for(stack))
    ids = [uuid.uuid4().hex[:26].upper() for _ in range(2)]
    with other.cursor() as cursor:
        for product_id in ids:
            cursor.execute(
                "INSERT INTO products (id, name, brand, category, face_value, created_at)"
                " VALUES (%s, 'probe', 'probe', 'coffee', 1000, %s)",
                (product_id, datetime.now(UTC).replace(tzinfo=None)),
            )
    yield Probe(other, read_row=ids[0], write_row=ids[1])
    with other.cursor() as cursor:
        cursor.execute("DELETE FROM products WHERE id IN (%s, %s)", ids)
    other.close()


def proxied_database(stack: Stack, init_query: str | None, seed: int) -> tuple[Database, Backends]:
    """The app's Database on the primary only (the replica is the primary, so queries use
    the read-only primary engine), its two engines behind one emulated proxy."""
    host, port = stack.config.host, stack.config.primary_port
    database = Database.from_settings(
        settings_for(stack, db_replica_host=host, db_replica_port=port)
    )
    backends = Backends(init_query, seed)
    # As an older function version would leave it on its connection during a deployment.
    behind_the_proxy(
        [database.writer, database.primary_reader], backends, "SET SESSION TRANSACTION READ ONLY"
    )
    return database, backends


# ---------------------------------------------------------------------------------------
# The test


@pytest.mark.parametrize("init_query", ["template's InitQuery", "server default only"])
def test_every_transaction_keeps_its_access_mode_and_isolation_on_multiplexed_connections(
    stack: Stack, probe: Probe, init_query: str
) -> None:
    run_first = template_init_query() if init_query == "template's InitQuery" else None
    database, backends = proxied_database(stack, run_first, seed=14)

    def writer_transaction() -> None:
        with database.writer.begin() as conn:
            _, where = probe.record("writer", conn)
            probe.read_committed(conn, where)
            assert probe.write(conn) is None, f"{where}: the writer could not write"

    def reader_transaction() -> None:
        with database.primary_reader.connect() as conn:
            _, where = probe.record("primary reader", conn)
            probe.read_committed(conn, where)
            assert probe.write(conn) == READ_ONLY_TRANSACTION, f"{where}: a reader could write"

    def unit_of_work() -> None:
        with SqlAlchemyUnitOfWork(database) as uow:
            _, where = probe.record("unit of work", uow.session)
            probe.read_committed(uow.session, where)
            marker = uuid.uuid4().hex[:20]
            uow.session.execute(
                products.update().where(products.c.id == probe.write_row).values(brand=marker)
            )
            uow.commit()
        with probe.other.cursor() as cursor:
            cursor.execute("SELECT brand FROM products WHERE id = %s", (probe.write_row,))
            assert cursor.fetchone() == (marker,), f"{where}: the commit did not land"

    def query(session: Connection) -> int | None:
        _, where = probe.record("run_query", session)
        probe.read_committed(session, where)
        return probe.write(session)

    def run_query() -> None:
        assert database.run_query(query) == READ_ONLY_TRANSACTION, "run_query could write"

    kinds = [writer_transaction, reader_transaction, unit_of_work, run_query]
    order = random.Random(14)
    try:
        for _ in range(ROUNDS):
            for kind in order.sample(kinds, len(kinds)):
                kind()
    finally:
        database.dispose()
        backends.close()

    # The emulation did multiplex: each kind ran on several backends, and writers and
    # readers took turns on the same ones.
    assert all(len(ids) > 1 for ids in probe.seen.values()), probe.seen
    writers = probe.seen["writer"] | probe.seen["unit of work"]
    readers = probe.seen["primary reader"] | probe.seen["run_query"]
    assert writers & readers, probe.seen


# ---------------------------------------------------------------------------------------
# The statements themselves


@pytest.fixture
def database_on_primary(stack: Stack) -> Iterator[Database]:
    host, port = stack.config.host, stack.config.primary_port
    db = Database.from_settings(settings_for(stack, db_replica_host=host, db_replica_port=port))
    yield db
    db.dispose()


def statements_of(engine: Engine, work: Callable[[], None]) -> list[str]:
    sent: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return sent


def test_each_transaction_starts_by_naming_its_access_mode(database_on_primary: Database) -> None:
    db = database_on_primary

    def two_writer_transactions() -> None:
        for _ in range(2):
            with db.writer.begin() as conn:
                conn.execute(text("SELECT 1"))

    writer = statements_of(db.writer, two_writer_transactions)
    reader = statements_of(
        db.primary_reader, lambda: db.run_query(lambda s: s.execute(text("SELECT 1")).scalar())
    )

    assert writer == ["START TRANSACTION READ WRITE", "SELECT 1"] * 2
    assert reader == ["START TRANSACTION READ ONLY", "SELECT 1"]


def assert_none(value: object) -> None:
    assert value is None, value


def test_an_autocommit_connection_starts_no_transaction(
    database_on_primary: Database, probe: Probe
) -> None:
    db = database_on_primary
    with db.writer.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        sent = statements_of(db.writer, lambda: assert_none(probe.write(conn)))
        # Committed by itself: another connection sees it while this one is still open.
        with probe.other.cursor() as cursor:
            cursor.execute("SELECT brand FROM products WHERE id = %s", (probe.write_row,))
            (brand,) = cursor.fetchone()

    assert sent == ["UPDATE products SET brand = %(brand)s WHERE id = %(id)s"]
    assert brand != "probe"


def test_the_servers_default_isolation_is_read_committed(stack: Stack) -> None:
    for server in (stack.primary, stack.replica):
        assert server.sql("SELECT @@GLOBAL.tx_isolation") == "READ-COMMITTED"


# ---------------------------------------------------------------------------------------
# The one transaction that needs another isolation: the read-model rebuild's snapshot


def test_the_rebuild_snapshot_is_consistent_and_read_only_or_refused(
    stack: Stack, probe: Probe
) -> None:
    database, backends = proxied_database(stack, template_init_query(), seed=7)
    outcomes: Counter[str] = Counter()
    try:
        for _ in range(ROUNDS):
            with database.primary_reader.connect() as conn:
                try:
                    snapshot = start_snapshot(conn)
                except SnapshotRefused:
                    outcomes["refused"] += 1
                    continue
                _, where = probe.record("snapshot", snapshot)
                first = probe.read(snapshot)
                probe.change_from_outside()
                # REPEATABLE READ with its snapshot: the change made since is not seen.
                assert probe.read(snapshot) == first, f"{where}: the snapshot moved"
                assert probe.write(snapshot) == READ_ONLY_TRANSACTION, f"{where}: it could write"
                snapshot.rollback()
                outcomes["consistent"] += 1
    finally:
        database.dispose()
        backends.close()
    # Behind a proxy that does not carry the SET along, some snapshots are refused; none is
    # ever torn or writable.
    assert outcomes["consistent"] > 0, outcomes
    assert sum(outcomes.values()) == ROUNDS
