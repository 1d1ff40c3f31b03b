from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from giftmarket.domain.vouchers import InspectionMode
from giftmarket.settings import Settings

AWS_SECRETS = {
    "environment": "aws",
    "jwt_secret_arn": "arn:jwt",
    "fingerprint_key_secret_arn": "arn:fingerprint",
    "barcode_keys_secret_arn": "arn:barcodes",
    "db_secret_arn": "arn:db",
    # TLS is mandatory in AWS (tests/unit/test_settings_tls.py).
    "db_ssl_ca": "/opt/python/giftmarket/certs/rds-global-bundle.pem",
    "redis_url": "rediss://cache.example:6379/0",
}


def test_local_mode_runs_on_local_defaults() -> None:
    settings = Settings.model_validate({"environment": "local"})
    # No admin by default anywhere: the local stack sets ADMIN_EMAILS itself (stack.py).
    assert settings.admin_email_set == frozenset()
    assert settings.seller_fee_bps == 500
    assert settings.welcome_coupon_amount == 1000
    assert (settings.min_voucher_validity_days, settings.ask_expiry_margin_days) == (3, 1)
    assert settings.inspection_mode is InspectionMode.AUTO


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("jwt_secret_arn", "JWT_SECRET_ARN"),
        ("fingerprint_key_secret_arn", "FINGERPRINT_KEY_SECRET_ARN"),
        ("db_secret_arn", "DB_SECRET_ARN"),
        ("barcode_keys_secret_arn", "BARCODE_KEYS_SECRET_ARN"),
    ],
)
def test_aws_mode_refuses_each_local_secret(missing: str, named: str) -> None:
    values = {k: v for k, v in AWS_SECRETS.items() if k != missing}
    with pytest.raises(ValidationError, match=named):
        Settings.model_validate(values)


def test_aws_mode_takes_barcode_keys_given_directly_but_never_the_local_ones() -> None:
    without_arn = {k: v for k, v in AWS_SECRETS.items() if k != "barcode_keys_secret_arn"}
    own = '{"current": "v1", "v1": "' + "k" * 64 + '"}'
    settings = Settings.model_validate({**without_arn, "barcode_keys": own})
    assert settings.barcode_keys.get_secret_value() == own
    local = Settings.model_validate({"environment": "local"}).barcode_keys.get_secret_value()
    with pytest.raises(ValidationError, match="BARCODE_KEYS_SECRET_ARN"):
        Settings.model_validate({**without_arn, "barcode_keys": local})


def test_aws_mode_accepts_real_secrets() -> None:
    settings = Settings.model_validate(AWS_SECRETS)
    assert settings.db_secret_arn == "arn:db"


def test_aws_mode_refuses_admin_emails() -> None:
    # Emails are not verified: whoever signed up first with a listed address would be admin.
    with pytest.raises(ValidationError, match="ADMIN_EMAILS is for local stacks only"):
        Settings.model_validate({**AWS_SECRETS, "admin_emails": "boss@example.com"})


def test_admin_emails_are_trimmed_and_case_insensitive() -> None:
    settings = Settings.model_validate({"admin_emails": " Boss@Example.com, ,ops@example.com "})
    assert settings.admin_email_set == frozenset({"boss@example.com", "ops@example.com"})


@pytest.mark.parametrize("field", ["seller_fee_bps", "welcome_coupon_amount"])
def test_money_settings_refuse_negative_values(field: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: -1})


def test_inspection_mode_is_auto_or_manual() -> None:
    manual = Settings.model_validate({"inspection_mode": "manual"})
    assert manual.inspection_mode is InspectionMode.MANUAL
    with pytest.raises(ValidationError, match="inspection_mode"):
        Settings.model_validate({"inspection_mode": "sometimes"})


def test_buy_now_margin_cannot_outlast_the_listing_minimum() -> None:
    # Else an ask could be listed that buy-now would never take.
    with pytest.raises(ValidationError, match="ASK_EXPIRY_MARGIN_DAYS"):
        Settings.model_validate({"min_voucher_validity_days": 2, "ask_expiry_margin_days": 3})
    settings = Settings.model_validate(
        {"min_voucher_validity_days": 2, "ask_expiry_margin_days": 2}
    )
    assert settings.ask_expiry_margin_days == 2


# --- OIDC_PROVIDERS (social sign-in) ----------------------------------------------------------

KAKAO = {"issuer": "https://kauth.kakao.com", "client_ids": ["rest-api-key"], "trust_email": True}


def test_oidc_providers_are_read_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    google = {
        "issuer": "https://accounts.google.com",
        "client_ids": ["ios-client", "android-client"],
        "also_issued_as": ["accounts.google.com"],
    }
    monkeypatch.setenv("OIDC_PROVIDERS", json.dumps({"kakao": KAKAO, "google": google}))
    providers = Settings().oidc_providers
    assert set(providers) == {"kakao", "google"}
    assert providers["kakao"].trust_email is True
    assert providers["google"].trust_email is False  # not trusted unless configured so
    assert providers["google"].token_issuers == (
        "https://accounts.google.com",
        "accounts.google.com",
    )


@pytest.mark.parametrize("unset", ["", "  "])
def test_no_oidc_providers_by_default_or_when_blank(
    monkeypatch: pytest.MonkeyPatch, unset: str
) -> None:
    assert Settings.model_validate({}).oidc_providers == {}
    monkeypatch.setenv("OIDC_PROVIDERS", unset)
    assert Settings().oidc_providers == {}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("{kakao", "not JSON"),
        ('["kakao"]', "JSON object"),
        ('"kakao"', "JSON object"),
        (json.dumps({"Kakao": KAKAO}), "provider name"),
        (json.dumps({"ka kao": KAKAO}), "provider name"),
        (json.dumps({"": KAKAO}), "provider name"),
        (json.dumps({"k" * 33: KAKAO}), "provider name"),
        (json.dumps({"kakao": {**KAKAO, "client_ids": []}}), "client_ids"),
        (json.dumps({"kakao": {**KAKAO, "client_ids": [""]}}), "client_ids"),
        (json.dumps({"kakao": {"issuer": "https://kauth.kakao.com"}}), "client_ids"),
        (json.dumps({"kakao": {**KAKAO, "issuer": ""}}), "issuer"),
        (json.dumps({"kakao": {**KAKAO, "secret": "x"}}), "secret"),
        (json.dumps({"kakao": "https://kauth.kakao.com"}), "kakao"),
    ],
)
def test_oidc_providers_that_are_not_a_provider_map_are_refused(value: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings.model_validate({"oidc_providers": value})


@pytest.mark.parametrize(
    "issuer",
    [
        "http://kauth.kakao.com",
        "ftp://kauth.kakao.com",
        "kauth.kakao.com",
        "https://",
        "http://10.0.0.1:8080",
    ],
)
def test_an_oidc_issuer_must_be_https_anywhere(issuer: str) -> None:
    value = json.dumps({"kakao": {**KAKAO, "issuer": issuer}})
    for environment in ("local", "test"):
        with pytest.raises(ValidationError, match="issuer"):
            Settings.model_validate({"environment": environment, "oidc_providers": value})


@pytest.mark.parametrize(
    "issuer", ["http://127.0.0.1:19400", "http://localhost:29400", "http://[::1]:19400"]
)
def test_a_loopback_http_issuer_is_for_local_stacks_only(issuer: str) -> None:
    value = json.dumps({"local": {**KAKAO, "issuer": issuer}})
    local = Settings.model_validate({"environment": "local", "oidc_providers": value})
    assert local.oidc_providers["local"].issuer == issuer
    with pytest.raises(ValidationError, match="https"):
        Settings.model_validate({**AWS_SECRETS, "oidc_providers": value})


def test_https_issuers_are_fine_in_aws() -> None:
    value = json.dumps({"kakao": KAKAO, "apple": {**KAKAO, "issuer": "https://appleid.apple.com"}})
    settings = Settings.model_validate({**AWS_SECRETS, "oidc_providers": value})
    assert settings.oidc_providers["apple"].issuer == "https://appleid.apple.com"
