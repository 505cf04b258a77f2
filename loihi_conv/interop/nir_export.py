"""SNN IR -> NIR graph: our float SNN as a ``nir.NIRGraph`` that ``nir.read`` loads and other NIR
simulators run (docs/nir.md, "Export").

One handler per IR node class (``HANDLERS``). An IR neuron sends ``threshold`` per spike, a NIR
neuron 0/1, so every synapse's weights are multiplied by the amplitude of what it reads
(theta per input channel, float64: the product of two float32 numbers is exact there, and
dividing it back on import gives the float32 weight exactly, so ours -> NIR -> ours is bit for
bit). ``Add`` becomes NIR fan-in (several edges into one node sum). The output synapse, whose
per-step value the readout sums, feeds a NIR Integrator (R = 1, dt = 1).

Carried: Conv2d, Linear (Affine), AvgPool2d, Flatten, Add, the neuron models if-zero / if-soft /
cuba-lif as NIR IF (no leak), LIF (leak) or CubaLIF (synaptic current), thresholds per neuron
arrays, reset by subtraction and '>=' as node metadata (NIR itself resets to v_reset and fires
on '>'). Refused with a reason: see ``REFUSED`` and ``_check``.
"""
from __future__ import annotations

from functools import singledispatch

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops

DT = 1.0
REFUSED = {
    ir.MaxPool2d: "NIR 1.0 has no max-pool node (and our spiking max-pool schemes are stateful)",
    ir.BatchNorm: "fold batch norm first (the SNN IR has none after conversion)",
    ir.ReLU: "a ReLU is an ANN activation: convert the model to an SNN first",
}


class NIRExportError(LoihiConvError):
    """Something of our SNN that NIR cannot carry."""


def to_nir(graph: ir.Graph):
    """``nir.NIRGraph`` of the SNN IR ``graph`` (module doc)."""
    import nir

    _check(graph)
    if any(not n.shape for n in graph if not isinstance(n, ir.Input)):
        graph = ops.infer_shapes(graph.copy())
    ex = _Export(graph)
    for node in graph:
        _export(node, ex)
    ex.nodes["output_integrator"] = nir.I(r=np.ones(graph[graph.output].shape, dtype=np.float64))
    ex.nodes["output"] = nir.Output(output_type=np.array(graph[graph.output].shape))
    ex.edges += [(s, "output_integrator") for s in ex.sources[graph.output]] + [("output_integrator", "output")]
    return nir.NIRGraph(nodes=ex.nodes, edges=ex.edges, type_check=False,
                        metadata={"dt": DT, "producer": "loihi-conv", "readout": "Integrator over every step"})


def write_nir(graph: ir.Graph, path) -> str:
    """Write ``to_nir(graph)`` to ``path`` (atomically)."""
    from loihi_conv.interop.nir_file import write

    return str(write(to_nir(graph), path))


def _check(graph: ir.Graph) -> None:
    for node in graph:
        why = REFUSED.get(type(node))
        if why:
            raise NIRExportError(f"node '{node.name}' ({type(node).__name__}) cannot be written to NIR: {why}",
                                 "convert with max_pool='avg' for NIR export" if isinstance(node, ir.MaxPool2d)
                                 else "export the SNN produced by convert()")
    output = (graph.meta.get("recipe") or {}).get("output", "potential")
    if output != "potential":
        raise NIRExportError(f"readout output={output!r} has no NIR form (NIR carries the network, not our "
                             "decoding of its output)", "convert with Recipe(output='potential')")


class _Export:
    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.amp: dict[str, np.ndarray | None] = {}  # IR value = amp * NIR value
        self.sources: dict[str, list[str]] = {}  # IR node -> the NIR nodes whose sum it is

    def connect(self, node: ir.Node, nir_name: str) -> None:
        for i in node.inputs:
            self.edges += [(s, nir_name) for s in self.sources[i]]
        self.sources[node.name] = [nir_name]

    def amp_in(self, node: ir.Node) -> np.ndarray | None:
        return self.amp[node.inputs[0]]


def _f64(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().to(torch.float64).numpy().copy()


@singledispatch
def _export(node: ir.Node, ex: _Export) -> None:
    raise NIRExportError(f"node '{node.name}' ({type(node).__name__}) has no NIR form", "see docs/nir.md")


@_export.register
def _(node: ir.Input, ex: _Export) -> None:
    import nir

    ex.nodes[node.name] = nir.Input(input_type=np.array(node.shape))
    ex.sources[node.name] = [node.name]
    ex.amp[node.name] = None


@_export.register
def _(node: ir.Linear, ex: _Export) -> None:
    import nir

    w = _f64(node.weight)
    amp = ex.amp_in(node)
    if amp is not None:
        w = w * amp.reshape(1, -1)
    b = _f64(node.bias) if node.bias is not None else np.zeros(w.shape[0])
    ex.nodes[node.name] = nir.Affine(weight=w, bias=b)
    ex.connect(node, node.name)
    ex.amp[node.name] = None


@_export.register
def _(node: ir.Conv2d, ex: _Export) -> None:
    import nir

    w = _f64(node.weight)
    amp = ex.amp_in(node)
    src_shape = ex.graph[node.inputs[0]].shape
    if amp is not None:
        amp_c = amp.reshape(src_shape[0], -1)[:, 0]
        co, cig = w.shape[:2]
        in_ch = (np.arange(co)[:, None] // (co // node.groups)) * cig + np.arange(cig)[None, :]
        w = w * amp_c[in_ch][:, :, None, None]
    b = _f64(node.bias) if node.bias is not None else np.zeros(w.shape[0])
    ex.nodes[node.name] = nir.Conv2d(input_shape=tuple(src_shape[1:]), weight=w, stride=tuple(node.stride),
                                     padding=tuple(node.padding), dilation=tuple(node.dilation),
                                     groups=int(node.groups), bias=b)
    ex.connect(node, node.name)
    ex.amp[node.name] = None


@_export.register
def _(node: ir.AvgPool2d, ex: _Export) -> None:
    import nir

    if node.ceil_mode or not node.count_include_pad:
        raise NIRExportError(f"AvgPool2d '{node.name}' uses ceil_mode or count_include_pad=False, which NIR's "
                             "AvgPool2d does not express", "use floor mode and count_include_pad=True")
    ex.nodes[node.name] = nir.AvgPool2d(kernel_size=np.array(node.kernel_size), stride=np.array(node.stride),
                                        padding=np.array(node.padding))
    ex.connect(node, node.name)
    amp = ex.amp_in(node)
    ex.amp[node.name] = None if amp is None else \
        np.broadcast_to(amp.reshape(node.shape[0], -1)[:, :1, None], node.shape).copy()


@_export.register
def _(node: ir.Flatten, ex: _Export) -> None:
    import nir

    src_shape = ex.graph[node.inputs[0]].shape
    ex.nodes[node.name] = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0, end_dim=-1)
    ex.connect(node, node.name)
    amp = ex.amp_in(node)
    ex.amp[node.name] = None if amp is None else amp.reshape(-1)


@_export.register
def _(node: ir.Add, ex: _Export) -> None:
    amps = [ex.amp[i] for i in node.inputs]
    if any((a is None) != (amps[0] is None) or (a is not None and not np.array_equal(a, amps[0])) for a in amps):
        raise NIRExportError(f"Add '{node.name}' sums populations with different thresholds directly; NIR fan-in "
                             "sums 0/1 spikes", "put a synapse on each branch before the join")
    ex.sources[node.name] = [s for i in node.inputs for s in ex.sources[i]]  # NIR fan-in sums
    ex.amp[node.name] = amps[0]


MODELS = ("if-zero", "if-soft", "cuba-lif")


@_export.register
def _(node: ir.Neuron, ex: _Export) -> None:
    import nir

    if node.model not in MODELS:
        raise NIRExportError(f"neuron '{node.name}' uses model {node.model!r}: NIR neurons send binary spikes "
                             "(no burst, multi-bit, buffered or SpiCalib payloads)",
                             f"convert with one of: {', '.join(MODELS)}")
    if node.v_init is not None and bool(torch.any(node.v_init != 0)) or node.params.get("v0") is not None:
        raise NIRExportError(f"neuron '{node.name}' starts at v(0) != 0; NIR has no initial state",
                             "convert with v_init=0 and without ACP potential calibration")
    extra = sorted(set(node.params) - {"du", "dv", "reset", "compare"})
    if extra:
        raise NIRExportError(f"neuron '{node.name}': params {extra} (e.g. voltage clamping) have no NIR form",
                             "convert with clamp_delay=0")
    shape = tuple(node.shape)
    theta = np.broadcast_to(_f64(node.threshold).reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()
    p = {"if-zero": {"reset": "zero", "compare": "ge"}, "if-soft": {"reset": "subtract", "compare": "ge"}}.get(
        node.model, node.params)
    du, dv = float(p.get("du", 1.0)), float(p.get("dv", 0.0))
    meta = {"reset": p.get("reset", "zero"), "compare": p.get("compare", "gt"), "du": du, "dv": dv}
    full = np.ones(shape)
    if du == 1.0 and dv == 0.0:
        new = nir.IF(r=full / DT, v_threshold=theta, v_reset=np.zeros(shape), metadata=meta)
    elif du == 1.0:
        tau = DT / dv
        new = nir.LIF(tau=full * tau, r=full * tau / DT, v_leak=np.zeros(shape), v_threshold=theta,
                      v_reset=np.zeros(shape), metadata=meta)
    elif dv > 0.0:
        ts, tm = DT / du, DT / dv
        new = nir.CubaLIF(tau_syn=full * ts, tau_mem=full * tm, r=full * tm / DT, v_leak=np.zeros(shape),
                          v_threshold=theta, v_reset=np.zeros(shape), w_in=full / du, metadata=meta)
    else:
        raise NIRExportError(f"neuron '{node.name}': a synaptic current (du < 1) with no membrane leak (dv = 0) "
                             "needs an infinite NIR tau_mem", "give the membrane a leak")
    ex.nodes[node.name] = new
    ex.connect(node, node.name)
    ex.amp[node.name] = theta


__all__ = ["to_nir", "write_nir", "NIRExportError", "REFUSED"]
