"""A bounded LRU cache of narratives, keyed by alert fingerprint, model and prompt version.

Repeats of an alert (same fingerprint) get the narrative already paid for; a new model or a new
prompt version asks again. In memory only: a restart costs one call per live alert, which the
hourly budget bounds, and nothing model-generated is kept anywhere but the alert's status.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from falco_triage.models.narrative import Narrative


class CacheKey(NamedTuple):
    fingerprint: str
    model: str
    prompt_version: str


class NarrativeCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[CacheKey, Narrative] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: CacheKey) -> Narrative | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: CacheKey, narrative: Narrative) -> None:
        if self._size <= 0:
            return
        self._items[key] = narrative
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
