from __future__ import annotations

import pytest
from pydantic import ValidationError

from giftmarket.settings import Settings


def test_local_mode_runs_on_local_defaults() -> None:
    settings = Settings.model_validate({"environment": "local"})
    assert settings.admin_email_set == frozenset({"admin@giftmarket.local"})
    assert settings.seller_fee_bps == 500
    assert settings.welcome_coupon_amount == 1000


def test_aws_mode_refuses_the_local_jwt_secret() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET_ARN"):
        Settings.model_validate({"environment": "aws", "db_secret_arn": "arn:secret"})


def test_aws_mode_refuses_the_local_database_password() -> None:
    with pytest.raises(ValidationError, match="DB_SECRET_ARN"):
        Settings.model_validate({"environment": "aws", "jwt_secret": "x" * 40})


def test_aws_mode_accepts_real_secrets() -> None:
    settings = Settings.model_validate(
        {"environment": "aws", "jwt_secret": "x" * 40, "db_secret_arn": "arn:secret"}
    )
    assert settings.db_secret_arn == "arn:secret"


def test_admin_emails_are_trimmed_and_case_insensitive() -> None:
    settings = Settings.model_validate({"admin_emails": " Boss@Example.com, ,ops@example.com "})
    assert settings.admin_email_set == frozenset({"boss@example.com", "ops@example.com"})


@pytest.mark.parametrize("field", ["seller_fee_bps", "welcome_coupon_amount"])
def test_money_settings_refuse_negative_values(field: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: -1})
