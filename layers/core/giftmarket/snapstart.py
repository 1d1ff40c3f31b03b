"""Lambda SnapStart's runtime hooks, and the same hooks run by hand where there is no snapshot.

With SnapStart (template.yaml, the two API functions) Lambda runs a version's init once when
it is published, snapshots the microVM and resumes every new execution environment from
that snapshot. What init leaves in memory is then shared by every restored environment:

- kept, and worth doing before the snapshot: imports (giftmarket/lazy.py's modules included),
  the FastAPI app and its pydantic schemas, the Tracer's patches, code paths warmed by a
  request that touches no store (bootstrap.py, http/lambda_entry.py, observability.py);
- redone after each restore: anything holding a connection (the container's engine pools,
  Redis, boto3 clients), and cached secrets, which may have been rotated since the snapshot.
  Randomness needs nothing: ids and tokens draw from the OS (`secrets`, uuid4), never from a
  seeded `random` that a snapshot would clone into every environment.

The python3.12 runtime ships `snapshot_restore_py`; elsewhere (tests, the local runner) it is
absent and the hooks run only when asked to (`run_before_snapshot`, `run_after_restore`):
bench_cold_start.py times a restore that way.
"""

from __future__ import annotations

from collections.abc import Callable

Hook = Callable[[], object]

_before_snapshot: list[Hook] = []
_after_restore: list[Hook] = []


def before_snapshot(hook: Hook) -> Hook:
    """Run `hook` at the end of init, before Lambda takes the snapshot (a decorator)."""
    _before_snapshot.append(hook)
    return hook


def after_restore(hook: Hook) -> Hook:
    """Run `hook` in every environment resumed from the snapshot, before its first
    invocation (a decorator)."""
    _after_restore.append(hook)
    return hook


def run_before_snapshot() -> None:
    # The runtime's order: the last registered first, as exits unwind.
    for hook in reversed(_before_snapshot):
        hook()


def run_after_restore() -> None:
    for hook in list(_after_restore):
        hook()


def _register_with_runtime() -> bool:
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found,unused-ignore]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:  # not on Lambda's runtime
        return False
    register_before_snapshot(run_before_snapshot)
    register_after_restore(run_after_restore)
    return True


# On Lambda's runtime, the hooks registered here (now or later during init) run there.
ON_RUNTIME = _register_with_runtime()
