"""The promoted-replica failover drill: `python -m giftmarket_local failover-drill`.

What an operator does when the primary is lost and the read replica takes over (in AWS:
`aws rds promote-read-replica`, then pointing the functions' DB_PRIMARY_HOST at it, or an
RDS Multi-AZ failover doing the equivalent on its own), played on the local stack:

1. The primary is crashed: SIGKILL, no shutdown. From here commands answer 503.
2. The replica applies whatever it had received, and is promoted: replication is reset and
   `read_only` turned off. Transactions the primary committed but never shipped are lost
   (replication is asynchronous): the drill reads the crashed primary's last GTID from its
   binlog, offline, and reports how many.
3. The endpoint follows the new primary. Locally, the primary's port is the endpoint (as
   the RDS endpoint's DNS name is in AWS): the promoted server is restarted on it, with its
   data; the crashed primary's data is discarded. Commands succeed again from here, with
   nothing restarted on the application's side: its pool drops the dead connections.
4. A new replica is made from a consistent dump of the new primary (`--single-transaction
   --gtid`), and replicates from the dump's GTID position, over TLS, checking the new
   primary's certificate (the servers keep the stack's certificates and TLS-only options
   through the drill: they are given at each start). Queries go back to it once its
   health check sees it caught up.

The stack ends with the shape it began with (primary port, replica port, replicating), so
the drill can be run again, and the test suite runs it under a command load
(tests/reliability/test_failover_drill.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from giftmarket_local.stack import Stack, _require

GTID = re.compile(r"\bGTID (\d+-\d+-\d+)")


@dataclass
class DrillReport:
    crashed_gtid: str  # the last transaction in the crashed primary's binlog
    promoted_gtid: str  # the last one the promoted replica had applied
    # Seconds from the crash to the end of each step.
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def lost_transactions(self) -> int:
        return _seq(self.crashed_gtid) - _seq(self.promoted_gtid)

    def lines(self) -> list[str]:
        out = [f"  {step:<34} {at:6.2f} s after the crash" for step, at in self.steps.items()]
        out.append(
            f"  crashed primary's last GTID {self.crashed_gtid or '-'}, promoted replica's"
            f" {self.promoted_gtid or '-'}: {self.lost_transactions} transaction(s) lost"
        )
        return out


def _seq(gtid: str) -> int:
    """The sequence number of the last domain-0 GTID in a GTID list ('0-1-42' → 42)."""
    for part in gtid.split(","):
        domain, _, seq = part.strip().split("-")
        if domain == "0":
            return int(seq)
    return 0


def last_binlog_gtid(stack: Stack) -> str:
    """The last GTID written to the (stopped) primary's binlog, read from its files."""
    datadir = stack.primary.datadir
    index = datadir / "binlog.index"
    names = [line.strip() for line in index.read_text().splitlines() if line.strip()]
    for name in reversed(names):
        path = datadir / name.removeprefix("./")
        out = subprocess.run(
            [_require("mariadb-binlog"), "--no-defaults", "--base64-output=never", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
        found = GTID.findall(out)
        if found:
            return str(found[-1])
    return ""


def failover_drill(stack: Stack, say: Callable[[str], None] = print) -> DrillReport:
    primary, replica, config = stack.primary, stack.replica, stack.config
    if not (primary.process.is_running() and replica.process.is_running()):
        raise RuntimeError("the drill needs the stack's primary and replica running")
    # A fresh binlog file, so the crashed primary's last GTID is read from a small file.
    primary.sql("FLUSH BINARY LOGS")

    crashed_at = time.monotonic()
    steps: dict[str, float] = {}

    def step(name: str) -> None:
        steps[name] = time.monotonic() - crashed_at
        say(f"{steps[name]:6.2f} s  {name}")

    primary.process.kill()
    step("primary crashed (SIGKILL)")
    crashed_gtid = last_binlog_gtid(stack)

    received = stack.replica_status().get("Gtid_IO_Pos", "")
    if received:
        replica.sql(f"SELECT MASTER_GTID_WAIT('{received}', 30)", timeout=40)
    replica.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0")
    promoted_gtid = replica.sql("SELECT @@gtid_binlog_pos")
    step("replica promoted (writable)")

    # The endpoint follows: the promoted server's data now serves on the primary's port.
    replica.process.stop()
    shutil.rmtree(primary.datadir)
    replica.datadir.rename(primary.datadir)
    primary.process.start()
    stack.create_replication_user()
    step("endpoint serves the new primary")

    replica.install()
    replica.process.start()
    dump = subprocess.run(
        [
            _require("mariadb-dump"),
            "--no-defaults",
            f"--socket={primary.socket}",
            "--user=root",
            "--single-transaction",
            "--gtid",
            "--master-data=2",
            "--databases",
            config.db_name,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    position = re.search(r"gtid_slave_pos='([^']*)'", dump)
    if position is None:
        raise RuntimeError("the dump carries no GTID position")
    # Loaded outside the new replica's binlog: its own GTIDs would clash with the primary's.
    subprocess.run(
        [_require("mariadb"), "--no-defaults", f"--socket={replica.socket}", "--user=root"],
        input="SET sql_log_bin=0;\n" + stack.application_user_sql() + "\n" + dump,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    stack.start_replicating(gtid_slave_pos=position.group(1))
    stack.wait_replica_caught_up(timeout=60)
    step("new replica replicating, caught up")

    report = DrillReport(crashed_gtid, promoted_gtid, steps)
    for line in report.lines()[-1:]:
        say(line)
    return report
