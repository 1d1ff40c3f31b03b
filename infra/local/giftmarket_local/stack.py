"""The local stack on real parts and no Docker.

A MariaDB primary, a second MariaDB server replicating from it with GTID (read_only),
Redis, LocalStack and a development OpenID provider (registered with the app as provider
``local``), all on loopback, each a ManagedProcess with its PID file under the profile's
folder (``.local/<profile>/``). ``up`` is idempotent: it starts what is not
running and initialises the databases only once; data lives in the profile's folder and
survives restarts.

Every server speaks TLS only, with a certificate from the stack folder's own CA
(``<folder>/tls/ca.pem``, made at the first ``up``): MariaDB refuses plain TCP connections
(``require_secure_transport``, as the RDS parameter group does), Redis listens on a TLS port
only, and the replica replicates over TLS, checking the primary's certificate and host name.
The options are given on each server's command line at every start, so a stack folder made
before TLS comes up with TLS at its next ``up``. Root reaches MariaDB over its Unix socket,
which ``require_secure_transport`` allows (a local socket is a secure transport).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giftmarket.settings import Settings
from giftmarket_local.processes import ManagedProcess, ProcessError, port_open
from giftmarket_local.tls import TlsFiles, ensure_local_tls

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType

REPO_ROOT = Path(__file__).resolve().parents[3]
# Installed tools (LocalStack's own virtualenv) stay in the repo's .local/venvs; the state of
# the stacks (data, logs, PID files) goes under GM_LOCAL_DIR, .local by default.
LOCALSTACK_PYTHON = REPO_ROOT / ".local" / "venvs" / "localstack" / "bin" / "python"
# oidc-provider-mock, in its own virtualenv too (infra/local/bootstrap.sh).
OIDC_PYTHON = REPO_ROOT / ".local" / "venvs" / "oidc" / "bin" / "python"


LOCAL_ADMIN_EMAIL = "admin@giftmarket.local"
# The audience the local provider's ID tokens are asked for: the provider accepts any client
# id without registration, the app accepts only the ones it is configured with.
LOCAL_OIDC_CLIENT_ID = "giftmarket-local"


def local_dir() -> Path:
    return Path(os.environ.get("GM_LOCAL_DIR", REPO_ROOT / ".local"))


# Each profile has its own ports and folder, so `make test` never touches `make run`'s data.
_DEFAULT_PORTS: dict[str, dict[str, int]] = {
    "run": {"primary": 13306, "replica": 13307, "redis": 16379, "localstack": 4566, "oidc": 19400},
    "test": {
        "primary": 23306,
        "replica": 23307,
        "redis": 26379,
        "localstack": 24566,
        "oidc": 29400,
    },
}


def _oidc_providers_from_env() -> dict[str, Any]:
    """OIDC_PROVIDERS as given to `make run` (name → provider), checked for shape only: the
    application validates each provider's fields."""
    raw = os.environ.get("OIDC_PROVIDERS", "").strip()
    if not raw:
        return {}
    try:
        providers = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"OIDC_PROVIDERS is not valid JSON: {exc}") from exc
    if not isinstance(providers, dict) or not all(
        isinstance(provider, dict) for provider in providers.values()
    ):
        raise ValueError(
            "OIDC_PROVIDERS must be a JSON object of provider name → "
            '{"issuer": ..., "client_ids": [...], "trust_email": ...}'
        )
    return providers


@dataclass(frozen=True)
class StackConfig:
    profile: str
    root: Path
    primary_port: int
    replica_port: int
    redis_port: int
    localstack_port: int
    oidc_port: int
    host: str = "127.0.0.1"
    db_name: str = "giftmarket"
    db_user: str = "giftmarket"
    db_password: str = "giftmarket-local"  # noqa: S105 - loopback-only development database
    repl_user: str = "repl"
    repl_password: str = "repl-local"  # noqa: S105
    durable: bool = True
    images_bucket: str = "giftmarket-images"
    events_queue: str = "giftmarket-events.fifo"
    events_dlq: str = "giftmarket-events-dlq.fifo"
    region: str = "us-east-1"

    @classmethod
    def for_profile(cls, profile: str) -> StackConfig:
        """Defaults per profile; each port can be overridden, e.g. GM_RUN_PRIMARY_PORT."""
        if profile not in _DEFAULT_PORTS:
            raise ValueError(f"unknown profile {profile!r}; use one of {sorted(_DEFAULT_PORTS)}")

        def port(service: str) -> int:
            env = f"GM_{profile.upper()}_{service.upper()}_PORT"
            return int(os.environ.get(env, _DEFAULT_PORTS[profile][service]))

        return cls(
            profile=profile,
            root=local_dir() / profile,
            primary_port=port("primary"),
            replica_port=port("replica"),
            redis_port=port("redis"),
            localstack_port=port("localstack"),
            oidc_port=port("oidc"),
            # Tests trade fsync-per-commit for speed; the run profile keeps production durability.
            durable=profile != "test",
        )

    @property
    def tls(self) -> TlsFiles:
        """The stack folder's CA and server certificate (see giftmarket_local.tls)."""
        return TlsFiles(self.root / "tls")

    @property
    def ca_path(self) -> Path:
        """The CA every client of this stack's servers verifies them with."""
        return self.tls.ca_cert

    @property
    def localstack_url(self) -> str:
        return f"http://{self.host}:{self.localstack_port}"

    @property
    def oidc_issuer(self) -> str:
        """The local provider's issuer: it names itself after the Host it is reached by, so
        tokens must be asked for at this very URL (not localhost)."""
        return f"http://{self.host}:{self.oidc_port}"

    def oidc_providers(self) -> dict[str, Any]:
        """The `local` provider, then those of the environment's OIDC_PROVIDERS (an entry
        named `local` there replaces ours, e.g. to try trust_email false)."""
        local = {
            "issuer": self.oidc_issuer,
            "client_ids": [LOCAL_OIDC_CLIENT_ID],
            "trust_email": True,
        }
        return {"local": local, **_oidc_providers_from_env()}

    def socket_path(self, server: str) -> Path:
        # Unix socket paths are limited to 108 bytes: a short name in /tmp, unique per stack folder.
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:10]
        return Path("/tmp") / f"giftmarket-{digest}-{server}.sock"

    def app_settings(self, **overrides: Any) -> Settings:
        """giftmarket's Settings for this stack, as a process with app_env() would read them."""
        values: dict[str, Any] = {
            key.lower(): value
            for key, value in self.app_env().items()
            if key.lower() in Settings.model_fields
        }
        values.update(overrides)
        return Settings.model_validate(values)

    def app_env(self) -> dict[str, str]:
        """The settings the giftmarket package reads (see giftmarket.settings)."""
        account = "000000000000"
        queue_base = f"{self.localstack_url}/queue/{self.region}/{account}"
        return {
            "ENVIRONMENT": "local",
            "DB_PRIMARY_HOST": self.host,
            "DB_PRIMARY_PORT": str(self.primary_port),
            "DB_REPLICA_HOST": self.host,
            "DB_REPLICA_PORT": str(self.replica_port),
            "DB_NAME": self.db_name,
            "DB_USER": self.db_user,
            "DB_PASSWORD": self.db_password,
            # TLS only: the servers' certificates are checked against the stack's own CA.
            "DB_SSL_CA": str(self.ca_path),
            "REDIS_URL": f"rediss://{self.host}:{self.redis_port}/0",
            "REDIS_SSL_CA": str(self.ca_path),
            "AWS_ENDPOINT_URL": self.localstack_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",  # noqa: S105 - LocalStack's fixed dummy credentials
            "IMAGES_BUCKET": self.images_bucket,
            "EVENTS_QUEUE_URL": f"{queue_base}/{self.events_queue}",
            "EVENTS_DLQ_URL": f"{queue_base}/{self.events_dlq}",
            # The local stack's convenience only (PRODUCT.md): a deployed stage has no admin
            # email; `ADMIN_EMAILS= make run` starts one without, as AWS is.
            "ADMIN_EMAILS": os.environ.get("ADMIN_EMAILS", LOCAL_ADMIN_EMAIL),
            "OIDC_PROVIDERS": json.dumps(self.oidc_providers()),
        }


def _require(binary: str) -> str:
    path = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/bin") / binary) if p.exists()),
        None,
    )
    if path is None:
        raise ProcessError(f"{binary} not found: run infra/local/bootstrap.sh (make run/test do)")
    return path


class MariaDB:
    """One mariadbd with its own data dir; root is reached over its Unix socket only."""

    def __init__(self, config: StackConfig, role: str, server_id: int, port: int) -> None:
        self.config = config
        self.role = role
        self.server_id = server_id
        self.port = port
        self.datadir = config.root / "data" / role
        # Its own temporary folder: a MariaDB server starting removes what it takes for its
        # leftover temporary tables from its tmpdir, and in a shared /tmp those can be
        # another server's, starting at the same moment (the two test workers' stacks:
        # "Could not remove temporary table '/tmp/#sql-temptable-…'", then the install
        # aborts on "Unknown table 'mysql.tmp_user_sys'").
        self.tmpdir = config.root / "tmp" / role
        self.socket = config.socket_path(role)
        argv = [
            _require("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--tmpdir={self.tmpdir}",
            f"--port={port}",
            f"--bind-address={config.host}",
            f"--socket={self.socket}",
            f"--pid-file={config.root / 'run' / (role + '.mariadb.pid')}",
            "--user=root",
            f"--server-id={server_id}",
            "--log-bin=binlog",
            "--binlog-format=ROW",
            # As the RDS parameter group (transaction_isolation): commands run READ COMMITTED
            # without depending on a session's SET (tests/unit/test_db_parameter_parity.py).
            "--transaction-isolation=READ-COMMITTED",
            "--log-slave-updates=1",
            "--gtid-strict-mode=1",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=256M",
            "--max-connections=400",
            f"--innodb-flush-log-at-trx-commit={1 if config.durable else 2}",
            f"--sync-binlog={1 if config.durable else 0}",
            f"--log-error={config.root / 'log' / (role + '.err')}",
            # TLS, and nothing else over TCP (the Unix socket counts as secure).
            f"--ssl-ca={config.tls.ca_cert}",
            f"--ssl-cert={config.tls.server_cert}",
            f"--ssl-key={config.tls.server_key}",
            "--tls-version=TLSv1.2,TLSv1.3",
            "--require-secure-transport=ON",
        ]
        if role == "replica":
            argv += ["--read-only=1", "--relay-log=relay", "--slave-net-timeout=10"]
        self.process = ManagedProcess(
            name=role,
            argv=argv,
            run_dir=config.root / "run",
            log_dir=config.root / "log",
            ready=self.accepts_connections,
            marker=f"--datadir={self.datadir}",
            port=port,
            ready_timeout=60,
            stop_timeout=60,
            folders=(self.tmpdir,),
        )

    def accepts_connections(self) -> bool:
        if not self.socket.exists() or not port_open(self.config.host, self.port):
            return False
        try:
            self.sql("SELECT 1")
        except ProcessError:
            return False
        return True

    def sql(self, statements: str, timeout: float = 30) -> str:
        result = subprocess.run(
            [
                _require("mariadb"),
                "--no-defaults",
                f"--socket={self.socket}",
                "--user=root",
                "--batch",
                "--skip-column-names",
                "--execute",
                statements,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ProcessError(f"{self.role}: {result.stderr.strip()}")
        return result.stdout.strip()

    def install(self) -> None:
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        self.datadir.mkdir(parents=True)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        (self.config.root / "log").mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                _require("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--tmpdir={self.tmpdir}",  # passed on to the bootstrap server
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            # What the bootstrap server said is the only account of why: keep its end.
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-20:]
            raise ProcessError(
                f"{self.role}: mariadb-install-db exited {result.returncode} in {self.datadir}"
                + "".join(f"\n  {line}" for line in said)
            )


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.primary = MariaDB(config, "primary", 1, config.primary_port)
        self.replica = MariaDB(config, "replica", 2, config.replica_port)
        redis_dir = config.root / "data" / "redis"
        self.redis = ManagedProcess(
            name="redis",
            argv=[
                _require("redis-server"),
                "--bind",
                config.host,
                # TLS only: no plain port at all; clients need no certificate of their own.
                "--port",
                "0",
                "--tls-port",
                str(config.redis_port),
                "--tls-cert-file",
                str(config.tls.server_cert),
                "--tls-key-file",
                str(config.tls.server_key),
                "--tls-ca-cert-file",
                str(config.tls.ca_cert),
                "--tls-auth-clients",
                "no",
                "--tls-protocols",
                "TLSv1.2 TLSv1.3",
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes" if config.durable else "no",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            run_dir=config.root / "run",
            log_dir=config.root / "log",
            ready=self._redis_answers_tls,
            marker=f"{config.host}:{config.redis_port}",
            port=config.redis_port,
            # Stopping is bounded (`make run` must stop): read models can always be rebuilt.
            stop_timeout=10,
        )
        ls_root = config.root / "localstack"
        self.localstack = ManagedProcess(
            name="localstack",
            argv=[str(LOCALSTACK_PYTHON), "-m", "localstack.runtime.main"],
            run_dir=config.root / "run",
            log_dir=config.root / "log",
            ready=self._localstack_ready,
            env={
                "GATEWAY_LISTEN": f"{config.host}:{config.localstack_port}",
                "LOCALSTACK_HOST": f"{config.host}:{config.localstack_port}",
                "DNS_ADDRESS": "0",
                "FILESYSTEM_ROOT": str(ls_root),
                "SERVICES": "sqs,s3,events,scheduler,secretsmanager,cloudwatch,logs",
                # Start every service before reporting ready: a SIGTERM that arrives while a
                # lazily loaded service is still starting can leave LocalStack hanging in its
                # shutdown (seen with SQS: "Stopping all services", then nothing).
                "EAGER_SERVICE_LOADING": "1",
                # Path-style queue URLs: no DNS name to resolve on a machine without a network.
                "SQS_ENDPOINT_STRATEGY": "path",
                # LocalStack's SQS puts a CloudWatch metric through its own HTTP API for each
                # message sent (two), each receive and each delete call, on a pool of 3
                # threads whose backlog drains for a minute after the load ends: most of its
                # CPU, on the cores the whole stack shares (benchmarks/README). Nothing here
                # reads those metrics, and in AWS they cost the sender nothing.
                "SQS_DISABLE_CLOUDWATCH_METRICS": "1",
                "SKIP_SSL_CERT_DOWNLOAD": "1",
                "DISABLE_EVENTS": "1",
                "LOCALSTACK_TELEMETRY": "0",
                "PYTHONUNBUFFERED": "1",
            },
            marker="localstack.runtime.main",
            port=config.localstack_port,
            ready_timeout=120,
            # The community edition keeps no state, so a SIGKILL after a hung shutdown (seen:
            # "Stopping all services", then nothing) loses nothing.
            stop_timeout=10,
        )
        self._redis_dir = redis_dir
        self.oidc = ManagedProcess(
            name="oidc",
            argv=[
                str(OIDC_PYTHON),
                "-m",
                "oidc_provider_mock",
                "-H",
                config.host,
                "-p",
                str(config.oidc_port),
            ],
            run_dir=config.root / "run",
            log_dir=config.root / "log",
            ready=self._oidc_ready,
            env={"NO_COLOR": "1", "PYTHONUNBUFFERED": "1"},
            marker="-m oidc_provider_mock",
            port=config.oidc_port,
            ready_timeout=30,
            # Users and keys live in memory only, and a new key at each start is the point.
            stop_timeout=5,
        )

    @property
    def processes(self) -> list[ManagedProcess]:
        return [
            self.primary.process,
            self.replica.process,
            self.redis,
            self.localstack,
            self.oidc,
        ]

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def _initialized_marker(self) -> Path:
        return self.config.root / "data" / ".initialized"

    def up(self) -> list[str]:
        """Start whatever is not running; returns the names of the processes started now."""
        started: list[str] = []
        self.config.app_env()  # a malformed OIDC_PROVIDERS fails before anything starts
        try:
            ensure_local_tls(self.config.tls.folder)
            self._stop_servers_without_tls()
            if not self._initialized_marker.exists():
                started += self._initialize_databases()
            else:
                started += [
                    p.name for p in (self.primary.process, self.replica.process) if p.start()
                ]
                self._ensure_replicating()
            self._redis_dir.mkdir(parents=True, exist_ok=True)
            if self.redis.start():
                started.append("redis")
            if not LOCALSTACK_PYTHON.exists():
                raise ProcessError(
                    f"LocalStack venv missing at {LOCALSTACK_PYTHON}: run infra/local/bootstrap.sh"
                )
            if self.localstack.start():
                started.append("localstack")
            if not OIDC_PYTHON.exists():
                raise ProcessError(
                    f"OpenID provider venv missing at {OIDC_PYTHON}: run infra/local/bootstrap.sh"
                )
            if self.oidc.start():
                started.append("oidc")
            self.provision_aws()
        except BaseException:
            self.stop(started)
            raise
        self._write_state()
        return started

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop the named processes (all by default), the databases last, replica first."""
        order = [
            self.oidc,
            self.localstack,
            self.redis,
            self.replica.process,
            self.primary.process,
        ]
        stopped: list[str] = []
        errors: list[ProcessError] = []
        for process in order:
            if names is not None and process.name not in names:
                continue
            try:
                if process.stop():
                    stopped.append(process.name)
            except ProcessError as exc:
                errors.append(exc)  # still stop the others
        if errors:
            raise ProcessError("; ".join(str(e) for e in errors))
        return stopped

    def status(self) -> dict[str, int | None]:
        return {p.name: p.pid() for p in self.processes}

    def _initialize_databases(self) -> list[str]:
        # Only a stack that never finished initialising gets here: nothing worth keeping.
        self.stop([self.primary.process.name, self.replica.process.name])
        self.primary.install()
        self.replica.install()
        started = [p.name for p in (self.primary.process, self.replica.process) if p.start()]
        # The replication account is created outside the binlog; everything after it is
        # replicated, so both servers end up with the same schema and application user.
        self.create_replication_user()
        self.start_replicating(gtid_slave_pos="")
        c = self.config
        self.primary.sql(
            f"CREATE DATABASE IF NOT EXISTS `{c.db_name}` CHARACTER SET utf8mb4;"
            + self.application_user_sql()
        )
        self.wait_replica_caught_up(timeout=30)
        self._initialized_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        return started

    def create_replication_user(self) -> None:
        """The account the replica connects as, on the primary, outside the binlog."""
        c = self.config
        repl = f"'{c.repl_user}'@'{c.host}'"
        self.primary.sql(
            "SET sql_log_bin=0;"
            f"CREATE USER IF NOT EXISTS {repl} IDENTIFIED BY '{c.repl_password}';"
            f"GRANT REPLICATION SLAVE ON *.* TO {repl};"
            "SET sql_log_bin=1;"
        )

    def start_replicating(self, *, gtid_slave_pos: str) -> None:
        """Point the replica at the primary, from `gtid_slave_pos` on, and start it."""
        c = self.config
        self.replica.sql(
            f"STOP SLAVE; RESET SLAVE ALL; SET GLOBAL gtid_slave_pos='{gtid_slave_pos}';"
            f"CHANGE MASTER TO MASTER_HOST='{c.host}', MASTER_PORT={c.primary_port},"
            f" MASTER_USER='{c.repl_user}', MASTER_PASSWORD='{c.repl_password}',"
            " MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1,"
            f" {self._replication_tls_sql()};"
            "START SLAVE;"
        )

    def _replication_tls_sql(self) -> str:
        # The replica checks the primary's certificate against the stack's CA and its host
        # name (127.0.0.1, an IP name of the certificate), as any client must.
        return (
            f"MASTER_SSL=1, MASTER_SSL_CA='{self.config.ca_path}', MASTER_SSL_VERIFY_SERVER_CERT=1"
        )

    def application_user_sql(self) -> str:
        c = self.config
        return (
            f"CREATE USER IF NOT EXISTS '{c.db_user}'@'{c.host}' IDENTIFIED BY '{c.db_password}';"
            f"GRANT ALL PRIVILEGES ON `{c.db_name}`.* TO '{c.db_user}'@'{c.host}';"
            # Lets the application read its replica's lag (SHOW REPLICA STATUS).
            f"GRANT SLAVE MONITOR, REPLICATION CLIENT ON *.* TO '{c.db_user}'@'{c.host}';"
        )

    def _ensure_replicating(self) -> None:
        status = self.replica_status()
        over_tls = (
            status.get("Master_SSL_Allowed") == "Yes"
            and status.get("Master_SSL_Verify_Server_Cert") == "Yes"
            and status.get("Master_SSL_CA_File") == str(self.config.ca_path)
        )
        if not over_tls:
            # A replica set up before TLS (or with another stack folder's CA): same position,
            # now over TLS. CHANGE MASTER keeps every option it is not given.
            self.replica.sql(f"STOP SLAVE; CHANGE MASTER TO {self._replication_tls_sql()}")
            status = {}
        if status.get("Slave_SQL_Running") != "Yes" or status.get("Slave_IO_Running") != "Yes":
            self.replica.sql("START SLAVE")

    def _redis_answers_tls(self) -> bool:
        """Redis is ready when it completes a TLS handshake and answers PING over it."""
        import redis

        if not port_open(self.config.host, self.config.redis_port):
            return False
        try:
            self._ping_redis_over_tls()
        except redis.RedisError:
            return False
        return True

    def _ping_redis_over_tls(self) -> None:
        import redis

        c = self.config
        client = redis.Redis(
            host=c.host,
            port=c.redis_port,
            ssl=True,
            ssl_ca_certs=str(c.ca_path),
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        try:
            client.ping()
        except redis.BusyLoadingError:
            pass  # TLS works; it answers commands once its data is loaded
        finally:
            client.close()

    def _stop_servers_without_tls(self) -> None:
        """Servers of this stack still running from before TLS (a stack kept up across the
        change) are stopped, so they start again below with TLS."""
        for db in (self.primary, self.replica):
            if db.process.is_running():
                try:
                    secure = db.sql("SELECT @@require_secure_transport") == "1"
                except ProcessError:
                    continue  # not answering: let start() wait for it or report it
                if not secure:
                    db.process.stop(answering=True)
        if self.redis.is_running() and self._redis_answers_in_clear():
            self.redis.stop(answering=True)

    def _redis_answers_in_clear(self) -> bool:
        """Whether our Redis answers a PING sent in clear (a TLS-only one hangs up)."""
        try:
            with socket.create_connection(
                (self.config.host, self.config.redis_port), timeout=2
            ) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def replica_status(self) -> dict[str, str]:
        out = subprocess.run(
            [
                _require("mariadb"),
                "--no-defaults",
                f"--socket={self.replica.socket}",
                "--user=root",
                "--execute",
                "SHOW REPLICA STATUS\\G",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        fields = {}
        for line in out.splitlines():
            key, sep, value = line.strip().partition(": ")
            if sep:
                fields[key] = value
        return fields

    def wait_replica_caught_up(self, timeout: float = 30) -> float:
        """Block until the replica has applied the primary's current GTID position. Fails at
        once, with the replica's own error, when its SQL thread has stopped (a full disk, a
        row it cannot apply): waiting would only run out the timeout, which is an hour
        after a benchmark's seeding (`purge_binlogs`)."""
        started = time.monotonic()
        position = self.primary.sql("SELECT @@gtid_binlog_pos")
        while True:
            left = timeout - (time.monotonic() - started)
            step = max(0.0, min(left, 5.0))
            result = self.replica.sql(
                f"SELECT MASTER_GTID_WAIT('{position}', {step:.3f})", timeout=step + 10
            )
            if result.strip() == "0":
                return time.monotonic() - started
            status = self.replica_status()
            if status.get("Slave_SQL_Running") == "No":
                error = status.get("Last_SQL_Error") or "stopped, with no error given"
                raise ProcessError(f"replication stopped before {position}: {error}")
            if left <= step:
                raise ProcessError(f"replica did not reach {position} within {timeout}s")

    def purge_binlogs(self) -> None:
        """Drop the primary's binary logs once the replica has applied them: a benchmark's
        seeding writes gigabytes of them, which nothing needs afterwards. The replica must
        have moved on to the primary's new log first, or the one it reads is kept. (The
        replica's own logs, which log-slave-updates writes, are left: a purge there kept
        them in a trial, and the failover drill reads the promoted replica's position.)"""
        self.primary.sql("FLUSH BINARY LOGS")
        self.wait_replica_caught_up(timeout=3600)
        current = self.primary.sql("FLUSH BINARY LOGS; SHOW MASTER STATUS").split()[0]
        self.primary.sql(f"PURGE BINARY LOGS TO '{current}'")

    def _localstack_ready(self) -> bool:
        try:
            url = f"{self.config.localstack_url}/_localstack/health"
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
                return bool(resp.status == 200)
        except OSError:
            return False

    def _oidc_ready(self) -> bool:
        """Ready when its discovery document answers with our issuer (a provider reached by
        another name would sign tokens the app's `local` entry does not accept)."""
        url = f"{self.config.oidc_issuer}/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
                document = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return isinstance(document, dict) and document.get("issuer") == self.config.oidc_issuer

    def provision_aws(self) -> None:
        """Create the bucket and queues the application uses (idempotent)."""
        import boto3

        c = self.config
        session = boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=c.region
        )
        s3 = session.client("s3", endpoint_url=c.localstack_url)
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if c.images_bucket not in existing:
            s3.create_bucket(Bucket=c.images_bucket)
        s3.put_bucket_cors(
            Bucket=c.images_bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedMethods": ["PUT", "GET"],
                        "AllowedOrigins": ["*"],
                        "AllowedHeaders": ["*"],
                    }
                ]
            },
        )
        sqs = session.client("sqs", endpoint_url=c.localstack_url)
        fifo: dict[QueueAttributeNameType, str] = {
            "FifoQueue": "true",
            "ContentBasedDeduplication": "false",
        }
        dlq_url = sqs.create_queue(QueueName=c.events_dlq, Attributes=fifo)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
        queue_url = sqs.create_queue(QueueName=c.events_queue, Attributes=fifo)["QueueUrl"]
        sqs.set_queue_attributes(
            QueueUrl=queue_url,
            Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60"},
        )

    def _write_state(self) -> None:
        state = {
            "profile": self.config.profile,
            "env": self.config.app_env(),
            "pids": self.status(),
        }
        (self.config.root / "stack.json").write_text(json.dumps(state, indent=2) + "\n")
