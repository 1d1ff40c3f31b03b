"""Runs a command in its own unit of work, retrying the races it can lose.

A command is data: a frozen dataclass subclassing `Command[R]`, where R is what its handler
returns. Each command type has exactly one handler, registered once in `CommandHandlers`
(`commands/handlers.py` holds the application's); `execute(command)` looks it up by the
command's type, so an entry point only builds the command object.

Every entry point uses it — the command API, the CLI, the projector's welcome coupon, the
jobs — so each gets the same promise: the handler's effects and events commit together or
not at all, and a deadlock or lock-wait timeout is run again rather than surfaced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from giftmarket.commands.context import CommandContext
from giftmarket.commands.ports import (
    CommandContention,
    Committed,
    StoredResponse,
    TransientConflict,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")


class Command(Generic[R_co]):
    """A request to change the write model, answered with an R by its one handler."""

    __slots__ = ()


C = TypeVar("C", bound=Command[Any])

# A command handler: `def buy_now(uow, command: BuyNow, ctx) -> Purchase`.
CommandHandler = Callable[[UnitOfWork, C, CommandContext], R]
# A step of a job that is not a command (a read, a batch), run in a unit of work all the same.
Work = Callable[[UnitOfWork, CommandContext], R]


class HandlerAlreadyRegistered(TypeError):
    """A command type was given a second handler."""


class NoHandler(TypeError):
    """A command was executed whose type has no registered handler."""


@dataclass(frozen=True)
class Registration(Generic[C]):
    command_type: type[C]
    handler: CommandHandler[C, Any]


def handles(command_type: type[C], handler: CommandHandler[C, Any]) -> Registration[C]:
    """`handler` runs every `command_type` command. mypy checks that it takes one; that it
    returns the command's R, tests/functional/test_command_handlers.py checks."""
    return Registration(command_type, handler)


class CommandHandlers:
    """One handler per command type, looked up by the command's exact type."""

    def __init__(self, *registrations: Registration[Any]) -> None:
        self._handlers: dict[type[Command[Any]], CommandHandler[Any, Any]] = {}
        for registration in registrations:
            if registration.command_type in self._handlers:
                raise HandlerAlreadyRegistered(
                    f"{registration.command_type.__qualname__} has a handler already"
                )
            self._handlers[registration.command_type] = registration.handler

    def handler_for(self, command: Command[R]) -> Work[R]:
        """The unit of work function that runs `command` (NoHandler if none is registered)."""
        handler: CommandHandler[Command[R], R] | None = self._handlers.get(type(command))
        if handler is None:
            raise NoHandler(f"no handler is registered for {type(command).__qualname__}")
        return lambda uow, ctx: handler(uow, command, ctx)

    def __contains__(self, command_type: object) -> bool:
        return command_type in self._handlers

    def __iter__(self) -> Iterator[type[Command[Any]]]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def handler(self, command_type: type[C]) -> CommandHandler[C, Any]:
        return self._handlers[command_type]


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
    # The commands it can execute; an executor without any runs only `transaction` work.
    handlers: CommandHandlers = field(default_factory=CommandHandlers)
    retries: int = 3
    # Told the outbox ids of every commit (not of replays): the fast path that publishes a
    # command's events at once. It must not raise; the relay catches whatever it misses.
    after_commit: Callable[[tuple[str, ...]], None] | None = None

    def execute(self, command: Command[R]) -> tuple[R, Committed]:
        """Run the command's handler and commit; returns its result and what was written."""
        return self.transaction(self.handlers.handler_for(command))

    def transaction(self, work: Work[R]) -> tuple[R, Committed]:
        """Run `work` in a unit of work and commit, with the promises of `execute`: a job's
        own steps (reads, batches) that are not commands."""

        def attempt() -> tuple[R, Committed]:
            with self.unit_of_work() as uow:
                result = work(uow, self.context)
                return result, uow.commit()

        result, committed = self._with_retries(attempt)
        self._committed(committed.outbox_ids)
        return result, committed

    def execute_idempotent(
        self,
        command: Command[R],
        claim: IdempotencyClaim,
        respond: Callable[[R, Committed], StoredResponse],
    ) -> Outcome:
        """Run the command once per idempotency key: the key is claimed and the response
        stored in the handler's own transaction; a repeat gets the stored response."""
        handler = self.handlers.handler_for(command)

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
