"""Named entries of one kind, in registration order: the model roles and prompt kinds of a sweep, the
guidance methods. One class so that every registry refuses a clashing name and answers an unknown one the
same way (the registered names and the closest)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from lightning_diffusion.config import ConfigError, did_you_mean

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """Entries by name. ``noun`` and ``plural`` word the messages ("model role", "roles"); ``hint`` ends
    the unknown-name message (e.g. how to add one); ``sort`` lists the names sorted rather than in
    registration order."""

    def __init__(self, noun: str, plural: str, hint: str = "", sort: bool = False) -> None:
        self.noun, self.plural, self.hint, self.sort = noun, plural, hint, sort
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` as ``name``; the same entry again is a no-op, a different one is refused."""
        existing = self._entries.get(name)
        if existing is not None and existing != entry:
            raise ConfigError(f"two {self.plural} are named {name!r}; rename one.")
        self._entries[name] = entry
        return entry

    def get(self, name: str, asked_by: str | None = None) -> T:
        """The entry called ``name``; an unknown name (``asked_by``: who named it) is refused, listing the
        registered names and the closest."""
        if name in self._entries:
            return self._entries[name]
        raise ConfigError(self.unknown(name, asked_by))

    def unknown(self, name: str, asked_by: str | None = None) -> str:
        """The message for ``name``, which is not registered."""
        by = f"{asked_by} names " if asked_by else ""
        return (
            f"{by}unknown {self.noun} {name!r}{did_you_mean(name, self.names())}; the {self.plural} are: "
            f"{', '.join(self.names())}{self.hint}."
        )

    def names(self) -> list[str]:
        """The registered names (sorted with ``sort``, else in registration order)."""
        return sorted(self._entries) if self.sort else list(self._entries)

    def entries(self) -> list[T]:
        """The registered entries, in registration order."""
        return list(self._entries.values())

    def copy(self) -> NamedRegistry[T]:
        """A registry with the same entries, to register into without touching this one (tests)."""
        twin = NamedRegistry[T](self.noun, self.plural, self.hint, self.sort)
        twin._entries = dict(self._entries)
        return twin

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
