"""The policy check (infra/checks/policy.py): checkov on the SAM-translated template, with a
reason for every skip. The skip bookkeeping is tested on tiny inline data; the translation
(under the SAM CLI's interpreter) and one whole run of checkov on a tiny template end-to-end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "infra" / "checks"


policy = load_script("infra/checks/policy.py", "giftmarket_policy_check")


def skip(check_id: str, comment: str | None = "does not fit: see the design") -> dict[str, Any]:
    entry: dict[str, Any] = {"id": check_id}
    if comment is not None:
        entry["comment"] = comment
    return entry


def checked(*skips: dict[str, Any]) -> dict[str, Any]:
    return {"Metadata": {"checkov": {"skip": list(skips)}}}


def result(
    check_id: str, resource: str, resource_type: str = "AWS::Lambda::Function"
) -> dict[str, Any]:
    return {
        "check_id": check_id,
        "check_name": f"title of {check_id}",
        "resource": f"{resource_type}.{resource}",
    }


# --- declared skips ---------------------------------------------------------------------------


def test_a_skip_with_a_comment_is_taken_with_its_comment_on_one_line() -> None:
    skips, problems = policy.declared_skips(
        {"Fn": checked(skip("CKV_AWS_116", "async:\n  no DLQ"))}
    )
    assert problems == []
    assert skips == [policy.Skip("Fn", "CKV_AWS_116", "async: no DLQ")]


@pytest.mark.parametrize("comment", [None, "", "   ", 42])
def test_a_skip_without_a_comment_is_refused(comment: object) -> None:
    entry: dict[str, Any] = {"id": "CKV_AWS_116"}
    if comment is not None:
        entry["comment"] = comment
    skips, problems = policy.declared_skips({"Fn": checked(entry)})
    assert skips == []
    assert problems == ["Fn: skip CKV_AWS_116 has no comment: say why it does not apply"]


def test_malformed_skips_are_refused() -> None:
    resources = {
        "NoId": checked({"comment": "why"}),
        "NotAList": {"Metadata": {"checkov": {"skip": {"id": "CKV_AWS_1", "comment": "why"}}}},
        "Bridgecrew": {"Metadata": {"bridgecrew": {"skip": [skip("CKV_AWS_1")]}}},
        "Plain": {"Metadata": {"BuildMethod": "makefile"}},
        "None": {"Type": "AWS::SNS::Topic"},
    }
    skips, problems = policy.declared_skips(resources)
    assert skips == []
    assert [p.split(":")[0] for p in problems] == ["NoId", "NotAList", "Bridgecrew"]


# --- sources and propagation -----------------------------------------------------------------


def test_generated_resources_belong_to_the_sam_resource_they_come_from() -> None:
    sources = policy.resolve_sources(
        original_ids=["Api", "ApiFunction", "Topic"],
        sam_ids=["Api", "ApiFunction"],
        translated_ids=[
            "ApiFunction",
            "ApiFunctionRole",
            "ApiFunctionDeploymentGroup",
            "Topic",
            "CodeDeployRole",
        ],
        reported={"ApiFunction": "ApiFunction", "ApiFunctionRole": "ApiFunction"},
    )
    assert sources == {
        "ApiFunction": "ApiFunction",
        "ApiFunctionRole": "ApiFunction",
        # not reported by the translator: the longest SAM id it starts with, not "Api"
        "ApiFunctionDeploymentGroup": "ApiFunction",
        "Topic": "Topic",
        "CodeDeployRole": "CodeDeployRole",
    }


def test_skips_are_copied_onto_every_generated_resource_and_nowhere_else() -> None:
    translated = {
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Metadata": {"checkov": {"skip": [skip("CKV_OLD")]}},
            },
            "FnRole": {"Type": "AWS::IAM::Role"},
            "FnAliaslive": {"Type": "AWS::Lambda::Alias", "Metadata": {"Note": "kept"}},
            "Topic": {
                "Type": "AWS::SNS::Topic",
                "Metadata": {"bridgecrew": {"skip": [skip("CKV_X")]}},
            },
        }
    }
    sources = {"Fn": "Fn", "FnRole": "Fn", "FnAliaslive": "Fn", "Topic": "Topic"}
    declared = [policy.Skip("Fn", "CKV_AWS_116", "async, retried by its source")]
    out = policy.with_skips(translated, sources, declared)["Resources"]
    wanted = {"skip": [{"id": "CKV_AWS_116", "comment": "async, retried by its source"}]}
    assert out["Fn"]["Metadata"] == {"checkov": wanted}
    assert out["FnRole"]["Metadata"] == {"checkov": wanted}
    assert out["FnAliaslive"]["Metadata"] == {"Note": "kept", "checkov": wanted}
    assert "Metadata" not in out["Topic"]  # only what template.yaml declares, as it declares it
    assert translated["Resources"]["FnRole"] == {"Type": "AWS::IAM::Role"}  # the input is untouched

    bare = policy.without_skips(policy.with_skips(translated, sources, declared))["Resources"]
    assert "Metadata" not in bare["Fn"] and "Metadata" not in bare["FnRole"]
    assert bare["FnAliaslive"]["Metadata"] == {"Note": "kept"}


# --- the verdict ------------------------------------------------------------------------------


def test_a_skip_that_still_hides_a_failure_on_a_generated_resource_is_accepted() -> None:
    declared = [policy.Skip("Fn", "CKV_AWS_111", "the role's writes are scoped by the boundary")]
    raw = {"failed_checks": [result("CKV_AWS_111", "FnRole", "AWS::IAM::Role")]}
    native = {
        "skipped_checks": [result("CKV_AWS_111", "FnRole", "AWS::IAM::Role")],
        "passed_checks": [{}] * 3,
    }
    verdict = policy.judge(declared, [], {"FnRole": "Fn"}, native, raw)
    assert verdict.ok
    assert (verdict.failed, verdict.skipped, verdict.passed) == ([], 1, 3)


def test_a_stale_skip_is_reported_and_fails_the_run() -> None:
    declared = [
        policy.Skip("Fn", "CKV_AWS_115", "was unbounded"),  # passes now
        policy.Skip("Fn", "CKV_AWS_999", "no such check"),  # unknown to checkov
        policy.Skip("Fn", "CKV_AWS_116", "async"),  # still fails: fine
    ]
    raw = {
        "failed_checks": [
            result("CKV_AWS_116", "Fn"),
            result("CKV_AWS_26", "Topic", "AWS::SNS::Topic"),
        ],
        "passed_checks": [result("CKV_AWS_115", "Fn")],
    }
    native = {
        "failed_checks": [result("CKV_AWS_26", "Topic", "AWS::SNS::Topic")],
        "skipped_checks": [result(i, "Fn") for i in ("CKV_AWS_115", "CKV_AWS_999", "CKV_AWS_116")],
    }
    verdict = policy.judge(
        declared, ["Topic: skip CKV_AWS_26 has no comment"], {"Fn": "Fn"}, native, raw
    )
    assert not verdict.ok
    assert [(f.check_id, f.resource, f.resource_type) for f in verdict.failed] == [
        ("CKV_AWS_26", "Topic", "AWS::SNS::Topic")
    ]
    assert verdict.refused[0] == "Topic: skip CKV_AWS_26 has no comment"
    assert verdict.refused[1].startswith("Fn: stale skip CKV_AWS_115: passes or does not apply")
    assert verdict.refused[2].startswith("Fn: stale skip CKV_AWS_999: no such check ran here")
    assert len(verdict.refused) == 3
    text = policy.report(verdict, {"Fn": "Fn"})
    assert "REFUSED Fn: stale skip CKV_AWS_115" in text
    assert "checkov: 1 failed, 3 skipped with a reason, 0 passed; 3 skip(s) refused" in text


def test_a_skip_on_another_resource_does_not_cover_a_failure() -> None:
    declared = [policy.Skip("Other", "CKV_AWS_116", "async")]
    raw = {"failed_checks": [result("CKV_AWS_116", "Fn")]}
    verdict = policy.judge(declared, [], {"Fn": "Fn"}, {"failed_checks": raw["failed_checks"]}, raw)
    assert [f.resource for f in verdict.failed] == ["Fn"]
    assert verdict.refused == [
        "Other: stale skip CKV_AWS_116: passes or does not apply there now: remove the skip"
    ]


# --- the tools --------------------------------------------------------------------------------

TINY_SAM = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform:
  - AWS::SecretsManager-2020-07-23
  - AWS::Serverless-2016-10-31
Resources:
  Topic:
    Type: AWS::SNS::Topic
  Fn:
    Type: AWS::Serverless::Function
    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_116
            comment: invoked synchronously only; the caller sees the error
          - id: CKV_AWS_115
            comment: stale, the function has reserved concurrency
    Properties:
      CodeUri: functions/fn/
      Handler: app.handler
      Runtime: python3.12
      AutoPublishAlias: live
      ReservedConcurrentExecutions: 2
      Events:
        Nightly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(0 3 * * ? *)
"""


def needs(path: Path) -> None:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup`")


def test_the_translation_reports_each_generated_resource_and_keeps_other_transforms(
    tmp_path: Path,
) -> None:
    needs(policy.SAM_PYTHON)
    path = tmp_path / "template.yaml"
    path.write_text(TINY_SAM)
    translated, sources = policy.translate(path)
    resources = translated["Resources"]
    assert translated["Transform"] == "AWS::SecretsManager-2020-07-23"
    generated = {k: v["Type"] for k, v in resources.items() if sources.get(k) == "Fn"}
    assert set(generated.values()) >= {
        "AWS::Lambda::Function",
        "AWS::IAM::Role",
        "AWS::Lambda::Version",
        "AWS::Lambda::Alias",
        "AWS::Scheduler::Schedule",
    }
    assert "Topic" not in sources
    assert resources["Fn"]["Properties"]["Code"]["S3Bucket"]  # CodeUri became a placeholder
    # the translator's passthrough carried the skips over, without the source marker
    assert all("GiftmarketPolicySource" not in json.dumps(v) for v in resources.values())


def test_checkov_runs_on_the_translated_template_with_the_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    needs(policy.SAM_PYTHON)
    needs(policy.CHECKOV)
    path = tmp_path / "template.yaml"
    path.write_text(TINY_SAM)
    assert policy.main(["--template", str(path), "--out-dir", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line.split()[1:3] for line in lines if line.startswith("FAILED")]
    assert ["CKV_AWS_26", "Topic"] in failed  # no skip for it
    assert not any(check_id in {"CKV_AWS_116", "CKV_AWS_115"} for check_id, _ in failed)
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert refused == [
        "REFUSED Fn: stale skip CKV_AWS_115: passes or does not apply there now: remove the skip"
    ]
    # checkov itself honoured the skips copied onto the generated resources
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    skipped = {(r["check_id"], r["resource"]) for r in results["skipped_checks"]}
    assert ("CKV_AWS_116", "AWS::Lambda::Function.Fn") in skipped
    assert results["passed_checks"]
    written = json.loads((tmp_path / "out" / "template.json").read_text())
    role = next(k for k, v in written["Resources"].items() if v["Type"] == "AWS::IAM::Role")
    assert written["Resources"][role]["Metadata"]["checkov"]["skip"][0]["id"] == "CKV_AWS_116"
