"""The local stack's development OpenID provider, as configured (nothing started): its ports
per profile, the `local` provider the app is given in OIDC_PROVIDERS (merged with the
environment's), the process the stack runs, and the parts of the test helper that need no
server (tests/integration/test_local_oidc_provider.py runs the real provider)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.oidc_local import (
    REDIRECT_URI,
    OidcLocalError,
    code_from_location,
    issuer_of_test_stack,
    user_claims,
)

from giftmarket_local import stack as local_stack
from giftmarket_local.stack import LOCAL_OIDC_CLIENT_ID, Stack, StackConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("GM_RUN_OIDC_PORT", "GM_TEST_OIDC_PORT", "OIDC_PROVIDERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GM_LOCAL_DIR", str(tmp_path))
    # The servers' binaries need not be installed: nothing is started.
    monkeypatch.setattr(local_stack, "_require", lambda binary: f"/usr/sbin/{binary}")


def providers(config: StackConfig) -> dict[str, dict[str, object]]:
    parsed: dict[str, dict[str, object]] = json.loads(config.app_env()["OIDC_PROVIDERS"])
    return parsed


@pytest.mark.parametrize(("profile", "port"), [("run", 19400), ("test", 29400)])
def test_each_profile_has_its_own_provider_port(profile: str, port: int) -> None:
    config = StackConfig.for_profile(profile)
    assert config.oidc_port == port
    assert config.oidc_issuer == f"http://127.0.0.1:{port}"


def test_the_provider_port_can_be_overridden_per_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GM_TEST_OIDC_PORT", "29466")
    assert StackConfig.for_profile("test").oidc_issuer == "http://127.0.0.1:29466"
    assert StackConfig.for_profile("run").oidc_port == 19400
    assert issuer_of_test_stack() == "http://127.0.0.1:29466"


def test_the_app_is_given_the_local_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GM_RUN_OIDC_PORT", "19555")
    assert providers(StackConfig.for_profile("run")) == {
        "local": {
            "issuer": "http://127.0.0.1:19555",
            "client_ids": [LOCAL_OIDC_CLIENT_ID],
            "trust_email": True,
        }
    }


def test_providers_from_the_environment_are_merged_and_may_replace_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    google = {"issuer": "https://accounts.google.com", "client_ids": ["g-1"]}
    distrusted = {"issuer": "http://127.0.0.1:19400", "client_ids": ["x"], "trust_email": False}
    monkeypatch.setenv("OIDC_PROVIDERS", json.dumps({"google": google}))
    merged = providers(StackConfig.for_profile("run"))
    assert merged["google"] == google
    assert merged["local"]["issuer"] == "http://127.0.0.1:19400"

    monkeypatch.setenv("OIDC_PROVIDERS", json.dumps({"google": google, "local": distrusted}))
    assert providers(StackConfig.for_profile("run")) == {"local": distrusted, "google": google}


def test_the_app_settings_read_the_merged_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GM_TEST_OIDC_PORT", "29466")
    monkeypatch.setenv(
        "OIDC_PROVIDERS",
        json.dumps({"kakao": {"issuer": "https://kauth.kakao.com", "client_ids": ["k-1"]}}),
    )
    settings = StackConfig.for_profile("test").app_settings()
    assert settings.oidc_providers["local"].issuer == "http://127.0.0.1:29466"
    assert settings.oidc_providers["local"].client_ids == (LOCAL_OIDC_CLIENT_ID,)
    assert settings.oidc_providers["local"].trust_email is True
    assert settings.oidc_providers["kakao"].client_ids == ("k-1",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["local"]', "must be a JSON object"),
        ('{"google": "https://accounts.google.com"}', "must be a JSON object"),
    ],
)
def test_a_malformed_oidc_providers_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("OIDC_PROVIDERS", value)
    config = StackConfig.for_profile("test")
    with pytest.raises(ValueError, match=message):
        config.app_env()
    with pytest.raises(ValueError, match=message):
        Stack(config).up()
    assert not config.root.exists()  # no folder, no certificate, no server


def test_an_empty_oidc_providers_means_local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIDC_PROVIDERS", " ")
    assert list(providers(StackConfig.for_profile("run"))) == ["local"]


def test_the_provider_is_a_fifth_process_on_loopback_stopped_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["primary", "replica", "redis", "localstack", "oidc"]
    stack = Stack(StackConfig.for_profile("test"))
    assert [p.name for p in stack.processes] == names
    argv = list(stack.oidc.argv)
    assert argv[0] == str(local_stack.OIDC_PYTHON)
    assert argv[1:] == ["-m", "oidc_provider_mock", "-H", "127.0.0.1", "-p", "29400"]
    assert stack.oidc.port == 29400
    assert stack.oidc.pid_file == stack.config.root / "run" / "oidc.pid"
    # Nothing runs: every process is listed, each without a PID.
    assert stack.status() == dict.fromkeys(names, None)
    stopped: list[str] = []

    def recorder(name: str) -> Callable[[], bool]:
        def stop() -> bool:
            stopped.append(name)
            return True

        return stop

    for process in stack.processes:
        monkeypatch.setattr(process, "stop", recorder(process.name))
    assert stack.stop() == ["oidc", "localstack", "redis", "replica", "primary"]
    assert stopped == ["oidc", "localstack", "redis", "replica", "primary"]
    stopped.clear()
    assert stack.stop(["oidc"]) == ["oidc"]
    assert stopped == ["oidc"]


def test_the_provider_is_not_ready_while_nothing_answers() -> None:
    # Port 1 on loopback: refused at once.
    config = StackConfig("test", Path("/nonexistent"), 1, 2, 3, 4, oidc_port=1)
    assert Stack(config)._oidc_ready() is False


def test_the_claims_set_for_a_user_keep_the_default_email() -> None:
    assert user_claims("alice") == {"email": "alice"}
    assert user_claims("alice", email_verified=True) == {"email": "alice", "email_verified": True}
    assert user_claims("alice", email="a@x.io", email_verified=False) == {
        "email": "a@x.io",
        "email_verified": False,
    }


def test_the_code_is_read_from_the_redirect() -> None:
    assert code_from_location(f"{REDIRECT_URI}?code=abc-123&state=s") == "abc-123"
    with pytest.raises(OidcLocalError, match="invalid_scope"):
        code_from_location(f"{REDIRECT_URI}?error=invalid_scope&error_description=nope")
    with pytest.raises(OidcLocalError, match="no code"):
        code_from_location(REDIRECT_URI)
