"""The template's side of social sign-in: the providers are a parameter that reaches the
command API alone, the route is throttled like the other credential routes, and a stage
cannot be given providers without a path to the internet for their keys."""

from __future__ import annotations

from tests.unit.cfn_template import function_env, function_ids, props, template

ROUTE = "POST /api/auth/oidc/{provider}"


def test_the_providers_parameter_reaches_the_command_api_only() -> None:
    parameter = template()["Parameters"]["OidcProviders"]
    assert parameter["Type"] == "String" and parameter["Default"] == ""
    assert function_env("CommandApiFunction")["OIDC_PROVIDERS"] == {"Ref": "OidcProviders"}
    others = [f for f in function_ids() if f != "CommandApiFunction"]
    assert all("OIDC_PROVIDERS" not in function_env(f) for f in others)


def test_providers_without_a_nat_gateway_are_refused_at_deploy() -> None:
    rule = template()["Rules"]["SocialSignInNeedsInternet"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OidcProviders"}, ""]}]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "NetworkAccess"}, "NatGateway"]}


def test_the_route_is_throttled_like_the_other_credential_routes() -> None:
    settings = props("HttpApi")["RouteSettings"]
    assert settings[ROUTE] == settings["POST /api/auth/login"]
