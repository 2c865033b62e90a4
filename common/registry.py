"""Name -> class registries: one per kind of variant (encoding, defence, partitioner, attack).

A variant is one module plus one registry line (``@ENCODINGS.register`` on its class). A
name that is not registered may be an import reference ``"package.module:Class"``: the
module is imported (its decorator registers the class) and the class is returned, so a
variant that lives outside this repository, or in a test file, runs through ``flwr run``
without any other file changing. An unknown name raises :class:`UnknownVariant` listing the
known ones.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownVariant"]

T = TypeVar("T")


class UnknownVariant(ValueError):
    """A variant name that is neither registered nor an importable ``module:Class``."""


class Registry(Generic[T]):
    """Variants of one kind, by the name a run config uses.

    Parameters
    ----------
    kind : str
        What the variants are ("encoding", "defence", ...), for error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._references: dict[str, type[T]] = {}  # 'module:Class' names already imported

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under ``cls.name`` (a second class with the same
        name is an error, so two modules can never silently shadow each other)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a registered {self.kind} needs a non-empty class attribute 'name'")
        known = self._classes.get(name)
        if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({known.__module__} and {cls.__module__})")
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._classes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._classes or self._importable(name))

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, or the class an import reference names."""
        if name in self._classes:
            return self._classes[name]
        if name in self._references:
            return self._references[name]
        if ":" in name:
            return self._import(name)
        raise UnknownVariant(
            f"unknown {self.kind} {name!r}; known: {', '.join(self._classes)} "
            f"(or 'package.module:Class' of a registered {self.kind} defined elsewhere)"
        )

    def create(self, name: str, **kwargs) -> T:
        """An instance of :meth:`get` ``(name)``."""
        return self.get(name)(**kwargs)

    def _importable(self, name: str) -> bool:
        try:
            self._import(name)
        except UnknownVariant:
            return False
        return True

    def _import(self, reference: str) -> type[T]:
        module_name, _, attr = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise UnknownVariant(f"{self.kind} {reference!r}: cannot import it ({err})") from None
        registered = self._classes.get(getattr(cls, "name", None))
        if registered is not cls:
            raise UnknownVariant(f"{self.kind} {reference!r} is not registered (decorate it with the {self.kind} "
                                 "registry's register)")
        self._references[reference] = cls
        return cls
