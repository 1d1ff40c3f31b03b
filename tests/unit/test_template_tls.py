"""TLS is enforced in the deployed stack: the databases refuse plain connections, RDS Proxy
requires TLS, and the functions verify MySQL against the RDS CA bundle the layer's build
ships (layers/core/Makefile, layers/core/rds_ca_bundle.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from tests.unit.cfn_template import REPO_ROOT, props, resources, template

from giftmarket_local.tls import TlsFiles, make_ca, make_server_cert

LAYER = REPO_ROOT / "layers" / "core"


def bundle_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rds_ca_bundle", LAYER / "rds_ca_bundle.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_databases_refuse_plain_connections() -> None:
    assert props("DbParameters")["Parameters"]["require_secure_transport"] == "1"
    for db in ("PrimaryDb", "ReplicaDb"):
        assert props(db)["DBParameterGroupName"] == {"Ref": "DbParameters"}


def test_rds_proxy_requires_tls() -> None:
    assert props("DbProxy")["RequireTLS"] is True


def test_the_functions_verify_mysql_with_the_bundle_the_layer_build_ships() -> None:
    env = template()["Globals"]["Function"]["Environment"]["Variables"]
    ca = env["DB_SSL_CA"]
    # A layer is mounted at /opt; its python/ folder is what the Makefile fills.
    assert ca.startswith("/opt/python/")
    assert resources()["CoreLayer"]["Metadata"]["BuildMethod"] == "makefile"
    makefile = (LAYER / "Makefile").read_text()
    assert "build-CoreLayer:" in makefile
    assert "RDS_CA_BUNDLE := $(LAYER)/" + ca.removeprefix("/opt/python/") in makefile
    assert 'rds_ca_bundle.py "$(RDS_CA_BUNDLE)"' in makefile
    # What SAM's python3.12 build method did: the requirements, for the functions' runtime.
    assert "--requirement requirements.lock" in makefile
    assert "--python-version 3.12" in makefile
    assert re.search(r"--platform manylinux\S*_aarch64", makefile)
    assert resources()["CoreLayer"]["Metadata"]["BuildArchitecture"] == "arm64"
    assert env["REDIS_URL"]["Fn::Sub"].startswith("rediss://")


def test_the_bundle_is_only_certificate_authorities(tmp_path: Path) -> None:
    module = bundle_module()
    files = TlsFiles(tmp_path)
    make_ca(files, "bundle CA one")
    make_server_cert(files)
    one = files.ca_cert.read_bytes()
    make_ca(TlsFiles(tmp_path / "two"), "bundle CA two")
    two = (tmp_path / "two" / "ca.pem").read_bytes()
    assert module.check_bundle(one + two) == (2, hashlib.sha256(one + two).hexdigest())
    with pytest.raises(module.BundleError, match="not CAs"):
        module.check_bundle(one + files.server_cert.read_bytes())
    with pytest.raises(module.BundleError, match="other than certificates"):
        module.check_bundle(one + b"<html>captive portal</html>\n")
    with pytest.raises(module.BundleError, match="no certificate"):
        module.check_bundle(b"")
    with pytest.raises(module.BundleError, match="pinned"):
        module.check_bundle(one, expected_sha256="0" * 64)


def test_the_bundle_is_fetched_over_https_only() -> None:
    module = bundle_module()
    assert module.GLOBAL_BUNDLE_URL.startswith("https://")
    with pytest.raises(module.BundleError, match="HTTPS"):
        module.fetch("http://truststore.invalid/global-bundle.pem")


def test_the_build_writes_a_checked_bundle_where_db_ssl_ca_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = bundle_module()
    files = TlsFiles(tmp_path / "ca")
    make_ca(files, "stand-in for the RDS bundle")
    monkeypatch.setenv("RDS_CA_BUNDLE_FILE", str(files.ca_cert))
    digest = hashlib.sha256(files.ca_cert.read_bytes()).hexdigest()
    monkeypatch.setenv("RDS_CA_BUNDLE_SHA256", digest)
    destination = tmp_path / "python" / "giftmarket" / "certs" / "rds-global-bundle.pem"
    assert module.main(["rds_ca_bundle.py", str(destination)]) == 0
    assert destination.read_bytes() == files.ca_cert.read_bytes()
    monkeypatch.setenv("RDS_CA_BUNDLE_SHA256", "f" * 64)
    with pytest.raises(module.BundleError):
        module.main(["rds_ca_bundle.py", str(tmp_path / "other.pem")])
