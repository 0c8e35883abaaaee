"""The small LRU of non-active versions that requests asked for with ``?version=``."""

from __future__ import annotations

import logging
from collections import OrderedDict

from service.inference.sessions import LoadedVersion

log = logging.getLogger(__name__)
VersionKey = tuple[str, int]  # (model name, version)


class VersionLRU:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # 0: nothing is kept
        self._held: OrderedDict[VersionKey, LoadedVersion] = OrderedDict()

    def get(self, key: VersionKey) -> LoadedVersion | None:
        """The cached version, now the most recently used one."""
        cached = self._held.get(key)
        if cached is not None:
            self._held.move_to_end(key)
        return cached

    def take(self, key: VersionKey) -> LoadedVersion | None:
        """Remove and return the cached version (it becomes active elsewhere)."""
        return self._held.pop(key, None)

    def put(self, key: VersionKey, loaded: LoadedVersion) -> None:
        """Keep ``loaded``, evicting the least recently used beyond the capacity."""
        if self.capacity <= 0:
            return
        self._held[key] = loaded
        while len(self._held) > self.capacity:
            evicted, _ = self._held.popitem(last=False)
            log.info("evicted %s@%s from the extra-version cache", *evicted)

    def values(self) -> list[LoadedVersion]:
        return list(self._held.values())  # one step under the GIL: safe from other threads

    def clear(self) -> None:
        self._held.clear()
