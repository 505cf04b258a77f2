"""loihi-conv: convert trained PyTorch CNNs into spiking networks for Intel Loihi 2."""
from loihi_conv.base.errors import LoihiConvError

__version__ = "0.1.0"
__all__ = ["LoihiConvError", "__version__"]
