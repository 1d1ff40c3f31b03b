"""`make test`'s coverage lines: line and branch figures apart, the least covered first."""

from __future__ import annotations

import pytest
from tests.support.coverage_summary import summary

pytestmark = pytest.mark.unit


def file(lines: int, hit: int, branches: int, branches_hit: int) -> dict[str, object]:
    return {
        "summary": {
            "num_statements": lines,
            "covered_lines": hit,
            "num_branches": branches,
            "covered_branches": branches_hit,
        }
    }


def test_the_least_covered_modules_come_first_and_the_total_splits_lines_and_branches() -> None:
    report = {
        "files": {
            "layers/core/giftmarket/domain/ledger.py": file(100, 95, 20, 19),
            "layers/core/giftmarket/jobs/purge.py": file(50, 10, 10, 1),
            "layers/core/giftmarket/http/auth.py": file(40, 30, 0, 0),
        },
        "totals": file(190, 135, 30, 20)["summary"],
    }
    lines = summary(report, least=2).splitlines()
    assert lines[1].split()[0] == "giftmarket.jobs.purge"
    assert "lines  20.0% (10/50), branches  10.0% (1/10)" in lines[1]
    assert lines[2].split()[0] == "giftmarket.http.auth"
    assert "branches 100.0% (0/0)" in lines[2]  # nothing to branch on is not a gap
    assert len(lines) == 4
    assert lines[3].startswith("total: lines  71.1% (135/190), branches  66.7% (20/30)")
