"""Bit-exact, batched fixed-point emulator of a ``qir.QNetwork``.

It computes what Lava's ``Loihi2SimCfg(select_tag='fixed_pt')`` computes (lava-nc 0.10.0).

``emulate(qnet, x, steps)`` runs many samples at once with PyTorch; ``Emulator`` is the
step-by-step streaming form. Nothing here imports Lava.
"""
from loihi_conv.emulate.engine import EmulationResult, Emulator, emulate
from loihi_conv.emulate.predict import emulator_predictions

__all__ = ["EmulationResult", "Emulator", "emulate", "emulator_predictions"]
