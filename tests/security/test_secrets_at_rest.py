"""Nothing secret at rest outside Secrets Manager: after signups, logins and social sign-ins
sent with Idempotency-Keys (and replayed), a dump of the whole primary holds no bearer token, no
password, and no unsalted SHA-256 of either the password or the request body that held it.
A replay answers as the first call did, with a token that works, and only while the
credentials still verify."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid

from tests.support.handler_client import User
from tests.support.oidc_local import local_id_token
from tests.support.security import Client

from giftmarket_local.stack import Stack, _require


def dump_primary(stack: Stack) -> str:
    """Every database of the primary, as mariadb-dump writes it (root, over the socket)."""
    return subprocess.run(
        [
            _require("mariadb-dump"),
            "--no-defaults",
            f"--socket={stack.primary.socket}",
            "--user=root",
            "--all-databases",
            "--skip-extended-insert",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def unkeyed_fingerprint(method: str, path: str, body: dict[str, str]) -> str:
    """What the records held before keyed fingerprints: SHA-256 of the canonical request."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def keyed(client: Client, path: str, body: dict[str, str], key: str) -> tuple[int, dict[str, str]]:
    reply = client.call("POST", path, body, headers={"Idempotency-Key": key})
    return reply.status, reply.body


def test_a_dump_after_signups_and_logins_with_keys_holds_no_token_or_password(
    client: Client, stack: Stack
) -> None:
    forbidden: dict[str, str] = {}
    keys: list[str] = []
    for n in range(3):
        password = f"at-rest-{uuid.uuid4().hex}"
        email = f"at-rest-{n}-{uuid.uuid4().hex[:8]}@probe.test"
        signup = {"email": email, "password": password, "nickname": "rest"}
        login = {"email": email, "password": password}
        for path, body in (("/api/auth/signup", signup), ("/api/auth/login", login)):
            key = f"rest-{uuid.uuid4().hex}"
            keys.append(key)
            first_status, first = keyed(client, path, body, key)
            replay_status, replay = keyed(client, path, body, key)
            assert first_status == replay_status == (201 if path.endswith("signup") else 200)
            assert replay["user_id"] == first["user_id"]
            for token in (first["token"], replay["token"]):
                me = client.call("POST", "/api/points/charge", {"amount": 1}, token)
                assert me.status == 200, me
                forbidden[f"token of {path}"] = token
            forbidden[f"unkeyed fingerprint of {path}"] = unkeyed_fingerprint("POST", path, body)
        forbidden["password"] = password
        forbidden["sha256(password)"] = hashlib.sha256(password.encode()).hexdigest()

    # Social sign-in: the ID token is a credential too (PRODUCT.md: nothing derived from it).
    path = "/api/auth/oidc/local"
    for n in range(2):
        id_token = local_id_token(stack.config.oidc_issuer, f"at-rest-{uuid.uuid4().hex}")
        key = f"rest-{uuid.uuid4().hex}"
        keys.append(key)
        body = {"id_token": id_token, "nickname": "rest"}
        first_status, first = keyed(client, path, body, key)
        replay_status, replay = keyed(client, path, body, key)
        assert (first_status, replay_status) == (201, 201)
        assert replay["user_id"] == first["user_id"]
        forbidden[f"ID token {n}"] = id_token
        forbidden[f"ID token {n}'s signature"] = id_token.rsplit(".", 1)[1]
        forbidden[f"sha256(ID token {n})"] = hashlib.sha256(id_token.encode()).hexdigest()
        forbidden[f"unkeyed fingerprint of sign-in {n}"] = unkeyed_fingerprint("POST", path, body)
        forbidden[f"token of sign-in {n}"] = first["token"]
        forbidden[f"token of replayed sign-in {n}"] = replay["token"]

    dump = dump_primary(stack)
    # The records are there (so the dump could have held secrets): one per key.
    assert all(key in dump for key in keys)
    found = sorted(name for name, value in forbidden.items() if value in dump)
    assert not found, f"the primary's dump holds {found}"


def test_a_replay_answers_as_a_failed_login_once_the_credentials_no_longer_verify(
    client: Client,
) -> None:
    password = f"replay-{uuid.uuid4().hex}"
    email = f"replay-{uuid.uuid4().hex[:8]}@probe.test"
    body = {"email": email, "password": password, "nickname": "replay"}
    key = f"replay-{uuid.uuid4().hex}"
    status, first = keyed(client, "/api/auth/signup", body, key)
    assert status == 201
    # The password changes (as a reset would): the stored record alone must not sign in.
    new_hash = client.container.passwords.hash("another-password-entirely")
    client.sql(
        f"UPDATE giftmarket.users SET password_hash = '{new_hash}' WHERE id = '{first['user_id']}'"
    )
    replay = client.call("POST", "/api/auth/signup", body, headers={"Idempotency-Key": key})
    assert replay.status == 401, replay
    assert replay.body["code"] == "invalid_credentials"
    assert "token" not in replay.body
    # Another body under the same key is still refused as a reused key.
    other = client.call(
        "POST", "/api/auth/signup", {**body, "nickname": "other"}, headers={"Idempotency-Key": key}
    )
    assert other.status == 422, other
    assert other.body["code"] == "idempotency_key_reused"


def test_a_dump_after_vouchers_are_listed_and_sold_holds_no_barcode(
    client: Client, stack: Stack, admin: User
) -> None:
    """A barcode is kept only as keyed hashes (and its last 4 digits): not in a row, not in
    an event, not in an idempotency record, not as an unsalted hash anyone could match."""
    seller, buyer = client.sign_up(), client.sign_up()
    product = client.new_product(admin)
    client.command("POST", "/api/points/charge", {"amount": 10_000}, buyer.token)
    client.command("POST", f"/api/products/{product}/buy-bids", {"price": 3000}, buyer.token)
    barcodes: list[str] = []
    for route, price in (("sell-bids", 9000), ("sell-now", 3000)):
        path = f"/api/products/{product}/{route}"
        voucher = client.voucher()
        body = {"price": price, "image_id": client.uploaded_image(seller), **voucher}
        status, _ = keyed_as(client, path, body, seller.token, f"rest-{uuid.uuid4().hex}")
        assert status == 201
        barcodes.append(voucher["barcode"])

    dump = dump_primary(stack)
    # The vouchers are there (so the dump could have held their barcodes).
    assert all(f"'{barcode[-4:]}'" in dump for barcode in barcodes)
    for barcode in barcodes:
        assert barcode not in dump
        assert hashlib.sha256(barcode.encode()).hexdigest() not in dump
        assert hashlib.sha256(barcode.encode()).hexdigest().upper() not in dump


def keyed_as(
    client: Client, path: str, body: dict[str, object], token: str, key: str
) -> tuple[int, object]:
    reply = client.call("POST", path, body, token, headers={"Idempotency-Key": key})
    return reply.status, reply.body
