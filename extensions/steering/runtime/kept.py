"""A bounded, thread-safe map whose least recently written entries are dropped first (what is kept in
memory per chat, request or browser session, so that no number of them grows it past its limit)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class Kept(Generic[V]):
    def __init__(self, limit: int):
        self._limit = limit
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def put(self, key: Hashable, value: V) -> None:
        self.update(key, lambda _: value)

    def update(self, key: Hashable, change: Callable[[V | None], V]) -> None:
        """Write ``change(the value kept now, or None)`` under ``key`` in one step."""
        with self._lock:
            value = change(self._items.pop(key, None))
            self._items[key] = value
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def get(self, key: Hashable, pop: bool = False) -> V | None:
        with self._lock:
            return self._items.pop(key, None) if pop else self._items.get(key)
