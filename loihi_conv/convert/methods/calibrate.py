"""Post-conversion SNN edits: ClipRound bias, voltage clamping, and the calibration paper's
layer-wise parameter calibration (LCP: bias; ACP: initial potential and weights).

All functions take an SNN IR graph (``ir.Neuron`` nodes) and return a modified copy. Layouts:
calibration inputs x are (N, *input shape); per-channel vectors (C,); per-neuron potentials
(C, H, W) or (F,) -- a Neuron's ``shape``; weights keep the IR layouts (Conv2d (Co, Ci/g, kH,
kW), Linear (Nout, Nin)); cached layer inputs/targets are (N, *node shape).

Export: bias and per-channel ``v_init`` changes are representable by the ``if-soft`` target
(SoftIF has per-channel vth, v_init and bias), and so is ``params["clamp_steps"]``
(``SoftIF.clamp_steps``); per-neuron ``params["v0"]`` (ACP with granularity "neuron") is
float-SNN only; ``cuba`` starts at v=0 and has no start step, so it drops every v(0) change and
the clamping (biases still export). Calibrated weights export like any others.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from loihi_conv.base import devices
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.neurons import NEURON_MODELS, channel_view, has_count_curve
from loihi_conv.snn.simulate import levels, simulate

Tensor = torch.Tensor


def feeding_synapse(graph: ir.Graph, neuron: ir.Neuron) -> ir.Conv2d | ir.Linear:
    """The synapse whose bias is the neuron's constant input current: its direct input, or the
    first synapse into an ``Add`` that feeds it (a bias on one branch shifts the sum)."""
    src = graph[neuron.inputs[0]]
    if isinstance(src, ir.SYNAPSES):
        return src
    for name in getattr(src, "inputs", ()) if isinstance(src, ir.Add) else ():
        if isinstance(graph[name], ir.SYNAPSES):
            return graph[name]
    raise LoihiConvError(f"neuron {neuron.name} is fed by {type(src).__name__} {src.name}, not by a synapse, "
                         "so its bias cannot be adjusted",
                         "put the ReLU right after a Conv2d/Linear (or an Add of one) in the model")


def add_bias(graph: ir.Graph, neuron: ir.Neuron, delta: Tensor) -> None:
    """In place: add the (C,) current ``delta`` (ANN units) to the neuron's feeding synapse bias."""
    syn = feeding_synapse(graph, neuron)
    bias = syn.bias if syn.bias is not None else torch.zeros(syn.weight.shape[0])
    graph.replace(syn.name, ir.clone_node(syn, bias=bias + delta.to(bias.dtype)))


def clip_round_bias(snn: ir.Graph, T: int) -> ir.Graph:
    """Calibration paper §4.3, after eq. (17): adding ``Vth/(2T)`` to the bias turns the IF
    neuron's ClipFloor (eq. 10) into ClipRound (eq. 17) for a readout window T -- the
    "unbiased quantization" of the RetinaNet paper done through the bias instead of v(0)=Vth/2."""
    snn = snn.copy()
    for n in snn.of_type(ir.Neuron):
        add_bias(snn, n, n.threshold / (2 * T))
    return snn


def clamp(snn: ir.Graph, d: int) -> ir.Graph:
    """Voltage clamping (Rueckauer et al. 2016, as used by the RetinaNet paper §II): layer l is
    held at its initial potential -- no integration, no spikes -- for its first ``N(l) = d * l``
    steps, l = synapse hops from the input (first hidden layer l = 1). Stored as
    ``params["clamp_steps"]``, honoured by the float simulator for every neuron model and by
    the if-soft target (``qir.SoftIF.clamp_steps``)."""
    snn = snn.copy()
    lv = levels(snn)
    for n in snn.of_type(ir.Neuron):
        snn.replace(n.name, ir.clone_node(n, params={**n.params, "clamp_steps": int(d) * lv[n.name]}))
    return snn


# ---- layer-wise calibration ------------------------------------------------------------------
# Every calibration of Neuron ``name`` simulates only the sub-network it depends on
# (``upstream``), for as many steps as the whole network runs for T: same spikes, less work.
def upstream(graph: ir.Graph, name: str, tap: str | None = None) -> ir.Graph:
    """The sub-network node ``name`` depends on (its ancestors and itself, in graph order) with
    output ``name``. With ``tap``, the output is a new Flatten node of that name reading ``name``
    one synapse hop later, as a synapse reads it (delayed if ``name`` is a source): the
    simulator's output accumulator then sums, over the steps run, exactly what a synapse fed by
    ``name`` receives, flattened to (N, prod(shape)). Nodes are shallow copies; meta is kept but
    for the readout, which must be that potential accumulator (``Recipe.output`` "potential")."""
    keep, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n not in keep:
            keep.add(n)
            todo.extend(graph[n].inputs)
    nodes = {n.name: copy.copy(n) for n in graph if n.name in keep}
    if tap is not None:
        nodes[tap] = ir.Flatten(tap, (name,), (math.prod(graph[name].shape),))
    recipe = {**(graph.meta.get("recipe") or {}), "output": "potential"}
    return ir.Graph(nodes, tap or name, {**graph.meta, "recipe": recipe})


def _sub_T(graph: ir.Graph, level_of: str, T: int, delay: int) -> int:
    """Readout window for a sub-network whose depth is the level of ``level_of`` such that it
    runs the steps the whole graph runs for T: ``T + (L - level) * delay``."""
    lv = levels(graph)
    return T + (lv[graph.output] - lv[level_of]) * delay


def _ann_activation(ann: ir.Graph, x: Tensor, name: str, batch_size: int = 256) -> Tensor:
    """ANN output of node ``name`` on x (N, *input shape), in batches (only it is kept)."""
    sub = upstream(ann, name)
    return torch.cat([ops.forward(sub, xb) for xb in x.split(batch_size)])


def layer_errors(snn: ir.Graph, ann: ir.Graph, x: Tensor, T: int, delay: int, name: str,
                 device: "str | torch.device | None" = None) -> tuple[Tensor, int]:
    """Conversion error ``e = x_ANN - s_SNN`` of Neuron ``name`` on inputs x, (N, *neuron shape),
    with ``s_SNN`` = spike count * threshold / window (the window: the steps on which the
    population received input, T without delay); also returns that window."""
    T_sub = _sub_T(snn, name, T, delay)
    res = simulate(upstream(snn, name), x, [T_sub], delay=delay, record="neuron", device=device)
    return _ann_activation(ann, x, name) - res.activations(T_sub)[name], res.window(T_sub, name)


def _reduce_channel(e: Tensor) -> Tensor:
    """Calibration paper eq. (19): per-channel mean over the batch and spatial positions, (C,)."""
    return e.transpose(0, 1).reshape(e.shape[1], -1).mean(dim=1)


def _lcp(snn: ir.Graph, node: ir.Neuron, e: Tensor, window: int, granularity: str) -> None:
    """Calibration paper eq. (20), LCP: ``b_c := b_c + mu_c(e)``."""
    add_bias(snn, node, _reduce_channel(e))


def _potential(snn: ir.Graph, node: ir.Neuron, e: Tensor, window: int, granularity: str) -> None:
    """Calibration paper eq. (22), ACP potential calibration: ``v(0) := T * e`` (T = the
    population's input window). granularity "neuron": per neuron, batch-mean e (the paper:
    "does not need the spatial mean"), in ``params["v0"]``; "channel": per-channel mean folded
    into ``v_init`` (a fraction of the threshold), exportable to if-soft."""
    if granularity == "neuron":
        v0 = window * e.mean(dim=0)
        old = node.params.get("v0")
        new = ir.clone_node(node, params={**node.params, "v0": v0 if old is None else old + v0})
    else:
        v_init = node.v_init if node.v_init is not None else torch.zeros_like(node.threshold)
        new = ir.clone_node(node, v_init=v_init + window * _reduce_channel(e) / node.threshold)
    snn.replace(node.name, new)


CALIBRATIONS: dict[str, Callable[..., None]] = {"lcp": _lcp, "acp": _potential}


# ---- ACP weights calibration -------------------------------------------------------------------
@dataclass(frozen=True)
class WeightCalibration:
    """Optimiser settings of the weights calibration (calibration paper §4.4 eq. 23, §5.1).

    The paper: SGD, momentum 0.9, lr 1e-5, cosine decay, 5000 iterations per layer, 1024
    images; the authors' code: Adam (lr 1e-5..4e-5), batches of 32. Adam is used here (its
    step does not depend on the loss scale, which differs from layer to layer)."""

    iterations: int = 300
    lr: float = 3e-4
    batch_size: int = 32
    seed: int = 0


@dataclass
class LayerCache:
    """What the weights calibration of one Neuron fits, cached once from simulations.

    ``inputs``: the feeding synapse's input averaged over the ``steps`` the network runs
    (N, *synapse input shape); ``target``: the ANN activation, ReLU output (N, *neuron shape);
    ``rest``: charge reaching the neuron that the synapse's weights do not set (the initial
    potential v(0) plus the other inputs of an Add), (N or 1, *neuron shape); ``window``: steps on
    which the neuron receives input (the rate divisor)."""

    inputs: Tensor
    target: Tensor
    rest: Tensor
    steps: int
    window: int


def _initial_potential(node: ir.Neuron) -> Tensor:
    """v(0) in ANN units, (1, C, 1, ...) or (1, *shape) with a per-neuron ``params["v0"]``."""
    shape = (1,) + tuple(node.shape)
    v_init = node.v_init if node.v_init is not None else torch.zeros_like(node.threshold)
    v0 = channel_view(v_init * node.threshold, shape).float()
    if node.params.get("v0") is not None:
        v0 = v0 + torch.as_tensor(node.params["v0"]).float().unsqueeze(0)
    return v0


def cache_layer(snn: ir.Graph, ann: ir.Graph, x: Tensor, T: int, delay: int, name: str,
                batch_size: int = 256, device: "str | torch.device | None" = None) -> LayerCache:
    """Calibration paper §4.4 (WC): simulate the (already partly calibrated) SNN up to Neuron
    ``name`` on x (N, *input shape) for T and store the mean input its synapse receives, the
    ANN target and the charge the weights do not set (``LayerCache``)."""
    node = snn[name]
    syn = feeding_synapse(snn, node)
    lv = levels(snn)
    steps = T + lv[snn.output] * delay
    T_sub = _sub_T(snn, syn.name, T, delay)
    run = simulate(upstream(snn, syn.inputs[0], tap="__weights_input__"), x, [T_sub], delay=delay,
                   record=False, batch_size=batch_size, device=device)
    inputs = run.output[T_sub].reshape((x.shape[0],) + tuple(snn[syn.inputs[0]].shape)) / steps
    rest = _initial_potential(node)
    if node.inputs[0] != syn.name:  # fed by an Add: the other branches' charge is fixed here
        T_add = _sub_T(snn, node.inputs[0], T, delay)
        run = simulate(upstream(snn, node.inputs[0], tap="__weights_current__"), x, [T_add], delay=delay,
                       record=False, batch_size=batch_size, device=device)
        total = run.output[T_add].reshape((x.shape[0],) + tuple(node.shape))
        rest = rest + total - steps * torch.cat([ops.apply(syn, b) for b in inputs.split(batch_size)])
    return LayerCache(inputs, _ann_activation(ann, x, name, batch_size), rest, steps,
                      steps - lv[name] * delay)


def _check_soft_reset(node: ir.Neuron) -> None:
    if not has_count_curve(node.model, node.params):
        raise LoihiConvError(f"weights calibration fits the neuron's constant-input spike count, which "
                             f"{node.name} ({node.model!r} {node.params or ''}) has no closed form for",
                             "convert with neuron_model 'if-soft', 'if-zero', 'if-burst' or 'if-multibit' "
                             "with s_max <= 2")


def layer_rates(syn: ir.Conv2d | ir.Linear, node: ir.Neuron, inputs: Tensor, rest: Tensor, steps: int,
                window: int) -> Tensor:
    """Calibration paper eq. (21), differentiable in ``syn.weight`` through eq. (24): the
    neuron's output in ANN units for constant input, ``theta/window * count(q)`` with the
    charge ``q = (steps * syn(inputs) + rest) / theta`` and the model's ``count_curve`` --
    ClipFloor of the charge for the soft-reset models (ClipRound when the ClipRound bias or
    v(0) = theta/2 is in it), the reset-to-zero staircase for if-zero."""
    theta = channel_view(node.threshold.float(), (1,) + tuple(node.shape))
    charge = steps * ops.apply(syn, inputs) + rest
    return NEURON_MODELS[node.model].count_curve(node, charge / theta, window) * theta / window


def calibrate_weights(snn: ir.Graph, node: ir.Neuron, cache: LayerCache, opt: WeightCalibration,
                      device: "str | torch.device | None" = None) -> tuple[float, float]:
    """In place: calibration paper eq. (23), ``min_W ||x_ANN - ClipRound(W s)||^2`` over the
    cached layer inputs by Adam with cosine learning-rate decay (§5.1), mini-batches of
    ``opt.batch_size``. Only the feeding synapse's weight changes. Returns the MSE over the whole
    cache before and after; weights that did not lower it are discarded (the STE objective is
    noisy, and a calibration must never make the layer worse on its own data). ``device``: where
    the fit runs (``base.devices``; the calibrated weight comes back to the graph's device)."""
    _check_soft_reset(node)
    dev = devices.resolve(device)
    syn = feeding_synapse(snn, node)
    weight = syn.weight.detach().clone().float().to(dev).requires_grad_(True)
    trial = ir.clone_node(syn, weight=weight, bias=None if syn.bias is None else syn.bias.to(dev))
    if dev.type != "cpu":
        node = ir.clone_node(node, threshold=node.threshold.to(dev))
        cache = LayerCache(cache.inputs.to(dev), cache.target.to(dev), cache.rest.to(dev), cache.steps, cache.window)
    n = cache.inputs.shape[0]

    def loss(idx: Tensor | slice) -> Tensor:
        rest = cache.rest[idx] if cache.rest.shape[0] == n else cache.rest
        out = layer_rates(trial, node, cache.inputs[idx], rest, cache.steps, cache.window)
        return F.mse_loss(out, cache.target[idx])

    with torch.no_grad():
        before = float(loss(slice(None)))
    adam = torch.optim.Adam([weight], lr=opt.lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=opt.iterations)
    gen = torch.Generator().manual_seed(opt.seed)
    for _ in range(opt.iterations):
        adam.zero_grad(set_to_none=True)
        loss(torch.randperm(n, generator=gen)[:opt.batch_size].to(dev)).backward()
        adam.step()
        decay.step()
    with torch.no_grad():
        after = float(loss(slice(None)))
    if after < before:
        snn.replace(syn.name, ir.clone_node(syn, weight=weight.detach().to(syn.weight.device, syn.weight.dtype)))
    return before, min(before, after)


def calibrate(snn: ir.Graph, ann: ir.Graph, x: Tensor, T: int, methods: tuple[str, ...] = ("lcp",),
              delay: int = 1, granularity: str = "neuron", weights: WeightCalibration | None = None,
              x_weights: Tensor | None = None, device: "str | torch.device | None" = None) -> ir.Graph:
    """Calibration paper Algorithm 2, layer by layer from the input: for every Neuron, simulate
    the (already partly calibrated) SNN on the batch x (N, *input shape) for T, compute
    ``e = x_ANN - s_SNN`` and apply each of ``methods`` ("lcp": bias, eq. 20; "acp": potential,
    eq. 22), re-measuring e before each; then, with ``weights``, calibrate the weights feeding
    it (eq. 23) on ``x_weights`` (default x). ``ann`` is the float ANN graph (ReLUs) the SNN
    came from. ``device``: where the simulations and the weight fits run ("cpu" default, "cuda";
    ``base.devices``); the returned graph stays on the CPU."""
    device = devices.resolve(device)
    unknown = [m for m in methods if m not in CALIBRATIONS]
    if unknown:
        raise LoihiConvError(f"unknown calibration(s) {unknown}", f"use: {', '.join(CALIBRATIONS)}")
    snn = snn.copy()
    for node in snn.of_type(ir.Neuron) if weights is not None else ():
        _check_soft_reset(node)  # before any long simulation
    for name in [n.name for n in snn.of_type(ir.Neuron)]:
        for m in methods:
            e, window = layer_errors(snn, ann, x, T, delay, name, device=device)
            CALIBRATIONS[m](snn, snn[name], e, window, granularity)
        if weights is not None:
            cache = cache_layer(snn, ann, x if x_weights is None else x_weights, T, delay, name, device=device)
            calibrate_weights(snn, snn[name], cache, weights, device=device)
    return snn
