"""if-multibit (HPC eq. 14 positive branch, eq. 15): ``n = A(clip(q, 0, S_max))``, A(k) the largest
power of two <= k. Float model: ``snn/neurons/if_multibit.py``."""
import numpy as np

from loihi_conv.fixed.softif_modes.softif_mode import SoftIFMode, power_of_two_floor, register_mode


def emulate(q, vb, units, table):
    return table[q.clamp_(0, units)]


def lava(q, vb, units):
    return power_of_two_floor(np.clip(q, 0, units), units)


MODE = register_mode(SoftIFMode("if-multibit", power_of_two=True, buffered=False, emulate=emulate, lava=lava))
