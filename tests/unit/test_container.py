"""The composition root only wires: typed parts, given ones used as they are."""

from __future__ import annotations

from typing import Any, cast

import pytest

from giftmarket.bootstrap import Container, bootstrap
from giftmarket.commands.context import CommandContext
from giftmarket.commands.handlers import COMMAND_HANDLERS
from giftmarket.commands.ports import UnitOfWork
from giftmarket.settings import Settings


def test_a_misspelt_part_is_a_type_error_not_ignored() -> None:
    parts: dict[str, Any] = {"databse": object()}
    with pytest.raises(TypeError, match="databse"):
        Container(Settings(), **parts)
    with pytest.raises(TypeError, match="unit_of_wrok"):
        bootstrap(Settings(), unit_of_wrok=lambda: None)  # type: ignore[call-arg]


def test_given_parts_are_used_and_nothing_else_is_built() -> None:
    made: list[UnitOfWork] = []

    def unit_of_work() -> UnitOfWork:
        made.append(cast(UnitOfWork, object()))
        return made[-1]

    context = cast(CommandContext, object())
    container = Container(
        Settings(events_queue_url=None), unit_of_work=unit_of_work, command_context=context
    )

    assert container.unit_of_work() is made[0]
    executor = container.command_executor
    assert (executor.context, executor.handlers) == (context, COMMAND_HANDLERS)
    assert executor.unit_of_work() is made[1]
    # Nothing was built from settings: no pool, no client, no hasher.
    built = {"database", "redis", "images", "passwords", "sqs", "publisher", "read_models"}
    assert built.isdisjoint(vars(container))
