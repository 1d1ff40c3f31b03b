"""Policy as code: checkov on the CloudFormation that AWS deploys, with every skip justified.

`make lint` runs it (`.venv/bin/python infra/checks/policy.py`):

1. `sam_translate.py`, under the SAM CLI's interpreter, translates template.yaml offline into
   plain CloudFormation and says which SAM resource each generated resource came from.
2. A SAM resource's checkov skips (`Metadata: {checkov: {skip: [{id, comment}]}}`, checkov's own
   CloudFormation form) are copied onto every resource generated from it: its function, role,
   version, alias, permissions, schedules, deployment group... The result is written to
   .local/checkov/template.json: `checkov -f` on it gives the same verdict by itself.
3. checkov (its own virtualenv, .local/venvs/checkov) runs once on that file and on a copy
   without any skip (.local/checkov/template.noskips.json), to know what each skip still hides.
4. The run fails on any failed check that no skip covers, and refuses a skip without a comment,
   a malformed one, and a stale one: a skip whose check does not fail (any more) on the resource
   or the resources made from it, which is also what a check id that checkov does not know gives.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giftmarket_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
OUT_DIR = REPO / ".local" / "checkov"
SAM_PYTHON = REPO / ".local" / "venvs" / "sam" / "bin" / "python"
CHECKOV = REPO / ".local" / "venvs" / "checkov" / "bin" / "checkov"
TRANSLATOR = Path(__file__).resolve().with_name("sam_translate.py")
SKIP_KEYS = ("checkov", "bridgecrew")  # the Metadata keys checkov reads skips from


class PolicyError(Exception):
    """The check could not run: the translation or checkov itself failed."""


@dataclass(frozen=True)
class Skip:
    resource: str  # the logical id in template.yaml that declares it
    check_id: str
    comment: str


@dataclass(frozen=True)
class Finding:
    check_id: str
    title: str
    resource: str  # logical id in the translated template
    resource_type: str


@dataclass
class Verdict:
    failed: list[Finding] = field(default_factory=list)
    passed: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)  # bad or stale skips, one line each

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused


# --- skips in template.yaml -----------------------------------------------------------------


def declared_skips(resources: Mapping[str, Any]) -> tuple[list[Skip], list[str]]:
    """The checkov skips each resource declares, and a line for each one that is not acceptable."""
    skips: list[Skip] = []
    problems: list[str] = []
    for logical_id, resource in resources.items():
        metadata = resource.get("Metadata") if isinstance(resource, dict) else None
        if not isinstance(metadata, dict):
            continue
        if "bridgecrew" in metadata:
            problems.append(f"{logical_id}: use Metadata.checkov.skip, not Metadata.bridgecrew")
        section = metadata.get("checkov")
        if section is None:
            continue
        entries = section.get("skip") if isinstance(section, dict) else None
        if not isinstance(entries, list):
            problems.append(
                f"{logical_id}: Metadata.checkov must be {{skip: [{{id, comment}}, ...]}}"
            )
            continue
        for entry in entries:
            check_id = entry.get("id") if isinstance(entry, dict) else None
            comment = entry.get("comment") if isinstance(entry, dict) else None
            if not isinstance(check_id, str) or not check_id.strip():
                problems.append(f"{logical_id}: a skip without an id: {entry!r}")
            elif not isinstance(comment, str) or not comment.strip():
                problems.append(
                    f"{logical_id}: skip {check_id} has no comment: say why it does not apply"
                )
            else:
                skips.append(Skip(logical_id, check_id.strip(), " ".join(comment.split())))
    return skips, problems


def resolve_sources(
    original_ids: Iterable[str],
    sam_ids: Iterable[str],
    translated_ids: Iterable[str],
    reported: Mapping[str, str],
) -> dict[str, str]:
    """Which template.yaml resource each translated resource comes from.

    The translator's own report first; a resource it does not report (a deployment group, say)
    and that template.yaml does not declare belongs to the SAM resource whose id is the longest
    prefix of its own; failing that, to itself.
    """
    originals = set(original_ids)
    by_length = sorted(sam_ids, key=len, reverse=True)
    sources: dict[str, str] = {}
    for logical_id in translated_ids:
        if logical_id in reported:
            sources[logical_id] = reported[logical_id]
        elif logical_id in originals:
            sources[logical_id] = logical_id
        else:
            sources[logical_id] = next(
                (s for s in by_length if logical_id.startswith(s)), logical_id
            )
    return sources


def with_skips(
    template: Mapping[str, Any], sources: Mapping[str, str], skips: Iterable[Skip]
) -> dict[str, Any]:
    """The translated template with each declared skip on every resource made from its resource."""
    result = copy.deepcopy(dict(template))
    by_source: dict[str, list[Skip]] = {}
    for skip in skips:
        by_source.setdefault(skip.resource, []).append(skip)
    for logical_id, resource in result.get("Resources", {}).items():
        own = by_source.get(sources.get(logical_id, logical_id), [])
        metadata = {k: v for k, v in (resource.get("Metadata") or {}).items() if k not in SKIP_KEYS}
        if own:
            metadata["checkov"] = {"skip": [{"id": s.check_id, "comment": s.comment} for s in own]}
        if metadata:
            resource["Metadata"] = metadata
        else:
            resource.pop("Metadata", None)
    return result


def without_skips(template: Mapping[str, Any]) -> dict[str, Any]:
    return with_skips(template, {}, [])


# --- checkov's results ----------------------------------------------------------------------


def _findings(results: Mapping[str, Any], key: str) -> list[Finding]:
    found = []
    for item in results.get(key, []):  # checkov names a resource "AWS::S3::Bucket.ImagesBucket"
        resource_type, _, logical_id = str(item["resource"]).rpartition(".")
        found.append(
            Finding(item["check_id"], item.get("check_name") or "", logical_id, resource_type)
        )
    return found


def judge(
    skips: Iterable[Skip],
    problems: Iterable[str],
    sources: Mapping[str, str],
    with_skips_results: Mapping[str, Any],
    raw_results: Mapping[str, Any],
) -> Verdict:
    """The verdict: checkov's own on the template with skips, plus the skips it should refuse.

    `raw_results` is checkov's run on the template without any skip: a skip is stale when its
    check fails on none of the resources made from the resource that declares it.
    """
    verdict = Verdict(
        failed=_findings(with_skips_results, "failed_checks"),
        passed=len(with_skips_results.get("passed_checks", [])),
        skipped=len(with_skips_results.get("skipped_checks", [])),
        refused=list(problems),
    )
    failing = {
        (sources.get(f.resource, f.resource), f.check_id)
        for f in _findings(raw_results, "failed_checks")
    }
    known = {
        f.check_id
        for key in ("failed_checks", "passed_checks")
        for f in _findings(raw_results, key)
    }
    seen: set[tuple[str, str]] = set()
    for skip in skips:
        if (skip.resource, skip.check_id) in seen:
            verdict.refused.append(f"{skip.resource}: skip {skip.check_id} is declared twice")
        seen.add((skip.resource, skip.check_id))
        if (skip.resource, skip.check_id) in failing:
            continue
        if skip.check_id in known:
            why = "passes or does not apply there now: remove the skip"
        else:
            why = "no such check ran here (an unknown id, or no resource of its type): remove it"
        verdict.refused.append(f"{skip.resource}: stale skip {skip.check_id}: {why}")
    return verdict


def report(verdict: Verdict, sources: Mapping[str, str]) -> str:
    lines = []
    for f in sorted(verdict.failed, key=lambda f: (f.resource, f.check_id)):
        source = sources.get(f.resource, f.resource)
        origin = f" (from {source})" if source != f.resource else ""
        lines.append(
            f"FAILED  {f.check_id:<12} {f.resource}{origin} [{f.resource_type}]: {f.title}"
        )
    lines.extend(f"REFUSED {line}" for line in verdict.refused)
    lines.append(
        f"checkov: {len(verdict.failed)} failed, {verdict.skipped} skipped with a reason,"
        f" {verdict.passed} passed; {len(verdict.refused)} skip(s) refused"
    )
    if not verdict.ok:
        lines.append(
            "fix the template, or skip a check that does not fit this design on the resource:"
            " Metadata: {checkov: {skip: [{id: CKV_..., comment: why}]}} (README: Policy check)"
        )
    return "\n".join(lines)


# --- the tools --------------------------------------------------------------------------------


def translate(template_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    proc = subprocess.run(
        [str(SAM_PYTHON), str(TRANSLATOR), str(template_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise PolicyError(f"the SAM translation failed:\n{proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    return data["template"], data["sources"]


def run_checkov(files: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """checkov's results for each file (by name), in one run: its start-up is most of the time."""
    command = [str(CHECKOV), "--framework", "cloudformation", "--output", "json"]
    # --skip-download: no call to Prisma Cloud for guidelines or mappings (none is reachable here).
    command += ["--skip-download", "--soft-fail"]
    for path in files.values():
        command += ["--file", str(path)]
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    try:
        output = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"checkov gave no JSON (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}"
        ) from exc
    reports = output if isinstance(output, list) else [output]
    per_file: dict[str, dict[str, Any]] = {name: {} for name in files}
    by_path = {str(path.resolve()): name for name, path in files.items()}
    for part in reports:
        if part.get("summary", {}).get("parsing_errors"):
            raise PolicyError(f"checkov could not parse: {part['summary']}")
        for key, items in (part.get("results") or {}).items():
            for item in items:
                name = by_path.get(str(Path(item.get("file_abs_path", "")).resolve()))
                if name is None:
                    raise PolicyError(
                        f"checkov reported on an unexpected file: {item.get('file_abs_path')}"
                    )
                per_file[name].setdefault(key, []).append(item)
    return per_file


def check(
    template_path: Path = TEMPLATE, out_dir: Path = OUT_DIR
) -> tuple[Verdict, dict[str, str]]:
    resources = load_template(template_path).get("Resources") or {}
    skips, problems = declared_skips(resources)
    translated, reported = translate(template_path)
    sam_ids = [
        k for k, v in resources.items() if str(v.get("Type", "")).startswith("AWS::Serverless::")
    ]
    sources = resolve_sources(resources, sam_ids, translated.get("Resources", {}), reported)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"skips": out_dir / "template.json", "raw": out_dir / "template.noskips.json"}
    files["skips"].write_text(json.dumps(with_skips(translated, sources, skips), indent=1) + "\n")
    files["raw"].write_text(json.dumps(without_skips(translated), indent=1) + "\n")
    results = run_checkov(files)
    (out_dir / "results.json").write_text(json.dumps(results["skips"], indent=1) + "\n")
    return judge(skips, problems, sources, results["skips"], results["raw"]), sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    try:
        verdict, sources = check(args.template, args.out_dir)
    except PolicyError as exc:
        print(f"policy check: {exc}", file=sys.stderr)
        return 2
    print(report(verdict, sources))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
