"""The layer ships what the package needs, and samconfig.toml deploys the stack as the README
says."""

from __future__ import annotations

import tomllib

from tests.unit.cfn_template import REPO_ROOT, props, resources

LAYER_REQUIREMENTS = REPO_ROOT / "layers" / "core" / "requirements.txt"


def requirement_lines() -> list[str]:
    lines = LAYER_REQUIREMENTS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_layer_installs_the_package_dependencies_and_alembic_for_migrations() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (alembic,) = [d for d in project["optional-dependencies"]["dev"] if d.startswith("alembic")]
    assert requirement_lines() == [*project["dependencies"], alembic]


def test_the_layer_is_built_from_the_folder_that_holds_the_package_and_its_requirements() -> None:
    content = REPO_ROOT / props("CoreLayer")["ContentUri"]
    assert (content / "giftmarket" / "__init__.py").is_file()
    assert (content / "requirements.txt") == LAYER_REQUIREMENTS
    # layers/core/Makefile: the python3.12 build and the RDS CA bundle (test_template_tls.py).
    assert resources()["CoreLayer"]["Metadata"]["BuildMethod"] == "makefile"


def test_samconfig_deploys_with_the_capabilities_the_template_needs() -> None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())["default"]
    deploy = config["deploy"]["parameters"]
    # The template creates IAM roles (unnamed) and uses the SAM transform.
    assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True
    assert config["global"]["parameters"]["stack_name"]
    assert config["global"]["parameters"]["region"]
    named_iam = [
        r
        for r in resources().values()
        if r["Type"].startswith("AWS::IAM::")
        and {"RoleName", "ManagedPolicyName"} & set(r.get("Properties", {}))
    ]
    assert not named_iam  # those would need CAPABILITY_NAMED_IAM
