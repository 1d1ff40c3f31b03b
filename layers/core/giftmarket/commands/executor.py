"""Runs a command handler in its own unit of work, retrying the races it can lose.

Every entry point uses it — the command API, the CLI, the projector's welcome coupon — so
each gets the same promise: the handler's effects and events commit together or not at
all, and a deadlock or lock-wait timeout is run again rather than surfaced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from giftmarket.commands.context import CommandContext
from giftmarket.commands.ports import (
    Committed,
    StoredResponse,
    TransientConflict,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")

Handler = Callable[[UnitOfWork, CommandContext], R]


class CommandContention(Exception):
    """Still losing races after every retry; the caller should try again later."""


@dataclass(frozen=True)
class IdempotencyClaim:
    scope: str
    key: str
    method: str
    path: str
    request_hash: str


@dataclass(frozen=True)
class Outcome:
    response: StoredResponse
    replayed: bool
    outbox_ids: tuple[str, ...] = ()  # what this call wrote (nothing when replayed)


@dataclass(frozen=True)
class CommandExecutor:
    unit_of_work: UnitOfWorkFactory
    context: CommandContext
    retries: int = 3
    # Told the outbox ids of every commit (not of replays): the fast path that publishes a
    # command's events at once. It must not raise; the relay catches whatever it misses.
    after_commit: Callable[[tuple[str, ...]], None] | None = None

    def execute(self, handler: Handler[R]) -> tuple[R, Committed]:
        """Run the handler and commit; returns its result and what was written."""

        def attempt() -> tuple[R, Committed]:
            with self.unit_of_work() as uow:
                result = handler(uow, self.context)
                return result, uow.commit()

        result, committed = self._with_retries(attempt)
        self._committed(committed.outbox_ids)
        return result, committed

    def execute_idempotent(
        self,
        handler: Handler[R],
        claim: IdempotencyClaim,
        respond: Callable[[R, Committed], StoredResponse],
    ) -> Outcome:
        """Run the handler once per idempotency key: the key is claimed and the response
        stored in the handler's own transaction; a repeat gets the stored response."""

        def attempt() -> Outcome:
            with self.unit_of_work() as uow:
                stored = uow.idempotency.claim(
                    claim.scope,
                    claim.key,
                    claim.method,
                    claim.path,
                    claim.request_hash,
                    self.context.clock(),
                )
                if stored is not None:
                    return Outcome(stored, replayed=True)
                result = handler(uow, self.context)
                written = uow.flush()
                response = respond(result, written)
                uow.idempotency.complete(claim.scope, claim.key, response)
                uow.commit()
                return Outcome(response, replayed=False, outbox_ids=written.outbox_ids)

        outcome = self._with_retries(attempt)
        self._committed(outcome.outbox_ids)
        return outcome

    def _committed(self, outbox_ids: tuple[str, ...]) -> None:
        if outbox_ids and self.after_commit is not None:
            self.after_commit(outbox_ids)

    def _with_retries(self, attempt: Callable[[], T]) -> T:
        for number in range(1, self.retries + 2):
            try:
                return attempt()
            except TransientConflict as exc:
                if number > self.retries:
                    raise CommandContention(str(exc)) from exc
                log.info("command lost a race (%s); attempt %d", exc, number + 1)
                time.sleep(0.005 * number)
        raise AssertionError("unreachable")
