"""Host <-> Lava data exchange through memory-mapped files instead of Var get/set.

Lava 0.10's runtime moves Var data one element per message (magma/runtime/runtime.py
set_var/get_var: "FIXME: send a whole vector"), ~40 us per element: reading one recorded conv
layer of a small PilotNet over 9 steps took 30 s. These processes read/write a shared
``np.memmap`` (the host owns the file, in /dev/shm when available) so a sample's input and its
recordings cost nothing beyond the simulation itself.

* ``MmapSource``: sends row ``(t-1) % T`` of a (T, *shape) int file at step t, like
  ``io.source.RingBuffer`` but refillable by the host between runs.
* ``PortRecorder``: stores what an OutPort sends at step t in row ``(t-1) % steps``.
* ``VarRecorder``: stores a Var's value after step t in row ``(t-1) % steps``, read through a
  RefPort in the pre-management phase: a barrier phase before post-management, where
  ``SampleReset`` rewrites the states after a sample's last step (both in post-management
  would race).
Arrays in the files are in Lava order ((W,H,C) or (N,)), with time first.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort, PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort, RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

DTYPE = np.int64


def open_file(path: str, rows: int, shape: tuple[int, ...], mode: str) -> np.memmap:
    """The (rows, *shape) int64 memmap both the host and the process models use."""
    return np.memmap(path, dtype=DTYPE, mode=mode, shape=(rows, *shape))


class MmapSource(AbstractProcess):
    """Sends row (t-1) % rows of the file at ``path`` on ``s_out`` at step t."""

    def __init__(self, *, shape: tuple[int, ...], rows: int, path: str) -> None:
        super().__init__(shape=tuple(shape), rows=int(rows), path=str(path))
        self.s_out = OutPort(shape=tuple(shape))


class PortRecorder(AbstractProcess):
    """Records the messages of the OutPort connected to ``a_in``."""

    def __init__(self, *, shape: tuple[int, ...], rows: int, path: str) -> None:
        super().__init__(shape=tuple(shape), rows=int(rows), path=str(path))
        self.a_in = InPort(shape=tuple(shape))


class VarRecorder(AbstractProcess):
    """Records the Var connected to ``ref`` (``ref.connect_var(var)``)."""

    def __init__(self, *, shape: tuple[int, ...], rows: int, path: str) -> None:
        super().__init__(shape=tuple(shape), rows=int(rows), path=str(path))
        self.ref = RefPort(shape=tuple(shape))


class _MmapModel(PyLoihiProcessModel):
    """Opens the file lazily, inside the process that runs the model."""

    def _file(self) -> np.memmap:
        if getattr(self, "_mm", None) is None:
            p = self.proc_params
            self._mm = open_file(p["path"], p["rows"], p["shape"], "r+")
        return self._mm

    def _row(self) -> int:
        return (self.time_step - 1) % self.proc_params["rows"]


@implements(proc=MmapSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyMmapSourceModel(_MmapModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self) -> None:
        self.s_out.send(np.asarray(self._file()[self._row()], dtype=np.int32))


@implements(proc=PortRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyPortRecorderModel(_MmapModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self) -> None:
        self._file()[self._row()] = self.a_in.recv()


@implements(proc=VarRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyVarRecorderModel(_MmapModel):
    ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, int)

    def pre_guard(self) -> bool:
        return True

    def lrn_guard(self) -> bool:  # Lava runs pre-management only together with learning
        return True

    def run_pre_mgmt(self) -> None:
        self._file()[self._row()] = self.ref.read()
