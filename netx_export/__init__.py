"""NetX HDF5 files (standard and loihi-conv extension) and Lava processes.

``save``/``load``/``read_info`` need only h5py and numpy; ``build``/``LavaRunner`` import Lava
(and, for standard files, lava-dl's netx, which imports torch), so they load lazily.
"""
from importlib import import_module

_EXPORTS = {
    "save": "netx_export.writer",
    "load": "netx_export.reader",
    "read_info": "netx_export.reader",
    "diff_networks": "netx_export.compare",
    "HardwareLimitWarning": "netx_export.validate",
    "build": "netx_export.build",
    "LavaNet": "netx_export.build",
    "LavaRunner": "netx_export.runner",
    "LavaResult": "netx_export.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'netx_export' has no attribute {name!r}")
