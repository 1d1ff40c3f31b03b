"""A Database's three engines verify MySQL with one TLS context, built once: each build parses
the system trust store and the CA bundle (~40 ms of CPU), and the first request pays for it
(tests/benchmarks/bench_cold_start.py)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from giftmarket.adapters import db
from giftmarket.settings import Settings
from giftmarket_local.tls import TlsFiles, make_ca


def test_the_database_engines_share_one_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = TlsFiles(tmp_path)
    make_ca(ca, "unit test CA")
    built: list[ssl.SSLContext | None] = []
    given: list[Any] = []
    build_context = db.mysql_tls_context

    def counted(settings: Settings) -> ssl.SSLContext | None:
        built.append(build_context(settings))
        return built[-1]

    def captured(url: Any, **options: Any) -> Any:
        given.append(options["connect_args"].get("ssl"))
        return create_engine(url, **options)

    monkeypatch.setattr(db, "mysql_tls_context", counted)
    monkeypatch.setattr(db, "create_engine", captured)
    # Nothing connects: engines open connections on first use only.
    database = db.Database.from_settings(
        Settings(db_ssl_ca=str(ca.ca_cert), db_primary_port=13306, db_replica_port=13307)
    )
    try:
        assert database.reader is not None  # writer, primary reader and replica reader
        assert len(given) == 3
        assert len(built) == 1 and isinstance(built[0], ssl.SSLContext)
        assert all(context is built[0] for context in given)
        assert "unit test CA" in str(built[0].get_ca_certs())
    finally:
        database.dispose()


def test_an_engine_built_alone_still_gets_its_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = TlsFiles(tmp_path)
    make_ca(ca, "unit test CA")
    given: list[Any] = []

    def captured(url: Any, **options: Any) -> Any:
        given.append(options["connect_args"].get("ssl"))
        return create_engine(url, **options)

    monkeypatch.setattr(db, "create_engine", captured)
    settings = Settings(db_ssl_ca=str(ca.ca_cert))
    engine = db.build_engine(
        settings, db.Credentials("app", "secret"), "127.0.0.1", 13306, read_only=True
    )
    engine.dispose()
    assert len(given) == 1 and isinstance(given[0], ssl.SSLContext)
    assert "unit test CA" in str(given[0].get_ca_certs())
