"""SoftIF payload modes, one file each (the integer half of a neuron model whose float half is
``snn/neurons/<name>.py``); importing this package registers them all in ``SOFTIF_MODES``."""
from loihi_conv.fixed.softif_modes.softif_mode import (  # noqa: F401  (the package's API)
    DEFAULT_MODE, SOFTIF_MODES, SoftIFMode, get_mode, is_buffered, power_of_two_floor, register_mode)
from loihi_conv.fixed.softif_modes import if_soft, if_burst, if_multibit, if_buffered  # noqa: E402,F401,I001
