"""The layer ships what the package needs, and samconfig.toml deploys the stack as the README
says."""

from __future__ import annotations

import re
import tomllib

from tests.unit.cfn_template import REPO_ROOT, props, resources

LAYER = REPO_ROOT / "layers" / "core"


def test_the_layer_installs_the_package_dependencies_and_alembic_for_migrations() -> None:
    # pyproject is the one source: the runtime dependencies plus the `layer` extra (Alembic,
    # which only the migration function imports), which developers get with `dev` too.
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert [r for r in extras["layer"] if r.startswith("alembic")] == extras["layer"] != []
    assert "giftmarket[layer]" in extras["dev"]
    # requirements.lock pins them (tests/unit/test_layer_lock.py); no second list to keep equal.
    assert not (LAYER / "requirements.txt").exists()


def test_the_layer_is_built_from_the_folder_that_holds_the_package_and_its_lock() -> None:
    content = REPO_ROOT / props("CoreLayer")["ContentUri"]
    assert content.resolve() == LAYER.resolve()
    assert (content / "giftmarket" / "__init__.py").is_file()
    assert (content / "requirements.lock").is_file()
    # layers/core/Makefile: the python3.12 build and the RDS CA bundle (test_template_tls.py),
    # installing exactly the locked files and nothing they would pull in.
    assert resources()["CoreLayer"]["Metadata"]["BuildMethod"] == "makefile"
    install = re.search(r"-m pip install(?:[^\n]*\\\n)*[^\n]*", (content / "Makefile").read_text())
    assert install is not None
    for flag in ("--require-hashes", "--no-deps", "--requirement requirements.lock"):
        assert flag in install.group()


def test_no_iam_resource_is_named_so_capability_iam_suffices() -> None:
    named_iam = [
        r
        for r in resources().values()
        if r["Type"].startswith("AWS::IAM::")
        and {"RoleName", "ManagedPolicyName"} & set(r.get("Properties", {}))
    ]
    assert not named_iam  # those would need CAPABILITY_NAMED_IAM
