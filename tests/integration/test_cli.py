"""`giftmarket` run as a real process against the test stack."""

from __future__ import annotations

import json
import uuid

from tests.support.stack import giftmarket_cli, sign_up_directly

from giftmarket_local.stack import Stack


def test_giftmarket_health_reports_the_stack_it_is_pointed_at(stack: Stack) -> None:
    result = giftmarket_cli(stack, "health")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["primary"], report["replica"], report["cache"]) == ("ok", "ok", "ok")


def test_giftmarket_admin_grant_revoke_and_list_change_and_record_rights(stack: Stack) -> None:
    email = f"operator-made-{uuid.uuid4().hex[:10]}@example.com"
    missing = giftmarket_cli(stack, "admin", "grant", email)
    assert missing.returncode == 2 and "No account has the email" in missing.stderr
    user_id = sign_up_directly(stack, email)

    def is_admin() -> str:
        return stack.primary.sql(f"SELECT is_admin FROM giftmarket.users WHERE id = '{user_id}'")

    assert is_admin() == "0"
    granted = giftmarket_cli(stack, "admin", "grant", email.upper(), "--by", "ops-lee")
    assert granted.returncode == 0, granted.stderr
    assert f"grant admin rights: {email} ({user_id}), by ops-lee" in granted.stdout
    assert is_admin() == "1"
    listed = giftmarket_cli(stack, "admin", "list")
    assert f"  {email} ({user_id})" in listed.stdout
    revoked = giftmarket_cli(stack, "admin", "revoke", email)
    assert revoked.returncode == 0, revoked.stderr
    assert is_admin() == "0"
    record = stack.primary.sql(
        "SELECT action, actor FROM giftmarket.admin_rights_changes"
        f" WHERE user_id = '{user_id}' ORDER BY id"
    ).splitlines()
    assert record[0] == "grant\tops-lee"
    assert record[1].startswith("revoke\t") and record[1].endswith("(cli)")
    again = giftmarket_cli(stack, "admin", "revoke", email)
    assert again.returncode == 0 and "already is not an admin" in again.stdout
