"""The generated columns behind the orders' partial indexes: the migration that creates them
and the table metadata the code queries agree, and the history states they hold are the ones
the read model files orders under."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from giftmarket.adapters import tables
from giftmarket.domain.orders import PURCHASE_STATE, SALE_STATE, OrderStatus

ROOT = Path(__file__).resolve().parents[2]
MIGRATION = ROOT / "infra/migrations/versions/0006_order_partial_indexes.py"
APPLY_LUA = ROOT / "layers/core/giftmarket/adapters/lua/apply.lua"


def migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0006", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_generates_each_column_as_the_metadata_defines_it() -> None:
    generated = migration().GENERATED
    in_metadata = {
        column.name: str(column.computed.sqltext)
        for column in tables.orders.c
        if column.computed is not None and column.name != "coupon_in_force"  # 0004's
    }
    assert {name: expression for name, (_, expression) in generated.items()} == in_metadata


def test_the_migration_leaves_the_indexes_the_metadata_defines() -> None:
    module = migration()
    in_metadata = {tuple(c.name for c in index.columns) for index in tables.orders.indexes}
    assert set(module.NEW_INDEXES) <= in_metadata
    assert not set(module.OLD_INDEXES) & in_metadata


def test_every_status_has_a_history_state_for_each_party() -> None:
    assert set(PURCHASE_STATE) == set(SALE_STATE) == set(OrderStatus)
    assert set(PURCHASE_STATE.values()) == set(SALE_STATE.values()) == {"in_progress", "done"}


def _lua_table(source: str, name: str) -> dict[str, str]:
    body = re.search(rf"local {name} = \{{(.*?)\}}", source, re.S)
    assert body is not None, name
    return dict(re.findall(r"(\w+) = '(\w+)'", body.group(1)))


def test_the_read_model_files_orders_under_the_same_history_states() -> None:
    source = APPLY_LUA.read_text()
    assert _lua_table(source, "BUYER_STATE") == {s.value: v for s, v in PURCHASE_STATE.items()}
    assert _lua_table(source, "SELLER_STATE") == {s.value: v for s, v in SALE_STATE.items()}
