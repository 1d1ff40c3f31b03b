"""Set infra/deploy/stack-policy.json on a deployed stage's stack (`make deploy` runs it).

A stack policy is what stops an update from replacing or deleting the primary database (and
the buckets and vault holding vouchers, their access logs and backups): a changed parameter
that would need a new instance fails the update instead of moving the stage to an empty
database. DeletionPolicy/UpdateReplacePolicy only decide what is kept after a replacement.
To replace one on purpose, an operator sets a temporary policy for that one update
(`aws cloudformation update-stack --stack-policy-during-update-body ...`).
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import boto3

POLICY = Path(__file__).with_name("stack-policy.json")
SAMCONFIG = Path(__file__).resolve().parents[2] / "samconfig.toml"


def stage_stack(config_env: str) -> tuple[str, str]:
    """(stack name, region) of a samconfig.toml environment."""
    config = tomllib.loads(SAMCONFIG.read_text())[config_env]
    return config["deploy"]["parameters"]["stack_name"], config["global"]["parameters"]["region"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config_env", help="the samconfig.toml environment: dev, staging, prod")
    args = parser.parse_args()
    stack_name, region = stage_stack(args.config_env)
    body = json.dumps(json.loads(POLICY.read_text()))
    client = boto3.client("cloudformation", region_name=region)
    client.set_stack_policy(StackName=stack_name, StackPolicyBody=body)
    print(f"stack policy set on {stack_name} ({region}): {POLICY.name}")


if __name__ == "__main__":
    main()
