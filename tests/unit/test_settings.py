from __future__ import annotations

import pytest
from pydantic import ValidationError

from giftmarket.settings import Settings

AWS_SECRETS = {
    "environment": "aws",
    "jwt_secret_arn": "arn:jwt",
    "fingerprint_key_secret_arn": "arn:fingerprint",
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


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("jwt_secret_arn", "JWT_SECRET_ARN"),
        ("fingerprint_key_secret_arn", "FINGERPRINT_KEY_SECRET_ARN"),
        ("db_secret_arn", "DB_SECRET_ARN"),
    ],
)
def test_aws_mode_refuses_each_local_secret(missing: str, named: str) -> None:
    values = {k: v for k, v in AWS_SECRETS.items() if k != missing}
    with pytest.raises(ValidationError, match=named):
        Settings.model_validate(values)


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
