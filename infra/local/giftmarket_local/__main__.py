"""`python -m giftmarket_local <command> [--profile run|test]`: see `--help`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

from giftmarket_local.stack import Stack, StackConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="giftmarket_local", description=__doc__)
    parser.add_argument(
        "command", choices=["up", "down", "status", "env", "migrate", "run", "failover-drill"]
    )
    parser.add_argument("--profile", default="run", choices=["run", "test"])
    parser.add_argument("--port", type=int, default=3000, help="runner port (run only)")
    args = parser.parse_args(argv)
    config = StackConfig.for_profile(args.profile)
    stack = Stack(config)
    if args.command == "up":
        began = time.monotonic()
        started = stack.up()
        took = time.monotonic() - began
        print(f"stack '{args.profile}' up in {took:.1f}s; started: {started or 'nothing'}")
    elif args.command == "down":
        print(f"stopped: {stack.stop() or 'nothing'}")
    elif args.command == "status":
        print(json.dumps(stack.status(), indent=2))
    elif args.command == "env":
        for key, value in config.app_env().items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "migrate":
        from giftmarket_local.migrations import upgrade

        upgrade(config)
    elif args.command == "failover-drill":
        from giftmarket_local.failover import failover_drill

        failover_drill(stack)
    elif args.command == "run":
        from giftmarket_local.supervisor import run

        return run(stack, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
