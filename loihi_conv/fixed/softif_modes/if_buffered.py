"""if-buffered (HPC eq. 12-14): ``n = A(clip(q, 0, S)) - A(clip(min(-q, vb), 0, S))`` (negative
spikes retract earlier ones; ``-q = ceil(-v / vth6)``), then ``vb += n``.
Float model: ``snn/neurons/if_buffered.py``."""
import numpy as np

from loihi_conv.fixed.softif_modes.softif_mode import SoftIFMode, power_of_two_floor, register_mode


def emulate(q, vb, units, table):
    neg = table[q.neg().minimum(vb).clamp_(0, units)]
    return table[q.clamp_(0, units)].sub_(neg)


def lava(q, vb, units):
    return power_of_two_floor(np.clip(q, 0, units), units) \
        - power_of_two_floor(np.clip(np.minimum(-q, vb), 0, units), units)


MODE = register_mode(SoftIFMode("if-buffered", power_of_two=True, buffered=True, emulate=emulate, lava=lava))
