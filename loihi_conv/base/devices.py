"""Where torch work runs. ``cpu`` always; ``cuda`` only when torch sees a GPU.

Integer paths stay exact on a GPU only if TF32 is off (it rounds float32 matmuls/convs to a
10-bit mantissa) and integer-valued float sums stay below 2**24; ``resolve`` turns TF32 off.
The CUDA path is unmeasured until a GPU run exists (docs/speed.md).
"""
from __future__ import annotations

import torch

from loihi_conv.base.errors import LoihiConvError

DEVICES = ("cpu", "cuda")


def resolve(name: "str | torch.device | None" = None) -> torch.device:
    """The torch device for ``name`` (None: cpu), or one clear error when it cannot be used."""
    if name is None:
        return torch.device("cpu")
    if isinstance(name, torch.device):
        name = str(name)
    kind = str(name).split(":", 1)[0]
    if kind not in DEVICES:
        raise LoihiConvError(f"unknown device {name!r}", f"use one of: {', '.join(DEVICES)}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise LoihiConvError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine",
                                 "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)
