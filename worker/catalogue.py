"""The catalogue of official weights ``toonforge pull`` knows: every registered family's
entries (``TaskSpec.catalogue``, listed in the family's folder; the entry types and the
checksum rules are in tasks/catalogue.py). This module imports nothing heavy: listing the
catalogue needs no torch.
"""

from __future__ import annotations

from tasks import task_specs
from tasks.catalogue import CatalogueEntry, CatalogueFile

__all__ = ["CatalogueEntry", "CatalogueFile", "UnknownCatalogueEntry", "catalogue",
           "get_entry"]


def catalogue() -> tuple[CatalogueEntry, ...]:
    """Every registered family's entries, in registration order."""
    return tuple(entry for spec in task_specs() for entry in spec.catalogue)


class UnknownCatalogueEntry(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_entry(name: str) -> CatalogueEntry:
    entries = catalogue()
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries)
    raise UnknownCatalogueEntry(f"no catalogue entry {name!r}; known: {known}")
