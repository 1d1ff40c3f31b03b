"""Check a `sam build` output: the core layer holds only aarch64 native code, ships its
modules compiled, and fits.

The functions run on arm64 (Graviton). pip downloads the layer's wheels for manylinux aarch64,
but a wheel tagged wrongly, a pure-Python fallback picked by mistake or a file copied in by hand
would only fail at import time in AWS. So every shared object in the built layer (a name ending
`.so` or `.so.N...`) must be an ELF file for AArch64 (e_machine 183), 64-bit, little-endian;
any other file that is an ELF must be too; and a CPython extension named for an interpreter or
platform (`*.cpython-312-aarch64-linux-gnu.so`) must name CPython 3.12 on aarch64. Every file
that fails is named.

Every module the layer ships must come with the bytecode Lambda's python3.12 reads
(layers/core/Makefile's layer-bytecode): /opt is read-only, so a module without it is compiled
again at every cold start. Each is named otherwise: no bytecode, bytecode of another Python, or
timestamp-based bytecode (used or not depending on the times the zip keeps on the files).

It then prints the layer's size, unzipped and zipped (deflate, as `sam deploy` uploads it), and
the margin under Lambda's 250 MB limit on a function and its layers unzipped, counted with the
largest function package of the same build; it fails past the limit.

    python infra/build/check_layer.py [.aws-sam/build] [--layer CoreLayer]

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_AARCH64 = 183
MACHINES = {3: "x86", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 40: "ARM", 62: "x86-64"}
# e_ident (16 bytes), e_type (2), e_machine (2): the header fields the check reads.
HEADER_SIZE = 20
SHARED_OBJECT = re.compile(r"\.so(\.[0-9]+)*$")
EXTENSION_TAG = re.compile(r"\.cpython-(?P<version>[0-9]+)-(?P<platform>[^.]+)\.so$")
WANTED_EXTENSION = ("312", "aarch64-linux-gnu")
# The bytecode the runtime reads (PEP 552): CPython 3.12's magic number, then the flags of a
# hash-based pyc whose source hash is checked.
PYC_MAGIC = (3531).to_bytes(2, "little") + b"\r\n"
PYC_TAG = "cpython-312"
PYC_CHECKED_HASH = 0b11
# Lambda's quota: 250 MB for a function's deployment package and all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT = 262_144_000
MIB = 1024 * 1024


def elf_problem(header: bytes) -> str | None:
    """Why these first bytes of a file are not a 64-bit little-endian AArch64 ELF, or None."""
    if len(header) < 4 or header[:4] != ELF_MAGIC:
        return "not an ELF file"
    if len(header) < HEADER_SIZE:
        return "truncated ELF header"
    problems = []
    if header[4] != ELFCLASS64:
        problems.append(f"not 64-bit (EI_CLASS {header[4]})")
    if header[5] != ELFDATA2LSB:
        problems.append(f"not little-endian (EI_DATA {header[5]})")
        (machine,) = struct.unpack_from(">H", header, 18)
    else:
        (machine,) = struct.unpack_from("<H", header, 18)
    if machine != EM_AARCH64:
        name = MACHINES.get(machine, "unknown")
        problems.append(f"machine {machine} ({name}), not {EM_AARCH64} (AArch64)")
    return "; ".join(problems) or None


def extension_tag_problem(name: str) -> str | None:
    """Why a CPython extension's file name names another interpreter or platform, or None."""
    match = EXTENSION_TAG.search(name)
    if match is None:
        return None
    if (match["version"], match["platform"]) != WANTED_EXTENSION:
        wanted = "cpython-{}-{}".format(*WANTED_EXTENSION)
        return f"extension built for cpython-{match['version']}-{match['platform']}, not {wanted}"
    return None


@dataclass
class Report:
    shared_objects: int = 0
    other_elf_files: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)


def files_under(root: Path) -> Iterator[Path]:
    """Regular files under root, symbolic links not followed, in a stable order."""
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        for name in sorted(names):
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                yield path


def check_tree(root: Path) -> Report:
    """Every shared object under root must be an aarch64 ELF; so must any other ELF file."""
    report = Report()
    for path in files_under(root):
        with path.open("rb") as file:
            header = file.read(HEADER_SIZE)
        if SHARED_OBJECT.search(path.name):
            report.shared_objects += 1
        elif header[:4] == ELF_MAGIC:
            report.other_elf_files += 1
        else:
            continue
        problem = elf_problem(header) or extension_tag_problem(path.name)
        if problem:
            report.failures.append((path, problem))
    return report


def bytecode_problem(source: Path) -> str | None:
    """Why the runtime would compile this module again at each cold start, or None."""
    cached = source.parent / "__pycache__" / f"{source.stem}.{PYC_TAG}.pyc"
    try:
        with cached.open("rb") as file:
            header = file.read(8)
    except FileNotFoundError:
        return "no bytecode: every cold start would compile it"
    if header[:4] != PYC_MAGIC:
        return f"bytecode of another Python (magic {header[:4]!r}), not 3.12's"
    if int.from_bytes(header[4:8], "little") != PYC_CHECKED_HASH:
        return "timestamp-based bytecode: the zip's file times decide whether it is used"
    return None


def check_bytecode(python_dir: Path) -> tuple[int, list[tuple[Path, str]]]:
    """(modules under python_dir, those without usable bytecode and why)."""
    sources = [path for path in files_under(python_dir) if path.suffix == ".py"]
    failures = [(path, problem) for path in sources if (problem := bytecode_problem(path))]
    return len(sources), failures


def unzipped_size(root: Path) -> int:
    return sum(path.stat().st_size for path in files_under(root))


def zipped_size(root: Path) -> int:
    """Bytes of root zipped with deflate, as SAM packages it for upload."""
    with tempfile.TemporaryDirectory(prefix="layer-zip-") as tmp:
        archive = Path(tmp) / "layer.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in files_under(root):
                zipped.write(path, path.relative_to(root).as_posix())
        return archive.stat().st_size


def human(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aarch64 ELF and size check of a sam build")
    parser.add_argument("build_dir", nargs="?", default=".aws-sam/build", type=Path)
    parser.add_argument("--layer", default="CoreLayer", help="the layer's logical id")
    args = parser.parse_args(argv)
    layer: Path = args.build_dir / args.layer
    if not (layer / "python").is_dir():
        print(f"{layer}/python: no built layer here (run `sam build` first)", file=sys.stderr)
        return 1

    report = check_tree(layer)
    for path, problem in report.failures:
        print(f"NOT AARCH64: {path}: {problem}", file=sys.stderr)
    checked = f"{report.shared_objects} .so files and {report.other_elf_files} other ELF files"
    if report.failures:
        print(f"{layer}: {len(report.failures)} of {checked} fail", file=sys.stderr)
        return 1
    if report.shared_objects == 0:
        print(f"{layer}: no .so file at all: not the layer `sam build` makes", file=sys.stderr)
        return 1
    print(f"{layer}: {checked} checked: all ELF 64-bit little-endian AArch64 (e_machine 183)")

    modules, uncompiled = check_bytecode(layer / "python")
    for path, problem in uncompiled:
        print(f"NO BYTECODE: {path}: {problem}", file=sys.stderr)
    if uncompiled:
        print(f"{layer}: {len(uncompiled)} of {modules} modules fail", file=sys.stderr)
        return 1
    print(f"{layer}: {modules} modules, each with Python 3.12 bytecode, hash-checked")

    layer_bytes = unzipped_size(layer)
    print(f"{args.layer}: {human(layer_bytes)} unzipped, {human(zipped_size(layer))} zipped")
    functions = {
        path.name: unzipped_size(path)
        for path in sorted(args.build_dir.iterdir())
        if path.is_dir() and path.name != args.layer
    }
    largest = max(functions, key=lambda name: functions[name], default=None)
    total = layer_bytes + (functions[largest] if largest else 0)
    margin = LAMBDA_UNZIPPED_LIMIT - total
    if largest:
        print(f"largest function package: {largest}, {human(functions[largest])} unzipped")
    print(
        f"function + layer: {human(total)} of Lambda's {human(LAMBDA_UNZIPPED_LIMIT)} "
        f"({LAMBDA_UNZIPPED_LIMIT} bytes) unzipped: margin {human(margin)}"
        f" ({margin / LAMBDA_UNZIPPED_LIMIT:.0%})"
    )
    if margin < 0:
        print("over Lambda's unzipped size limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
