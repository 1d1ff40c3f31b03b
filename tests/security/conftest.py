"""The security probes' client: commands through the command Lambda handler and queries
through the query Lambda handler, invoked in-process as API Gateway would (as in
tests/e2e/test_query_api.py), against the test stack's MariaDB, Redis and LocalStack S3.

Before a query the client lets the projector catch up with the outbox, so that what an
owner can see is really in the read models when a stranger is refused it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from tests.support.handler_client import User, handler_client
from tests.support.security import Client

from giftmarket.settings import Settings
from giftmarket_local.stack import Stack

# An admin of these probes' own: the usual admin address may have been signed up by an
# earlier test with another password.
ADMIN_EMAIL = f"security-admin-{uuid.uuid4().hex[:12]}@probe.test"


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings], stack: Stack) -> Iterator[Client]:
    # No events queue: the client projects the outbox itself.
    settings = make_settings(
        events_queue_url=None, replica_check_interval_seconds=0, admin_emails=ADMIN_EMAIL
    )
    with handler_client(Client, settings, stack) as client:
        yield client


@pytest.fixture(scope="module")
def admin(client: Client) -> User:
    return client.sign_up(ADMIN_EMAIL)
