"""The layer's hash-locked requirements (infra/build/layer_lock.py) are current, complete and
hash-pinned, and the check fails as soon as pyproject's dependencies change without `make lock`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tests.support.scripts import load_script
from tests.unit.cfn_template import REPO_ROOT

LOCK = REPO_ROOT / "layers" / "core" / "requirements.lock"
PYPROJECT = REPO_ROOT / "pyproject.toml"


layer_lock = load_script("infra/build/layer_lock.py", "layer_lock")


def inputs() -> list[str]:
    requirements: list[str] = layer_lock.layer_inputs(tomllib.loads(PYPROJECT.read_text()))
    return requirements


def with_digest(text: str, requirements: list[str]) -> str:
    """The lock text with its header digest made for other inputs (a lock made by hand)."""
    digest = layer_lock.inputs_digest(requirements)
    return re.sub(r"(?m)^# inputs-sha256: [0-9a-f]{64}$", f"# inputs-sha256: {digest}", text)


PIN = "pkg==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"


def test_the_checked_in_lock_is_current_and_pins_every_input_with_hashes() -> None:
    pins = layer_lock.check_lock(LOCK.read_text(), inputs())
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert any(r.startswith("alembic") for r in project["optional-dependencies"]["layer"])
    assert {"alembic", "pydantic-core", "sqlalchemy", "argon2-cffi-bindings"} <= set(pins)
    assert all(pin.hashes for pin in pins.values())


def test_make_lint_runs_the_check_and_it_passes() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "infra/build/layer_lock.py check" in lint
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra" / "build" / "layer_lock.py"), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "current" in done.stdout


@pytest.mark.parametrize(
    "change",
    [
        lambda deps: [d.replace("redis>=6,<9", "redis>=7,<9") for d in deps],  # a bound moved
        lambda deps: [*deps, "httpx>=0.27"],  # a dependency added
        lambda deps: [d for d in deps if not d.startswith("tzdata")],  # one removed
    ],
    ids=["bound-changed", "added", "removed"],
)
def test_changing_pyproject_without_make_lock_fails(change: Any) -> None:
    changed = change(inputs())
    assert changed != inputs()
    with pytest.raises(layer_lock.LockError, match="run `make lock`"):
        layer_lock.check_lock(LOCK.read_text(), changed)


def test_order_and_spacing_of_the_inputs_do_not_count() -> None:
    respaced = [r.replace(">=", " >= ") for r in reversed(inputs())]
    assert layer_lock.inputs_digest(respaced) == layer_lock.inputs_digest(inputs())


def test_a_pin_outside_pyprojects_specifier_fails_even_with_a_matching_digest() -> None:
    changed = [d.replace("redis>=6,<9", "redis>=9,<10") for d in inputs()]
    assert changed != inputs()
    with pytest.raises(layer_lock.LockError, match=r"redis==\S+ does not satisfy"):
        layer_lock.check_lock(with_digest(LOCK.read_text(), changed), changed)


def test_a_direct_dependency_missing_from_the_lock_fails() -> None:
    changed = [*inputs(), "httpx>=0.27"]
    with pytest.raises(layer_lock.LockError, match="httpx .* is not in the lock"):
        layer_lock.check_lock(with_digest(LOCK.read_text(), changed), changed)


def test_a_dependency_for_another_platform_need_not_be_locked() -> None:
    changed = [*inputs(), 'pywin32>=306; sys_platform == "win32"']
    layer_lock.check_lock(with_digest(LOCK.read_text(), changed), changed)


@pytest.mark.parametrize(
    ("lock", "message"),
    [
        ("pkg==1.0\n", "carries no --hash"),
        ("pkg>=1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n", "not pinned with =="),
        ("pkg==1.* \\\n    --hash=sha256:" + "a" * 64 + "\n", "not pinned with =="),
        ("pkg==1.0 \\\n    --hash=md5:" + "a" * 32 + "\n", "unexpected option"),
        ("--extra-index-url https://example.invalid/simple\n" + PIN, "only pinned requirements"),
        ("-e ./somewhere\n" + PIN, "only pinned requirements"),
        (PIN + PIN.replace("pkg", "PKG"), "pinned twice"),
        ("# nothing\n", "pins nothing"),
    ],
)
def test_every_requirement_must_be_an_exact_pin_with_a_sha256(lock: str, message: str) -> None:
    with pytest.raises(layer_lock.LockError, match=message):
        layer_lock.parse_lock(lock)


def test_comments_and_continuations_are_read_as_pip_reads_them() -> None:
    text = "# header\n" + PIN + "    # via\n    #   other\n" + PIN.replace("pkg", "two")
    pins = layer_lock.parse_lock(text)
    assert sorted(pins) == ["pkg", "two"]
    assert pins["two"].hashes == ("sha256:" + "a" * 64,)


def test_a_lock_without_its_header_fails() -> None:
    body = "\n".join(line for line in LOCK.read_text().splitlines() if "inputs-sha256" not in line)
    with pytest.raises(layer_lock.LockError, match="no '# inputs-sha256:' header"):
        layer_lock.check_lock(body, inputs())


def test_the_command_line_check_fails_naming_a_stale_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT.read_text().replace('"redis>=6,<9"', '"redis>=7,<9"'))
    lock = tmp_path / "layers" / "core" / "requirements.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(LOCK.read_text())
    monkeypatch.setattr(layer_lock, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(layer_lock, "PYPROJECT", pyproject)
    monkeypatch.setattr(layer_lock, "LOCK", lock)
    assert layer_lock.main(["check"]) == 1
    assert "changed since the lock was made: run `make lock`" in capsys.readouterr().err
    lock.unlink()
    assert layer_lock.main(["check"]) == 1
    assert "missing" in capsys.readouterr().err


def test_generate_resolves_for_the_lambda_target_from_pypi_and_writes_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "\n".join(line for line in LOCK.read_text().splitlines() if not line.startswith("#"))
    calls: list[list[str]] = []

    def fake_uv(command: list[str], **kwargs: Any) -> None:
        calls.append(command)
        assert not any(key.startswith("UV_INDEX") for key in kwargs["env"])
        Path(command[command.index("--output-file") + 1]).write_text(body + "\n")

    monkeypatch.setenv("UV_INDEX_URL", "https://mirror.invalid/simple")
    monkeypatch.setattr(layer_lock.subprocess, "run", fake_uv)
    lock = tmp_path / "requirements.lock"
    count = layer_lock.generate(lock=lock, pyproject=PYPROJECT)
    (command,) = calls
    flags = " ".join(command)
    for flag in (
        "pip compile",
        "--extra layer",
        "--generate-hashes",
        "--python-version 3.12",
        "--python-platform aarch64-manylinux_2_28",
        "--only-binary :all:",
        "--no-config",
        "--default-index https://pypi.org/simple",
    ):
        assert flag in flags
    assert "--upgrade" not in command
    assert count == len(layer_lock.check_lock(lock.read_text(), inputs()))
    assert lock.read_text() == LOCK.read_text()  # the checked-in lock is what `make lock` writes
