"""Search-space knobs: what a method unit lets the recipe search choose, declared by the unit
itself (a normalizer its options, a neuron model its params, a method its switch). Plain data:
the search (``loihi_conv.app.recipe_search``) turns each into an Optuna suggestion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (a categorical knob; ordered values are still tried by name)."""
    values: tuple[Any, ...]


Knobs = dict[str, Choice]  # recipe field (or neuron param) -> its domain
