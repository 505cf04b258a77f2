"""if-soft (binary spikes): n = 1 when v >= vth << 6 ('>=' as in the conversion papers).
Float model: ``snn/neurons/if_soft.py``. The emulator runs it on its binary fast path."""
from loihi_conv.fixed.softif_modes.softif_mode import SoftIFMode, register_mode


def lava(q, vb, units):
    return (q >= 1).astype(q.dtype)  # q >= 1 iff v >= vth << 6


MODE = register_mode(SoftIFMode("if-soft", power_of_two=False, buffered=False, emulate=None, lava=lava))
