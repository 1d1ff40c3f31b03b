"""The server settings the application relies on are the same in AWS and on the local stack:
template.yaml's RDS parameter group (DbParameters, used by the primary and the replica)
against the arguments the local MariaDB servers are started with (giftmarket_local.stack).

What the application relies on: row-based binlogs (READ COMMITTED cannot log statements),
READ COMMITTED as the server default (behind RDS Proxy no session SET can be relied on),
TLS only, and GTIDs (read-your-writes waits for the replica's GTID position).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.unit.cfn_template import props

from giftmarket_local import stack as local_stack
from giftmarket_local.stack import MariaDB, StackConfig

TRUE, FALSE = {"1", "ON", "TRUE"}, {"0", "OFF", "FALSE"}


def normal(value: Any) -> str:
    text = str(value).strip().upper()
    return "ON" if text in TRUE else "OFF" if text in FALSE else text


def rds_parameters() -> dict[str, str]:
    parameters: dict[str, Any] = props("DbParameters")["Parameters"]
    return {name.replace("-", "_"): normal(value) for name, value in parameters.items()}


def mariadb_arguments(role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The options a local server of `role` starts with, as `name → value` (a bare flag is
    ON); built by the stack's own code, nothing started."""
    monkeypatch.setattr(local_stack, "_require", lambda binary: f"/usr/sbin/{binary}")
    config = StackConfig("test", tmp_path, 1, 2, 3, 4, 5)
    argv = MariaDB(config, role, server_id=1, port=1).process.argv
    arguments: dict[str, str] = {}
    for arg in argv[1:]:
        name, _, value = arg.removeprefix("--").partition("=")
        arguments[name.replace("-", "_")] = normal(value) if value else "ON"
    return arguments


def mismatches(rds: dict[str, str], local: dict[str, str]) -> list[str]:
    """Each setting the application relies on that AWS and the local servers set apart."""
    found = []
    for name in ("binlog_format", "transaction_isolation", "require_secure_transport"):
        if rds.get(name) is None or rds.get(name) != local.get(name):
            found.append(f"{name}: RDS {rds.get(name)} vs local {local.get(name)}")
    # MySQL needs GTIDs switched on (and enforced); MariaDB binlogs always carry them, and
    # strict mode is what refuses the out-of-order transactions MySQL's enforcement refuses.
    rds_gtids = rds.get("gtid_mode") == "ON" and rds.get("enforce_gtid_consistency") == "ON"
    local_gtids = "log_bin" in local and local.get("gtid_strict_mode") == "ON"
    if not rds_gtids or not local_gtids:
        found.append(
            f"GTIDs: RDS gtid-mode {rds.get('gtid_mode')} enforce_gtid_consistency "
            f"{rds.get('enforce_gtid_consistency')} vs local log-bin "
            f"{local.get('log_bin')} gtid-strict-mode {local.get('gtid_strict_mode')}"
        )
    return found


@pytest.mark.parametrize("role", ["primary", "replica"])
def test_the_local_servers_set_what_the_rds_parameter_group_sets(
    role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = mariadb_arguments(role, tmp_path, monkeypatch)

    assert mismatches(rds_parameters(), local) == []
    assert local["transaction_isolation"] == "READ-COMMITTED"


@pytest.mark.parametrize(
    ("side", "name", "value"),
    [
        ("local", "transaction_isolation", "REPEATABLE-READ"),
        ("local", "binlog_format", "MIXED"),
        ("local", "require_secure_transport", "OFF"),
        ("local", "gtid_strict_mode", "OFF"),
        ("local", "log_bin", None),
        ("rds", "transaction_isolation", None),
        ("rds", "binlog_format", "STATEMENT"),
        ("rds", "require_secure_transport", "OFF"),
        ("rds", "gtid_mode", "OFF_PERMISSIVE"),
        ("rds", "enforce_gtid_consistency", "WARN"),
    ],
)
def test_a_setting_changed_on_one_side_only_is_a_mismatch(
    side: str, name: str, value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sides = {"rds": rds_parameters(), "local": mariadb_arguments("primary", tmp_path, monkeypatch)}
    if value is None:
        del sides[side][name]
    else:
        sides[side][name] = value

    found = mismatches(sides["rds"], sides["local"])

    assert len(found) == 1, found
    assert name.split("_")[0] in found[0].lower()
