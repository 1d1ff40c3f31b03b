"""The migration job's users and secrets, as RDS and the template make them."""

from __future__ import annotations

import json
from typing import Any

MASTER, APP = "gm_test_master", "gm_test_app"


def migration_secrets(
    secretsmanager: Any,
    master_password: str,
    app_password: str,
    *,
    app_user: str = APP,
    name: str = "",
) -> tuple[str, str]:
    """ARNs of (the master user's secret, the application user's secret), as RDS and the
    template make them."""
    arns = []
    for kind, user, password in (
        ("master", MASTER, master_password),
        ("app", app_user, app_password),
    ):
        secret = json.dumps({"username": user, "password": password})
        arns.append(secretsmanager.create_secret(Name=f"{kind}{name}", SecretString=secret)["ARN"])
    return arns[0], arns[1]
