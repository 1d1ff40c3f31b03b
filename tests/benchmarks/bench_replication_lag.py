"""Replication lag on the local stack: commit on the primary → applied on the replica.

Each sample commits one row on the primary, reads the transaction's GTID (@@last_gtid) and
waits for exactly that GTID on the replica with MASTER_GTID_WAIT, so the figure is the time
the replica needed, not a polling interval. Writes bench-results/replication_lag.{json,png}.

Run: make bench   (or .venv/bin/python tests/benchmarks/bench_replication_lag.py [samples])
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pymysql
from benchcommon import OUT, bench_stack, percentile, pyplot, write_result

from giftmarket_local.stack import Stack, StackConfig


def connect(config: StackConfig, port: int) -> pymysql.Connection[Any]:
    return pymysql.connect(
        host=config.host,
        port=port,
        user=config.db_user,
        password=config.db_password,
        database=config.db_name,
        autocommit=True,
        # The stack's servers take TLS only; verified against its CA, host name included.
        ssl={"ca": str(config.ca_path), "check_hostname": True},
    )


def measure(stack: Stack, samples: int) -> list[float]:
    config = stack.config
    primary, replica = connect(config, config.primary_port), connect(config, config.replica_port)
    lags: list[float] = []
    try:
        with primary.cursor() as p, replica.cursor() as r:
            p.execute(
                "CREATE TABLE IF NOT EXISTS bench_replication (id INT PRIMARY KEY, at DATETIME(6))"
            )
            p.execute("TRUNCATE bench_replication")
            for i in range(samples):
                p.execute("INSERT INTO bench_replication VALUES (%s, NOW(6))", (i,))
                committed = time.perf_counter()
                p.execute("SELECT @@last_gtid")
                (gtid,) = p.fetchone() or ("",)
                r.execute("SELECT MASTER_GTID_WAIT(%s, 5)", (gtid,))
                (waited,) = r.fetchone() or (-1,)
                if waited != 0:
                    raise RuntimeError(f"replica did not apply {gtid} within 5s")
                lags.append((time.perf_counter() - committed) * 1000)
            p.execute("DROP TABLE bench_replication")
    finally:
        primary.close()
        replica.close()
    return lags


def main(samples: int = 1000) -> None:
    with bench_stack() as stack:
        lags = measure(stack, samples)
    result = {
        "samples": len(lags),
        "durable": stack.config.durable,
        "p50_ms": round(statistics.median(lags), 3),
        "p99_ms": round(percentile(lags, 99), 3),
        "max_ms": round(max(lags), 3),
        "mean_ms": round(statistics.fmean(lags), 3),
    }
    write_result("replication_lag", result)
    plot(lags, OUT / "replication_lag.png")


def plot(lags: list[float], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lags, bins=60, color="#3b7dd8")
    ax.axvline(statistics.median(lags), color="black", linestyle="--", label="p50")
    ax.axvline(percentile(lags, 99), color="red", linestyle="--", label="p99")
    ax.set_xlabel("commit on primary → applied on replica (ms)")
    ax.set_ylabel("commits")
    ax.set_title(f"MariaDB GTID replication lag, loopback, {len(lags)} commits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
