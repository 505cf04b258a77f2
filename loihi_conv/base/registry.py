"""Registries by name: every method family (neuron models, normalizers, observers, pooling
schemes, output readouts) is a dict ``name -> class`` filled by a class decorator, and looked up
with one error that lists the known names."""
from __future__ import annotations

from typing import Callable, TypeVar

from loihi_conv.base.errors import LoihiConvError

C = TypeVar("C", bound=type)


def registrar(table: dict[str, type], what: str) -> Callable[[str], Callable[[C], C]]:
    """``register(name)`` class decorator for ``table``: sets ``cls.name`` and files the class."""

    def register(name: str) -> Callable[[C], C]:
        def deco(cls: C) -> C:
            cls.name = name
            table[name] = cls
            return cls

        return deco

    register.__doc__ = f"Class decorator: make a {what} available under ``name``."
    return register


def lookup(table: dict[str, type], name: str, what: str) -> type:
    """``table[name]``, or a LoihiConvError naming the unknown ``what`` and the known names."""
    try:
        return table[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name from a hand-written recipe
        raise LoihiConvError(f"unknown {what} {name!r}", f"use one of: {', '.join(sorted(table))}") from None
