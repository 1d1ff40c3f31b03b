"""The local stack's first start: a data directory that cannot be initialised fails with
what mariadb-install-db said, not a bare exit status (the only account of why it failed)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from giftmarket_local import stack as local_stack
from giftmarket_local.processes import ProcessError
from giftmarket_local.stack import MariaDB, StackConfig


def test_a_failed_install_says_what_the_bootstrap_server_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "mariadb-install-db"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'Installing MariaDB/MySQL system tables ...'\n"
        "echo '[ERROR] InnoDB: io_setup() failed with EAGAIN' >&2\n"
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(
        local_stack, "_require", lambda binary: str(fake) if binary == fake.name else binary
    )
    server = MariaDB(StackConfig("test", tmp_path, 1, 2, 3, 4, 5), "primary", 1, port=1)
    with pytest.raises(ProcessError) as failed:
        server.install()
    assert "mariadb-install-db exited 1" in str(failed.value)
    assert "io_setup() failed with EAGAIN" in str(failed.value)
