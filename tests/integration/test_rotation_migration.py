"""The migration function after Secrets Manager's alternating-users rotation: the secret then
names the `_clone` user, and the job creates (or resets) that user, leaving the other one as
the rotation left it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from tests.support.migrations import ALEMBIC_INI, logs_in, migration_secrets
from tests.support.stack import SettingsFactory

from giftmarket.jobs.schema import migrate
from giftmarket_local.stack import Stack

APP, CLONE = "gm_rot_app", "gm_rot_app_clone"


@pytest.fixture
def users_dropped(stack: Stack) -> Iterator[None]:
    yield
    stack.primary.sql(f"DROP USER IF EXISTS '{APP}'@'%'; DROP USER IF EXISTS '{CLONE}'@'%';")


def test_the_job_creates_the_user_the_rotated_secret_names(
    make_settings: SettingsFactory,
    master_user: str,
    secretsmanager: Any,
    users_dropped: None,
) -> None:
    master_arn, app_arn = migration_secrets(
        secretsmanager, master_user, "app-Passw0rd", app_user=APP
    )
    settings = make_settings(db_secret_arn=app_arn, db_master_secret_arn=master_arn)
    assert migrate(settings, ALEMBIC_INI).app_user == APP

    # What the rotation's createSecret step stores: the other user, a new password.
    secretsmanager.put_secret_value(
        SecretId=app_arn,
        SecretString=json.dumps({"username": CLONE, "password": "clone-Passw0rd"}),
    )
    DEFAULT_PROVIDERS.clear()  # a later invocation, past Powertools' cache
    assert migrate(settings, ALEMBIC_INI).app_user == CLONE

    assert logs_in(settings, CLONE, "clone-Passw0rd")
    assert logs_in(settings, APP, "app-Passw0rd")  # the user not named is left alone
