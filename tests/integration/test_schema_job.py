"""The migration function's job on a real MariaDB: the application user is created from its
secret with row privileges only, the migrations run as the master user, and a rerun (after
the secret was rotated, say) changes the password and nothing else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from tests.support.migrations import (
    ALEMBIC_INI,
    APP,
    MASTER,
    logs_in,
    migration_secrets,
    user_engine,
)
from tests.support.stack import SettingsFactory
from tests.unit.cfn_template import import_handler_module

from giftmarket.adapters import tables
from giftmarket.jobs.schema import migrate
from giftmarket_local.runner import LambdaContext


def head_revision() -> str:
    """The newest migration's revision id, from the scripts themselves."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert head is not None
    return head


def test_the_job_creates_a_row_only_app_user_and_a_rerun_applies_a_new_password(
    make_settings: SettingsFactory, master_user: str, secretsmanager: Any
) -> None:
    master_arn, app_arn = migration_secrets(secretsmanager, master_user, "first-Passw0rd")
    settings = make_settings(db_secret_arn=app_arn, db_master_secret_arn=master_arn)

    report = migrate(settings, ALEMBIC_INI)

    assert report.app_user == APP
    assert report.revision == head_revision()
    engine = user_engine(settings, APP, "first-Passw0rd")
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(tables.users)).scalar_one() >= 0
            with pytest.raises(OperationalError, match="1142"):  # CREATE command denied
                conn.execute(text("CREATE TABLE not_allowed (id INT)"))
    finally:
        engine.dispose()

    secretsmanager.put_secret_value(
        SecretId=app_arn, SecretString=json.dumps({"username": APP, "password": "second-Passw0rd"})
    )
    DEFAULT_PROVIDERS.clear()  # Powertools would serve the old secret for 5 minutes
    assert migrate(settings, ALEMBIC_INI) == report

    assert not logs_in(settings, APP, "first-Passw0rd")
    assert logs_in(settings, APP, "second-Passw0rd")


# ---------------------------------------------------------------------------------------
# The same job as the deploy runs it: template.yaml's SchemaMigration custom resource.


class ResponseUrl:
    """A stand-in for CloudFormation's presigned S3 URL: records every PUT to it."""

    def __init__(self) -> None:
        answers: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers["Content-Length"])
                answers.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.answers = answers
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/answer?X-Amz-Signature=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def migration_context() -> LambdaContext:
    return LambdaContext("giftmarket-dev-MigrationFunction", 512, 900)


def cloudformation_request(kind: str, url: str) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:ap-northeast-2:000000000000:stack/giftmarket-dev/1",
        "RequestId": f"request-{kind}",
        "LogicalResourceId": "SchemaMigration",
        "ResourceType": "Custom::SchemaMigration",
        "ResourceProperties": {"ServiceToken": "arn", "MigrationFunctionVersion": "7"},
    }


@pytest.fixture
def response_url() -> Iterator[ResponseUrl]:
    server = ResponseUrl()
    yield server
    server.close()


def test_a_deploy_runs_the_migrations_and_is_told_the_revision_or_why_they_failed(
    make_settings: SettingsFactory,
    master_user: str,
    secretsmanager: Any,
    response_url: ResponseUrl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master_arn, app_arn = migration_secrets(secretsmanager, master_user, "cr-Passw0rd", name="-cr")
    settings = make_settings(db_secret_arn=app_arn, db_master_secret_arn=master_arn)
    function = import_handler_module("MigrationFunction")
    monkeypatch.setattr(function, "Settings", lambda: settings)

    for kind in ("Create", "Update", "Delete"):
        answer = function.handler(
            cloudformation_request(kind, response_url.url), migration_context()
        )
        assert answer == {"status": "SUCCESS"}, kind
    create, update, delete = response_url.answers
    for sent, kind in ((create, "Create"), (update, "Update"), (delete, "Delete")):
        assert sent["Status"] == "SUCCESS"
        assert sent["RequestId"] == f"request-{kind}"
        assert sent["LogicalResourceId"] == "SchemaMigration"
        # One physical id: an update never "replaces" the schema, so no delete follows it.
        assert sent["PhysicalResourceId"] == "giftmarket-schema"
    assert create["Data"] == {"app_user": APP, "revision": head_revision()} == update["Data"]
    assert delete["Data"] == {}

    # The master password is wrong: the deploy is told why, and fails before any function changed.
    secretsmanager.put_secret_value(
        SecretId=master_arn, SecretString=json.dumps({"username": MASTER, "password": "wrong"})
    )
    DEFAULT_PROVIDERS.clear()
    answer = function.handler(
        cloudformation_request("Update", response_url.url), migration_context()
    )
    assert answer == {"status": "FAILED"}
    failed = response_url.answers[-1]
    assert failed["Status"] == "FAILED" and "1045" in failed["Reason"], failed
