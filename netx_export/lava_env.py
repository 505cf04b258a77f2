"""Make Lava importable after other code has touched multiprocessing.

Lava 0.10 calls ``multiprocessing.set_start_method('fork')`` when its runtime module is first
imported (lava/magma/runtime/message_infrastructure/multiprocessing.py:47). That raises
"context has already been set" once anything else has fixed the start method -- e.g. a torch
DataLoader during ``loihi_conv.convert`` -- even when the method already is 'fork'. Call
``prepare()`` before the first Lava import.
"""
from __future__ import annotations

import multiprocessing as mp
import sys

from loihi_conv.base.errors import LoihiConvError

_LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"


def prepare() -> None:
    """Undo an already-fixed 'fork' start method so Lava's own ``set_start_method`` succeeds."""
    if _LAVA_MP in sys.modules:
        return
    method = mp.get_start_method(allow_none=True)
    if method is None:
        return
    if method != "fork":
        raise LoihiConvError(
            f"multiprocessing already uses the {method!r} start method; Lava needs 'fork'",
            "import netx_export's Lava modules (or lava) before anything sets another method")
    mp.set_start_method(None, force=True)  # Lava sets 'fork' again right away
