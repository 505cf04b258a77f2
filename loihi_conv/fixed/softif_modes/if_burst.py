"""if-burst: ``n = clip(q, 0, Γ)`` burst spikes per step (Γ = max_units).
Float model: ``snn/neurons/if_burst.py``."""
import numpy as np

from loihi_conv.fixed.softif_modes.softif_mode import SoftIFMode, register_mode


def emulate(q, vb, units, table):
    return q.clamp_(0, units)


def lava(q, vb, units):
    return np.clip(q, 0, units)


MODE = register_mode(SoftIFMode("if-burst", power_of_two=False, buffered=False, emulate=emulate, lava=lava))
