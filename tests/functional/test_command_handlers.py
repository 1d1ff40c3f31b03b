"""Commands are data: each command type has one handler, registered once, and the command
API answers with the status its route's decorator states."""

from __future__ import annotations

import importlib
import json
import pkgutil
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.fakes import (
    ADMIN_EMAIL,
    FakeClock,
    FakePasswords,
    FakeSignInGuard,
    FakeStore,
    FakeUnitOfWork,
    make_context,
)

import giftmarket.commands
from giftmarket.bootstrap import bootstrap, set_container
from giftmarket.commands import accounts, trading
from giftmarket.commands.executor import (
    Command,
    CommandExecutor,
    CommandHandlers,
    HandlerAlreadyRegistered,
    NoHandler,
    handles,
)
from giftmarket.commands.handlers import COMMAND_HANDLERS
from giftmarket.commands.ports import UnitOfWork
from giftmarket.domain.sign_in import SignInLimits
from giftmarket.settings import Settings
from giftmarket_local.invoke import LocalInvoker, Reply


def command_types() -> set[type[Command[Any]]]:
    """Every Command subclass defined in a module of giftmarket.commands."""
    found: set[type[Command[Any]]] = set()
    for module_info in pkgutil.iter_modules(giftmarket.commands.__path__):
        module = importlib.import_module(f"giftmarket.commands.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Command)
                and value is not Command
                and value.__module__ == module.__name__
            ):
                found.add(value)
    return found


def test_every_command_type_has_a_handler() -> None:
    types = command_types()
    assert trading.BuyNow in types and accounts.IssueWelcomeCoupon in types
    assert {t.__qualname__ for t in types - set(COMMAND_HANDLERS)} == set()
    assert set(COMMAND_HANDLERS) == types


def _result_type(command_type: type[Command[Any]]) -> Any:
    (base,) = [b for b in command_type.__orig_bases__ if typing.get_origin(b) is Command]  # type: ignore[attr-defined]
    (result,) = typing.get_args(base)
    return type(None) if result is None else result


@pytest.mark.parametrize("command_type", sorted(COMMAND_HANDLERS, key=str))
def test_each_handler_takes_its_command_and_returns_what_the_command_promises(
    command_type: type[Command[Any]],
) -> None:
    hints = typing.get_type_hints(COMMAND_HANDLERS.handler(command_type))
    assert hints["command"] is command_type
    assert hints["return"] == _result_type(command_type)


def test_a_command_type_registered_twice_is_refused() -> None:
    with pytest.raises(HandlerAlreadyRegistered, match="BuyNow"):
        CommandHandlers(
            handles(trading.BuyNow, trading.buy_now),
            handles(trading.SellNow, trading.sell_now),
            handles(trading.BuyNow, trading.buy_now),
        )


def test_a_command_without_a_handler_is_refused_before_any_unit_of_work() -> None:
    opened: list[FakeUnitOfWork] = []
    store = FakeStore()

    def unit_of_work() -> UnitOfWork:
        opened.append(FakeUnitOfWork(store))
        return opened[-1]

    only_signup = CommandHandlers(handles(accounts.SignUp, accounts.sign_up))
    executor = CommandExecutor(unit_of_work, make_context(), only_signup)
    with pytest.raises(NoHandler, match="ChargePoints"):
        executor.execute(accounts.ChargePoints("01USER0000000000000000000A", 100))
    assert opened == []

    account, _ = executor.execute(accounts.SignUp("a@example.com", "password123", "a"))
    assert len(opened) == 1
    assert store.rows["users"][account.user_id].email == "a@example.com"


# --- the status a route answers with is the one its decorator states ------------------------


@dataclass
class Api:
    invoker: LocalInvoker

    def send(self, method: str, path: str, body: Any = None, **headers: str) -> Reply:
        raw = b"" if body is None else json.dumps(body).encode()
        return self.invoker.http(
            method, path, body=raw, headers={"content-type": "application/json", **headers}
        )


@pytest.fixture
def api() -> Iterator[Api]:
    store, clock = FakeStore(), FakeClock()
    container = bootstrap(
        Settings(environment="test", events_queue_url=None),
        unit_of_work=lambda: FakeUnitOfWork(store),
        command_context=make_context(clock=clock, passwords=FakePasswords()),
        sign_in_guard=FakeSignInGuard(SignInLimits(5, 50, 900), clock),
    )
    set_container(container)
    try:
        yield Api(LocalInvoker())
    finally:
        set_container(None)


def test_each_command_route_answers_with_its_decorators_status(api: Api) -> None:
    credentials = {"email": ADMIN_EMAIL, "password": "password123"}
    signup = api.send("POST", "/api/auth/signup", {**credentials, "nickname": "ad"})
    assert signup.status == 201, signup
    login = api.send("POST", "/api/auth/login", credentials)
    assert login.status == 200, login
    bearer = {"authorization": f"Bearer {login.body['token']}"}

    charge = api.send("POST", "/api/points/charge", {"amount": 500}, **bearer)
    assert (charge.status, charge.body) == (200, {"available_points": 500})
    product = {"name": "Latte", "brand": "Cafe", "category": "coffee", "face_value": 5000}
    keyed = {**bearer, "Idempotency-Key": "product-1"}
    registered = api.send("POST", "/api/products", product, **keyed)
    assert registered.status == 201, registered
    again = api.send("POST", "/api/products", product, **keyed)
    assert (again.status, again.headers["idempotent-replayed"]) == (201, "true")
    assert again.body == registered.body
    liked = api.send("POST", f"/api/products/{registered.body['product_id']}/likes", **bearer)
    assert (liked.status, liked.raw) == (204, b"")
    assert "x-consistency-token" in liked.headers
