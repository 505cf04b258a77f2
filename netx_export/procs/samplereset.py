"""SampleReset: one process that puts many Vars back to their start values between samples.

Why not ``Var.set``: Lava 0.10's runtime moves Var data one element per message
(magma/runtime/runtime.py set_var/get_var, "FIXME: send a whole vector"), ~40 us per element,
i.e. seconds per sample for a CIFAR-sized network. A RefPort write sends the whole array in one
message, in the post-management phase of the last step of each sample (as lava's
``io.reset.Reset`` does for one Var), so the next sample starts from a clean network.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

MAX_TARGETS = 1024


class SampleReset(AbstractProcess):
    """After every ``interval``-th step, write ``values[k]`` into the Var on ``ref_<k>``.

    Lava requires a model to declare exactly the ports and Vars its process has, so each
    target count gets its own subclass and model; create instances with ``sample_reset``.
    """

    def __init__(self, *, values: list[np.ndarray], interval: int) -> None:
        super().__init__(n=len(values), interval=int(interval))
        self.interval = Var(shape=(1,), init=int(interval))
        for k, value in enumerate(values):
            value = np.asarray(value)
            setattr(self, f"ref_{k}", RefPort(shape=value.shape))
            setattr(self, f"value_{k}", Var(shape=value.shape, init=value))


class _PySampleResetBase(PyLoihiProcessModel):
    interval: np.ndarray = LavaPyType(np.ndarray, int)

    def post_guard(self) -> bool:
        return self.time_step % int(self.interval[0]) == 0

    def run_post_mgmt(self) -> None:
        ports = [getattr(self, f"ref_{k}") for k in range(self.proc_params["n"])]
        for k, port in enumerate(ports):
            port.write(np.asarray(getattr(self, f"value_{k}")))
        for port in ports:
            port.wait()  # every write lands before the next sample's first step


_CLASSES: dict[int, type] = {}


def sample_reset(values: list[np.ndarray], interval: int) -> SampleReset:
    """A SampleReset for ``len(values)`` targets; connect ``ref_<k>`` to the k-th Var."""
    n = len(values)
    if not 0 < n <= MAX_TARGETS:
        raise ValueError(f"SampleReset takes 1..{MAX_TARGETS} targets, got {n}")
    if n not in _CLASSES:
        _CLASSES[n] = _make_classes(n)
    return _CLASSES[n](values=values, interval=interval)


def _make_classes(n: int) -> type:
    """Process and model classes for n targets, registered in this module's namespace, which
    is where Lava's compiler looks first for the models of a process."""
    proc_cls = type(f"SampleReset{n}", (SampleReset,), {"__module__": __name__})
    attrs = {"__module__": __name__}
    for k in range(n):
        attrs[f"ref_{k}"] = LavaPyType(PyRefPort.VEC_DENSE, int)
        attrs[f"value_{k}"] = LavaPyType(np.ndarray, int)
    model = type(f"PySampleResetModel{n}", (_PySampleResetBase,), attrs)
    model = implements(proc=proc_cls, protocol=LoihiProtocol)(requires(CPU)(model))
    globals()[proc_cls.__name__] = proc_cls
    globals()[model.__name__] = model
    return proc_cls
