"""Translate a SAM template to plain CloudFormation, offline, and say where each resource came from.

Run by the SAM CLI's own interpreter (`.local/venvs/sam/bin/python`), whose pinned
aws-sam-translator is the one `sam deploy` uses; `policy.py` calls it. Usage:

    sam_translate.py TEMPLATE.yaml  ->  stdout: {"template": {...}, "sources": {generated: sam_id}}

- Transforms other than SAM's are left for CloudFormation: `AWS::SecretsManager-2020-07-23` is
  taken out before the translation and put back after it, and the resource it acts on (a
  RotationSchedule with a HostedRotationLambda) stays as written.
- Local artifact paths (CodeUri, ContentUri, DefinitionUri) become placeholder S3 URIs, as
  `sam package` would make them; the translator accepts nothing else.
- Every SAM resource gets a marker in its Metadata before the translation; the translator copies
  a SAM resource's Metadata onto each resource it generates from it (passthrough_metadata), so
  the marker names the source of each generated resource. The markers are removed again.
- The managed policy map is the translator's bundled one: no AWS call is made. The region is the
  environment's or ap-northeast-2 (samconfig.toml's): it only decides the ARN partition.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
MARKER = "GiftmarketPolicySource"
DEFAULT_REGION = "ap-northeast-2"
# Properties of SAM resources that name a local folder or file until `sam package` uploads it.
ARTIFACT_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


def _placeholder_uris(properties: Any) -> None:
    if not isinstance(properties, dict):
        return
    for key in ARTIFACT_PROPERTIES:
        value = properties.get(key)
        if isinstance(value, str) and not value.startswith("s3://"):
            properties[key] = f"s3://placeholder-artifacts/{value.strip('./') or 'root'}"


def translate(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    declared = template.get("Transform", [])
    transforms = [declared] if isinstance(declared, str) else list(declared or [])
    if SAM_TRANSFORM not in transforms:
        return template, {}
    others = [name for name in transforms if name != SAM_TRANSFORM]
    template["Transform"] = SAM_TRANSFORM

    for section in (template.get("Globals") or {}).values():
        _placeholder_uris(section)
    sam_ids = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if isinstance(resource, dict) and str(resource.get("Type", "")).startswith(
            "AWS::Serverless::"
        ):
            sam_ids.append(logical_id)
            _placeholder_uris(resource.get("Properties"))
            metadata = resource.get("Metadata")
            resource["Metadata"] = {
                **(metadata if isinstance(metadata, dict) else {}),
                MARKER: logical_id,
            }

    translated = Translator(None, Parser()).translate(
        template, parameter_values={}, passthrough_metadata=True, get_managed_policy_map=dict
    )

    sources: dict[str, str] = {}
    for logical_id, resource in translated.get("Resources", {}).items():
        metadata = resource.get("Metadata")
        if isinstance(metadata, dict) and MARKER in metadata:
            sources[logical_id] = metadata[MARKER]
            rest = {k: v for k, v in metadata.items() if k != MARKER}  # a copy: it was shared
            if rest:
                resource["Metadata"] = rest
            else:
                del resource["Metadata"]
    if others:
        translated["Transform"] = others if len(others) > 1 else others[0]
    return translated, sources


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} TEMPLATE", file=sys.stderr)
        return 2
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", DEFAULT_REGION))
    template = yaml_parse(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        translated, sources = translate(template)
    except InvalidDocumentException as exc:
        print(f"{argv[1]}: {exc.message}", file=sys.stderr)
        for cause in exc.causes:
            print(f"  {cause.message}", file=sys.stderr)
        return 2
    json.dump({"template": translated, "sources": sources}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
