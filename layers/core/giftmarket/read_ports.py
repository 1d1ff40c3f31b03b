"""The read side's ports: the read-model store that the projector writes, the rebuild fills
and the queries read, as abstract classes (the write side's are in `commands/ports.py`).

`adapters/read_models.py` implements the whole store for Redis. Each user depends on the
part it needs, and a test fake subclasses that part only:

- `ReadModelWriter`: what the projector applies, one event's operations at a time;
- `ReadModelGenerations`: what the rebuild needs to fill a new generation and switch to it;
- `ReadModelReader`: what the queries read (None wherever the read model cannot answer, so
  the query falls back to SQL);
- `ReadModelStore`: all three, the part the composition root builds and hands out.

This module sits beside `commands` in the layering (tests/unit/test_import_graph.py): the
adapters may import it, and it imports nothing of giftmarket but the kernel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

# One entity's state for the read models: `k` its kind, `id`, `v` the version it reflects,
# `once` the fields that never change once known, `set` those that do, every value a string
# (`projections/ops.py` makes them; `adapters/lua/apply.lua` applies them).
Op = dict[str, Any]

# A stored document: its fields by name, as the read model holds them.
Document = dict[str, Any]


class RebuildRunning(Exception):
    """Another rebuild is filling a generation right now."""

    def __init__(self, generation: int | None) -> None:
        super().__init__(f"a rebuild is already running (generation {generation})")
        self.generation = generation


class ReadModelWriter(ABC):
    @abstractmethod
    def apply(self, ops: Sequence[Op], *, outbox_id: str | None = None) -> int:
        """Apply `ops` to the live generations (the current one and the one being built);
        remember `outbox_id` as projected. Returns how many generations were written."""


class ReadModelGenerations(ABC):
    """The read models live in generations: queries read the current one; a rebuild fills
    a new one (which the projector writes to as well meanwhile) and then switches to it."""

    @abstractmethod
    def generation(self) -> int | None:
        """The generation queries read; None before the first rebuild."""

    @abstractmethod
    def building(self) -> int | None:
        """The generation a rebuild is filling, if one is."""

    @abstractmethod
    def begin_generation(self) -> int:
        """A new, empty generation that the projector writes to from now on as well.
        Raises RebuildRunning while another one is being built."""

    @abstractmethod
    def apply_bulk(self, generation: int, batches: Iterable[str]) -> None:
        """Apply batches of operations, each a JSON array of `Op`, to a generation being
        built, in one round trip."""

    @abstractmethod
    def switch_to(self, generation: int) -> int | None:
        """Make `generation` the one queries read, atomically; the previous one, if any.
        Raises if another rebuild took over in the meantime."""

    @abstractmethod
    def abandon(self, generation: int) -> None:
        """Give up a generation being built, and delete what it holds."""

    @abstractmethod
    def drop(self, generation: int, *, batch: int = 1000) -> int:
        """Delete a generation's keys; returns how many there were."""

    def drop_older_layouts(self) -> int:
        """Delete what read models of an older layout are left (after a deployment that
        changed the layout); returns how many keys. A store with one layout has none."""
        return 0


class ReadModelReader(ABC):
    """Each read returns what the read model stores, None when it cannot answer (no
    generation yet, or the entity not projected); `giftmarket.queries` shapes the answers."""

    @abstractmethod
    def all_seen(self, outbox_ids: Iterable[str]) -> bool:
        """Whether every one of these events has been projected (consistency tokens)."""

    @abstractmethod
    def user(self, user_id: str) -> Document | None: ...

    @abstractmethod
    def product(self, product_id: str, *, recent_trades: int, ladder: int) -> Document | None: ...

    @abstractmethod
    def products(
        self, *, sort: str, category: str | None, after: str | None, limit: int
    ) -> list[Document] | None: ...

    @abstractmethod
    def rankings(self, *, by: str, limit: int) -> list[Document] | None: ...

    @abstractmethod
    def documents(
        self, user_id: str, lists: Sequence[tuple[str, str]], limit: int
    ) -> list[Document] | None:
        """The newest documents of the caller's `lists` ((name, kind of document) each),
        merged, newest first."""

    @abstractmethod
    def queue(self, name: str, limit: int) -> list[Document] | None:
        """The oldest orders of an admins' queue ("inspections" or "disputes")."""

    @abstractmethod
    def order(self, order_id: str) -> Document | None: ...

    @abstractmethod
    def gifticon(self, order_id: str) -> tuple[str, str, str, str | None] | None:
        """(buyer id, seller id, the voucher image's S3 key, when it was delivered or
        None) of an order."""

    @abstractmethod
    def record_search(self, user_id: str, query: str, at: datetime) -> None:
        """Remember a search (the store's own data, not a projection)."""

    @abstractmethod
    def search_history(self, user_id: str) -> list[tuple[str, datetime]]:
        """The user's recent searches and when each was made, newest first."""


class ReadModelStore(ReadModelWriter, ReadModelGenerations, ReadModelReader):
    """The whole store: what the composition root builds once per container."""
