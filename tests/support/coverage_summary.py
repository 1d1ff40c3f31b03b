"""Print what `make test` measured: line and branch coverage of giftmarket, apart, and the
modules covered least. Reads coverage.py's JSON report (`coverage json`); the HTML report is
beside it, under .local/coverage/html."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / ".local" / "coverage" / "coverage.json"
LEAST = 10


@dataclass(frozen=True)
class Measured:
    lines: int
    lines_hit: int
    branches: int
    branches_hit: int

    @staticmethod
    def of(summary: dict[str, int]) -> Measured:
        return Measured(
            summary["num_statements"],
            summary["covered_lines"],
            summary.get("num_branches", 0),
            summary.get("covered_branches", 0),
        )

    @property
    def line_percent(self) -> float:
        return 100.0 * self.lines_hit / self.lines if self.lines else 100.0

    @property
    def branch_percent(self) -> float:
        return 100.0 * self.branches_hit / self.branches if self.branches else 100.0

    def line(self) -> str:
        return (
            f"lines {self.line_percent:5.1f}% ({self.lines_hit}/{self.lines}), "
            f"branches {self.branch_percent:5.1f}% ({self.branches_hit}/{self.branches})"
        )


def module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[parts.index("giftmarket") :]) if "giftmarket" in parts else path


def summary(report: dict[str, object], least: int = LEAST) -> str:
    files = report["files"]
    totals = report["totals"]
    assert isinstance(files, dict) and isinstance(totals, dict)
    modules = sorted(
        ((module_name(path), Measured.of(data["summary"])) for path, data in files.items()),
        key=lambda item: (item[1].line_percent + item[1].branch_percent, item[0]),
    )
    width = max((len(name) for name, _ in modules[:least]), default=10)
    rows = [f"  {name:<{width}}  {measured.line()}" for name, measured in modules[:least]]
    return "\n".join(
        [
            f"coverage of giftmarket, the {least} modules covered least:",
            *rows,
            f"total: {Measured.of(totals).line()}  (HTML: .local/coverage/html/index.html)",
        ]
    )


def main() -> int:
    if not REPORT.exists():
        print(f"no coverage report at {REPORT}", file=sys.stderr)
        return 1
    print(summary(json.loads(REPORT.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
