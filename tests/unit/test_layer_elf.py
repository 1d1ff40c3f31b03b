"""After `sam build`, every compiled extension in the layer must be an aarch64 ELF and every
module must come with Python 3.12's bytecode (infra/build/check_layer.py), checked here on
fabricated ELF and pyc headers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tests.support.scripts import load_script
from tests.unit.cfn_template import REPO_ROOT

check_layer = load_script("infra/build/check_layer.py", "check_layer")

AARCH64, X86_64, ARM = 183, 62, 40


def elf(machine: int, bits: int = 64, little_endian: bool = True, size: int = 64) -> bytes:
    """The start of an ELF shared object (ET_DYN) as `readelf -h` reads it, padded."""
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little_endian else 2, 1])
    ident = ident.ljust(16, b"\0")
    order = "<" if little_endian else ">"
    return (ident + struct.pack(order + "HHI", 3, machine, 1)).ljust(size, b"\0")


def test_a_64_bit_little_endian_aarch64_elf_passes() -> None:
    assert check_layer.elf_problem(elf(AARCH64)) is None


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (elf(X86_64), "machine 62 (x86-64), not 183"),
        (elf(ARM, bits=32), "not 64-bit"),
        (elf(AARCH64, little_endian=False), "not little-endian"),
        (b"# a Python file named .so\n", "not an ELF file"),
        (b"", "not an ELF file"),
        (elf(AARCH64)[:10], "truncated ELF header"),
    ],
    ids=["x86-64", "arm32", "big-endian", "text", "empty", "truncated"],
)
def test_anything_else_fails_with_its_reason(header: bytes, problem: str) -> None:
    found = check_layer.elf_problem(header)
    assert found is not None and problem in found


def test_a_big_endian_header_is_read_big_endian() -> None:
    # 183 written big-endian reads as 46848 little-endian: the machine is still AArch64.
    assert check_layer.elf_problem(elf(AARCH64, little_endian=False)) == (
        "not little-endian (EI_DATA 2)"
    )


def pyc(flags: int = 0b11, magic: bytes = (3531).to_bytes(2, "little") + b"\r\n") -> bytes:
    """A pyc's header (PEP 552): magic, flags, then the source's hash (or time and size)."""
    return magic + flags.to_bytes(4, "little") + bytes(8)


def fake_build(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in {"CommandApiFunction/app.py": b"x = 1\n", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


GOOD = {
    "CoreLayer/python/pydantic_core/_core.cpython-312-aarch64-linux-gnu.so": elf(AARCH64),
    "CoreLayer/python/cffi.libs/libffi-1234.so.8.1.0": elf(AARCH64),
    "CoreLayer/python/giftmarket/__init__.py": b"",
    "CoreLayer/python/giftmarket/__pycache__/__init__.cpython-312.pyc": pyc(),
}


def test_a_build_of_aarch64_extensions_passes_and_reports_counts_and_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = fake_build(tmp_path, GOOD)
    report = check_layer.check_tree(build / "CoreLayer")
    assert (report.shared_objects, report.other_elf_files, report.failures) == (2, 0, [])
    assert check_layer.main([str(build)]) == 0
    out = capsys.readouterr().out
    assert "2 .so files and 0 other ELF files checked: all ELF 64-bit little-endian AArch64" in out
    assert "1 modules, each with Python 3.12 bytecode, hash-checked" in out
    assert "CoreLayer: 0.1 KiB unzipped" in out and "zipped" in out
    assert "largest function package: CommandApiFunction" in out and "margin 250.0 MiB" in out


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("python/_x.cpython-312-x86_64-linux-gnu.so", elf(X86_64), "machine 62"),
        ("python/libs/libz-ab12.so.1.3", elf(X86_64), "machine 62"),
        ("python/pkg/_speedups.abi3.so", b"not compiled at all", "not an ELF file"),
        ("python/pkg/_old.cpython-311-aarch64-linux-gnu.so", elf(AARCH64), "cpython-311"),
        ("python/bin/helper", elf(X86_64), "machine 62"),  # an ELF not named .so
    ],
    ids=["x86-64-extension", "x86-64-library", "not-elf", "other-python", "executable"],
)
def test_the_check_fails_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, problem: str
) -> None:
    build = fake_build(tmp_path, {**GOOD, f"CoreLayer/{name}": content})
    assert check_layer.main([str(build)]) == 1
    err = capsys.readouterr().err
    assert f"NOT AARCH64: {build / 'CoreLayer' / name}: " in err and problem in err
    assert err.count("NOT AARCH64") == 1


def test_pure_python_files_are_not_checked_as_elf(tmp_path: Path) -> None:
    build = fake_build(
        tmp_path, {**GOOD, "CoreLayer/python/pkg/so.py": b"", "CoreLayer/python/x.sort": b""}
    )
    report = check_layer.check_tree(build / "CoreLayer")
    assert report.shared_objects == 2 and not report.failures


@pytest.mark.parametrize(
    ("cached", "problem"),
    [
        (None, "no bytecode"),
        (pyc(flags=0), "timestamp-based bytecode"),
        (pyc(flags=0b01), "timestamp-based bytecode"),  # hash-based, never checked
        (pyc(magic=(3495).to_bytes(2, "little") + b"\r\n"), "another Python"),  # 3.11's
    ],
    ids=["missing", "timestamp", "unchecked-hash", "python-3.11"],
)
def test_a_module_without_usable_bytecode_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cached: bytes | None, problem: str
) -> None:
    module = {"CoreLayer/python/pkg/mod.py": b"x = 1\n"}
    if cached is not None:
        module["CoreLayer/python/pkg/__pycache__/mod.cpython-312.pyc"] = cached
    build = fake_build(tmp_path, {**GOOD, **module})
    assert check_layer.main([str(build)]) == 1
    err = capsys.readouterr().err
    assert f"NO BYTECODE: {build / 'CoreLayer/python/pkg/mod.py'}: " in err and problem in err
    assert "1 of 2 modules fail" in err


def test_no_built_layer_or_no_extension_at_all_fails(tmp_path: Path) -> None:
    assert check_layer.main([str(tmp_path / "missing")]) == 1
    build = fake_build(tmp_path, {"CoreLayer/python/giftmarket/__init__.py": b""})
    assert check_layer.main([str(build)]) == 1


def test_a_layer_past_lambdas_unzipped_limit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build = fake_build(tmp_path, GOOD)
    monkeypatch.setattr(check_layer, "LAMBDA_UNZIPPED_LIMIT", 100)
    assert check_layer.main([str(build)]) == 1
    assert "over Lambda's unzipped size limit" in capsys.readouterr().err


def test_make_package_builds_then_checks() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    package = makefile.split("\npackage:", 1)[1].split("\n\n", 1)[0]
    assert package.index("sam build") < package.index("infra/build/check_layer.py .aws-sam/build")
