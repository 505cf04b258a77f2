"""Search-space knobs: what a method unit lets the recipe search choose, declared by the unit
itself (a normalizer its options, a neuron model its params, a method its switch). Plain data:
the search (``loihi_conv.app.recipe_search``) turns each into an Optuna suggestion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (a categorical knob; ordered values are still tried by name).

    ``requires``: (knob, value) that must hold for this knob to matter (ACP weights need ACP);
    ``only_for``: an IR node type the graph must contain for it to matter (a max-pool scheme
    needs a MaxPool2d)."""
    values: tuple[Any, ...]
    requires: tuple[str, Any] | None = None
    only_for: type | None = None


Knobs = dict[str, Choice]  # recipe field (or neuron param) -> its domain
