"""The rebuild's batches (rows by position, a header naming the fields once) and its sender
(pipelines in flight on several lanes, the products after every other row) without a
server; that Redis builds the same read models from them is tests/integration's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable

import pytest

from giftmarket.projections.rebuild import SOURCES, Encoded, _chunks, _Sender, batch_of
from giftmarket.read_ports import ReadModelGenerations


def test_a_batch_names_each_field_once_and_gives_the_rows_by_position() -> None:
    orders = next(source for source in SOURCES if source.name == "orders")
    batch = json.loads(batch_of(orders, [('["o1", "3", "p1"]',), ('["o2", "1", "p2"]',)]))
    assert batch["k"] == "order"
    assert batch["once"][:3] == ["product_id", "buyer_id", "seller_id"]
    assert batch["set"] == ["status", "completed_at", "settled_at"]
    assert batch["rows"] == [["o1", "3", "p1"], ["o2", "1", "p2"]]


def test_every_source_selects_id_version_and_its_named_fields_in_that_order() -> None:
    for source in SOURCES:
        shape = json.loads(source.header + "]}")
        (column,) = source.query.selected_columns
        arguments = list(column.element.clauses)
        assert len(arguments) == 2 + len(shape["once"]) + len(shape["set"]), source.name


def test_only_the_products_wait_for_the_rest() -> None:
    assert [source.name for source in SOURCES if source.after_the_rest] == ["products"]
    assert SOURCES[-1].after_the_rest


def test_groups_start_small_and_grow_to_their_size() -> None:
    items: list[Encoded] = [(1, str(n)) for n in range(40)]
    sizes = [len(group) for group in _chunks(items, 16, 1)]
    assert sizes == [1, 2, 4, 8, 16, 9]
    assert [len(group) for group in _chunks(items, 16, 16)] == [16, 16, 8]
    assert [item for group in _chunks(items, 16, 1) for item in group] == items


class SlowGenerations(ReadModelGenerations):
    """Records what is applied, a while after it was asked, and on which thread."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.applied: list[str] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def apply_bulk(self, generation: int, batches: Iterable[str]) -> None:
        names = list(batches)
        time.sleep(0.01)
        if self.fail_on in names:
            raise RuntimeError(f"refused {self.fail_on}")
        self.applied += names
        self.threads.add(threading.current_thread().name)

    def generation(self) -> int | None:
        return None

    def building(self) -> int | None:
        return None

    def begin_generation(self) -> int:
        return 1

    def switch_to(self, generation: int) -> int | None:
        return None

    def abandon(self, generation: int) -> None:
        pass

    def drop(self, generation: int, *, batch: int = 1000) -> int:
        return 0


def test_the_barrier_waits_for_every_lane_and_progress_counts_every_row() -> None:
    store = SlowGenerations()
    progress: list[tuple[str, int, int]] = []
    with _Sender(store, 1, lambda *p: progress.append(p), lanes=2) as sender:
        sender.begin("asks", 6)
        for n in range(6):
            sender.send("asks", [(1, f"ask{n}")])
        sender.barrier()
        assert sorted(store.applied) == [f"ask{n}" for n in range(6)]
        sender.begin("products", 1)
        sender.send("products", [(1, "product")])
        sender.finish()
    assert store.applied[-1] == "product"
    assert len(store.threads) == 2
    assert ("asks", 6, 6) in progress and progress[-1] == ("products", 1, 1)


def test_a_failure_is_raised_to_the_caller_and_nothing_after_it_is_applied() -> None:
    store = SlowGenerations(fail_on="ask0")
    with pytest.raises(RuntimeError, match="refused ask0"):
        with _Sender(store, 1, None, lanes=1) as sender:
            sender.begin("asks", 4)
            for n in range(4):
                sender.send("asks", [(1, f"ask{n}")])
            sender.barrier()
    assert store.applied == []
