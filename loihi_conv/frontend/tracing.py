"""Trace a PyTorch model with torch.fx into the float IR (``loihi_conv.frontend.ir``).

Layouts at the border: the model's input is (N, *input_shape), PyTorch order (N, C, H, W) or
(N, F); ``input_shape`` excludes N. IR tensors keep PyTorch layouts (see ``ir``): conv weights
(Co, Ci/groups, kH, kW), linear weights (Nout, Nin), per-channel vectors (C,).

How it works: ``torch.fx`` records the model's forward as a graph of fx nodes; the model is run
once on a zero input (fx ``Interpreter``) to learn every node's shape; each fx node is then mapped
to an IR node by a converter looked up in a registry (by module type, function or method name).
A converter returns an ``ir.Node``, the IR name of an existing node (the fx node is an alias:
Dropout, Identity, ...) or a ``_Size`` (a batch size read by ``x.size(0)``, only good for
``view``). Every unsupported node is collected and reported together in one error.
"""
from __future__ import annotations

import builtins
import inspect
import math
import operator
import os
import re
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Callable, Iterator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops

__all__ = ["trace", "MODULES", "FUNCTIONS", "METHODS"]

_TORCH_DIR = os.path.dirname(torch.__file__)
# Frames from torch and from the tracing code itself are not the user's source line.
_OWN_FILES = {os.path.abspath(__file__), os.path.join(os.path.dirname(os.path.abspath(__file__)), "fold.py")}


# --------------------------------------------------------------------------- conversion state
class _Unsupported(Exception):
    """Raised by a converter: this node (with these arguments) has no IR equivalent."""

    def __init__(self, reason: str | None = None):
        super().__init__(reason)
        self.reason = reason


class _NoShape(Exception):
    """The shape run failed before this node; shape-dependent checks are skipped."""


@dataclass(frozen=True)
class _Size:
    """The value of ``x.size()`` / ``x.shape`` (``dim=None``) or ``x.size(dim)``."""
    dim: int | None


@dataclass
class _Ctx:
    gm: fx.GraphModule
    shapes: dict[str, tuple[int, ...]]  # fx node name -> output shape with batch (N=1)
    input_shape: tuple[int, ...]
    env: dict[str, Any] = field(default_factory=dict)  # fx node name -> IR name | _Size
    has_input: bool = False

    def module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def name(self, node: fx.Node) -> str:
        return re.sub(r"\W", "_", node.name)

    def value(self, arg: Any) -> Any:
        """What an argument is: an IR name, a _Size, or the Python constant itself."""
        return self.env.get(arg.name) if isinstance(arg, fx.Node) else arg

    def tensor(self, arg: Any) -> str:
        value = self.value(arg)
        if not isinstance(value, str):
            raise _Unsupported(f"an argument is a constant ({value!r}), not a tensor of the network")
        return value

    def shape(self, arg: fx.Node) -> tuple[int, ...]:
        if arg.name not in self.shapes:
            raise _NoShape
        return self.shapes[arg.name]


def _bind(stub: Callable, node: fx.Node) -> dict[str, Any]:
    """Bind a node's args/kwargs to the parameter names of ``stub`` (defaults applied)."""
    try:
        bound = inspect.signature(stub).bind(*node.args, **node.kwargs)
    except TypeError as e:
        raise _Unsupported(f"unexpected arguments ({e})") from None
    bound.apply_defaults()
    return bound.arguments


def _copy(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone().float().cpu()


# Signatures of the traced callables (many are C builtins without a Python signature).
def _sig_one(input, *_, **__): ...
def _sig_binop(a, b): ...
def _sig_add(input, other, *, alpha=1): ...
def _sig_flatten(input, start_dim=0, end_dim=-1): ...
def _sig_view(input, *shape): ...
def _sig_reshape(input, shape): ...
def _sig_size(input, dim=None): ...
def _sig_avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                  count_include_pad=True, divisor_override=None): ...
def _sig_max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                  return_indices=False): ...
def _sig_adaptive(input, output_size): ...
def _sig_cat(tensors, dim=0, *, out=None): ...
def _sig_clamp(input, min=None, max=None): ...
def _sig_hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...
def _sig_relu6(input, inplace=False): ...
def _sig_interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                     recompute_scale_factor=None, antialias=False): ...
def _sig_mean(input, dim=None, keepdim=False, *, dtype=None): ...


def _first(cx: _Ctx, node: fx.Node) -> str:
    return cx.tensor(_bind(_sig_one, node)["input"])


# --------------------------------------------------------------------------- shared converters
def _relu(cx: _Ctx, node: fx.Node) -> ir.Node:
    return ir.ReLU(cx.name(node), (_first(cx, node),))


def _alias(cx: _Ctx, node: fx.Node) -> str:
    """Dropout / Identity / contiguous: no IR node, users read the input directly."""
    return _first(cx, node)


def _add(cx: _Ctx, node: fx.Node, a: Any, b: Any, alpha: Any = 1) -> ir.Node:
    if alpha != 1:
        raise _Unsupported(f"alpha={alpha!r}; only plain x + y residual adds")
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        raise _Unsupported("adds a constant; only tensor + tensor residual adds (fold constants into a bias)")
    ins = (cx.tensor(a), cx.tensor(b))
    sa, sb = cx.shapes.get(a.name), cx.shapes.get(b.name)
    if sa and sb and sa != sb:
        raise _Unsupported(f"broadcasting add of shapes {sa[1:]} and {sb[1:]}; both branches must have the same shape")
    return ir.Add(cx.name(node), ins)


def _flatten(cx: _Ctx, node: fx.Node, x: fx.Node, start_dim: int, end_dim: int) -> ir.Node:
    rank = len(cx.shape(x))
    if start_dim != 1 or end_dim not in (-1, rank - 1):
        raise _Unsupported(f"flatten(start_dim={start_dim}, end_dim={end_dim}); only flatten(x, 1) "
                           "(keep the batch dim, flatten all others)")
    return ir.Flatten(cx.name(node), (cx.tensor(x),))


def _view(cx: _Ctx, node: fx.Node, x: fx.Node, shape: tuple) -> ir.Node:
    """view/reshape is supported only as a flatten to (N, -1)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dims = [cx.value(d) for d in shape]
    flat = math.prod(cx.shape(x)[1:])
    if not (len(dims) == 2 and dims != [-1, -1]
            and any(dims[0] == ok for ok in (_Size(0), -1)) and any(dims[1] == ok for ok in (-1, flat))):
        raise _Unsupported("only a flatten to (N, -1) is supported, e.g. x.view(x.size(0), -1)")
    return ir.Flatten(cx.name(node), (cx.tensor(x),))


def _avg_pool(cx: _Ctx, node: fx.Node, x: fx.Node, kernel_size, stride=None, padding=0,
              ceil_mode=False, count_include_pad=True, divisor_override=None) -> ir.Node:
    if divisor_override is not None:
        raise _Unsupported(f"divisor_override={divisor_override}")
    stride = kernel_size if stride is None or stride == [] else stride
    return ir.AvgPool2d(cx.name(node), (cx.tensor(x),), kernel_size=_pair(kernel_size), stride=_pair(stride),
                        padding=_pair(padding), ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad))


def _max_pool(cx: _Ctx, node: fx.Node, x: fx.Node, kernel_size, stride=None, padding=0, dilation=1,
              ceil_mode=False, return_indices=False) -> ir.Node:
    if _pair(dilation) != (1, 1) or return_indices:
        raise _Unsupported("dilation/return_indices; only plain max pooling")
    stride = kernel_size if stride is None or stride == [] else stride
    return ir.MaxPool2d(cx.name(node), (cx.tensor(x),), kernel_size=_pair(kernel_size), stride=_pair(stride),
                        padding=_pair(padding), ceil_mode=bool(ceil_mode))


def _adaptive_avg_pool(cx: _Ctx, node: fx.Node, x: fx.Node, output_size) -> ir.Node:
    """An adaptive average pool is a fixed AvgPool2d when the input size is a multiple of the output;
    otherwise (e.g. a 1x1 map replicated to 7x7) it stays an adaptive pool, a linear map."""
    h, w = cx.shape(x)[2:]
    oh, ow = (o if o is not None else i for o, i in zip(_pair(output_size), (h, w)))
    if h % oh or w % ow:
        return ir.AdaptiveAvgPool2d(cx.name(node), (cx.tensor(x),), output_size=(int(oh), int(ow)))
    k = (h // oh, w // ow)
    return ir.AvgPool2d(cx.name(node), (cx.tensor(x),), kernel_size=k, stride=k)


def _cat(cx: _Ctx, node: fx.Node, tensors, dim=0) -> ir.Node:
    """torch.cat on the channel dim (1, or its negative spelling) of two or more tensors."""
    if not isinstance(tensors, (tuple, list)) or not all(isinstance(t, fx.Node) for t in tensors):
        raise _Unsupported("concatenates something other than a list of tensors")
    rank = len(cx.shape(tensors[0]))
    if not isinstance(dim, int) or dim % rank != 1:
        raise _Unsupported(f"cat on dim {dim}; only channel concatenation (dim=1) joins branches")
    names = tuple(cx.tensor(t) for t in tensors)
    return ir.Concat(cx.name(node), names) if len(names) > 1 else names[0]


def _clip(cx: _Ctx, node: fx.Node, x: fx.Node, lo, hi) -> ir.Node:
    """clamp/hardtanh with lower bound 0: a ReLU, clipped at ``hi`` when given."""
    if not (isinstance(lo, (int, float)) and lo == 0 and (hi is None or isinstance(hi, (int, float)))):
        raise _Unsupported(f"clip to [{lo}, {hi}]; only [0, a] (a clipped ReLU: ReLU6, hardtanh(x, 0, a))")
    if hi is not None and hi <= 0:
        raise _Unsupported(f"clip to [0, {hi}] is constant")
    name, src = cx.name(node), (cx.tensor(x),)
    return ir.ReLU(name, src) if hi is None else ir.ClippedReLU(name, src, max_value=float(hi))


def _upsample(cx: _Ctx, node: fx.Node, x: fx.Node, mode: str) -> ir.Node:
    """Nearest upsampling by integer factors (read off the traced shapes)."""
    if mode not in ("nearest", "nearest-exact"):
        raise _Unsupported(f"mode={mode!r}; only nearest upsampling (by integer factors)")
    (h, w), (oh, ow) = cx.shape(x)[2:], cx.shape(node)[2:]
    if oh % h or ow % w:
        raise _Unsupported(f"upsamples {h}x{w} to {oh}x{ow}, not by integer factors")
    return ir.Upsample(cx.name(node), (cx.tensor(x),), scale=(oh // h, ow // w))


def _mean(cx: _Ctx, node: fx.Node, x: fx.Node, dim, keepdim=False) -> list[ir.Node]:
    """x.mean((2, 3)): a global average pool (plus a flatten without keepdim)."""
    shape = cx.shape(x)
    dims = {int(d) % len(shape) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
    if len(shape) != 4 or dims != {2, 3}:
        raise _Unsupported(f"mean over dims {dim}; only the spatial global average x.mean((2, 3))")
    pool = ir.AvgPool2d(cx.name(node) + ("" if keepdim else "_pool"), (cx.tensor(x),),
                        kernel_size=tuple(shape[2:]), stride=tuple(shape[2:]))
    return [pool] if keepdim else [pool, ir.Flatten(cx.name(node), (pool.name,))]


# --------------------------------------------------------------------------- call_module registry
def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if not isinstance(m.padding, str):
        return _pair(m.padding)
    if m.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]  # padding="same"
    if any(t % 2 for t in total):
        raise _Unsupported("padding='same' with an even kernel pads asymmetrically; pad explicitly")
    return (total[0] // 2, total[1] // 2)


def _m_conv(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r}; only zero padding")
    return ir.Conv2d(cx.name(node), (_first(cx, node),), weight=_copy(m.weight), bias=_copy(m.bias),
                     stride=_pair(m.stride), padding=_conv_padding(m), dilation=_pair(m.dilation),
                     groups=m.groups)


def _m_linear(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    x = _bind(_sig_one, node)["input"]
    if len(cx.shape(x)) != 2:
        raise _Unsupported(f"applied to a {cx.shape(x)[1:]} tensor; flatten to (N, features) first")
    return ir.Linear(cx.name(node), (cx.tensor(x),), weight=_copy(m.weight), bias=_copy(m.bias))


def _m_batchnorm(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    if m.running_mean is None:
        raise _Unsupported("track_running_stats=False: no running statistics to fold")
    c = m.num_features
    return ir.BatchNorm(cx.name(node), (_first(cx, node),),
                        weight=_copy(m.weight) if m.affine else torch.ones(c),
                        bias=_copy(m.bias) if m.affine else torch.zeros(c),
                        running_mean=_copy(m.running_mean), running_var=_copy(m.running_var),
                        eps=float(m.eps))


def _m_avg_pool(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    return _avg_pool(cx, node, _bind(_sig_one, node)["input"], m.kernel_size, m.stride, m.padding,
                     m.ceil_mode, m.count_include_pad, m.divisor_override)


def _m_max_pool(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    return _max_pool(cx, node, _bind(_sig_one, node)["input"], m.kernel_size, m.stride, m.padding,
                     m.dilation, m.ceil_mode, m.return_indices)


def _m_adaptive_avg_pool(cx: _Ctx, node: fx.Node) -> ir.Node:
    return _adaptive_avg_pool(cx, node, _bind(_sig_one, node)["input"], cx.module(node).output_size)


def _m_flatten(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    return _flatten(cx, node, _bind(_sig_one, node)["input"], m.start_dim, m.end_dim)


def _m_hardtanh(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)  # nn.ReLU6 is a Hardtanh(0, 6)
    return _clip(cx, node, _bind(_sig_one, node)["input"], m.min_val, m.max_val)


def _m_upsample(cx: _Ctx, node: fx.Node) -> ir.Node:
    return _upsample(cx, node, _bind(_sig_one, node)["input"], cx.module(node).mode)


def _m_conv_transpose(cx: _Ctx, node: fx.Node) -> ir.Node:
    m = cx.module(node)
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r}; only zero padding")
    return ir.ConvTranspose2d(cx.name(node), (_first(cx, node),), weight=_copy(m.weight), bias=_copy(m.bias),
                              stride=_pair(m.stride), padding=_pair(m.padding),
                              output_padding=_pair(m.output_padding), dilation=_pair(m.dilation),
                              groups=m.groups)


MODULES: dict[type[nn.Module], Callable] = {
    nn.Conv2d: _m_conv,
    nn.Linear: _m_linear,
    nn.BatchNorm1d: _m_batchnorm,
    nn.BatchNorm2d: _m_batchnorm,
    nn.ReLU: _relu,
    nn.AvgPool2d: _m_avg_pool,
    nn.AdaptiveAvgPool2d: _m_adaptive_avg_pool,
    nn.MaxPool2d: _m_max_pool,
    nn.Flatten: _m_flatten,
    nn.Dropout: _alias,
    nn.Dropout2d: _alias,
    nn.Identity: _alias,
    nn.ReLU6: _m_hardtanh,
    nn.Hardtanh: _m_hardtanh,
    nn.Upsample: _m_upsample,
    nn.UpsamplingNearest2d: _m_upsample,
    nn.ConvTranspose2d: _m_conv_transpose,
}


# --------------------------------------------------------------------------- call_function registry
def _f_add(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_add, node)
    return _add(cx, node, a["input"], a["other"], a["alpha"])


def _f_binop_add(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_binop, node)
    return _add(cx, node, a["a"], a["b"])


def _f_flatten(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_flatten, node)
    return _flatten(cx, node, a["input"], a["start_dim"], a["end_dim"])


def _f_reshape(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_reshape, node)
    return _view(cx, node, a["input"], (a["shape"],))


def _f_avg_pool(cx: _Ctx, node: fx.Node) -> ir.Node:
    return _avg_pool(cx, node, *_bind(_sig_avg_pool, node).values())


def _f_max_pool(cx: _Ctx, node: fx.Node) -> ir.Node:
    return _max_pool(cx, node, *_bind(_sig_max_pool, node).values())


def _f_adaptive_avg_pool(cx: _Ctx, node: fx.Node) -> ir.Node:
    return _adaptive_avg_pool(cx, node, *_bind(_sig_adaptive, node).values())


def _f_getitem(cx: _Ctx, node: fx.Node) -> _Size:
    a = _bind(_sig_binop, node)
    if cx.value(a["a"]) != _Size(None) or not isinstance(a["b"], int):
        raise _Unsupported("indexing/slicing; only x.size()[0] / x.shape[0] for a view")
    return _Size(a["b"])


def _f_getattr(cx: _Ctx, node: fx.Node) -> _Size:
    a = _bind(_sig_binop, node)
    if a["b"] != "shape":
        raise _Unsupported(f"reads tensor attribute {a['b']!r}; only x.shape[0] for a view")
    return _Size(None)


def _f_cat(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_cat, node)
    return _cat(cx, node, a["tensors"], a["dim"])


def _f_clamp(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_clamp, node)
    return _clip(cx, node, a["input"], a["min"], a["max"])


def _f_hardtanh(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_hardtanh, node)
    return _clip(cx, node, a["input"], a["min_val"], a["max_val"])


def _f_relu6(cx: _Ctx, node: fx.Node) -> ir.Node:
    return _clip(cx, node, _bind(_sig_relu6, node)["input"], 0, 6.0)


def _f_interpolate(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_interpolate, node)
    return _upsample(cx, node, a["input"], a["mode"])


def _f_mean(cx: _Ctx, node: fx.Node) -> list[ir.Node]:
    a = _bind(_sig_mean, node)
    if a["dim"] is None:
        raise _Unsupported("mean over all dims; only the spatial global average x.mean((2, 3))")
    return _mean(cx, node, a["input"], a["dim"], a["keepdim"])


FUNCTIONS: dict[Callable, Callable] = {
    F.relu: _relu,
    F.relu_: _relu,
    torch.relu: _relu,
    torch.relu_: _relu,
    operator.add: _f_binop_add,
    operator.iadd: _f_binop_add,
    torch.add: _f_add,
    torch.flatten: _f_flatten,
    torch.reshape: _f_reshape,
    F.avg_pool2d: _f_avg_pool,
    F.max_pool2d: _f_max_pool,
    F.adaptive_avg_pool2d: _f_adaptive_avg_pool,
    F.dropout: _alias,
    F.dropout2d: _alias,
    operator.getitem: _f_getitem,
    builtins.getattr: _f_getattr,
    torch.cat: _f_cat,
    torch.concat: _f_cat,
    torch.concatenate: _f_cat,
    torch.clamp: _f_clamp,
    torch.clip: _f_clamp,
    F.hardtanh: _f_hardtanh,
    F.relu6: _f_relu6,
    F.interpolate: _f_interpolate,
    torch.mean: _f_mean,
}


# --------------------------------------------------------------------------- call_method registry
def _t_add(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_add, node)
    return _add(cx, node, a["input"], a["other"], a["alpha"])


def _t_flatten(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_flatten, node)
    return _flatten(cx, node, a["input"], a["start_dim"], a["end_dim"])


def _t_view(cx: _Ctx, node: fx.Node) -> ir.Node:
    a = _bind(_sig_view, node)
    return _view(cx, node, a["input"], a["shape"])


def _t_size(cx: _Ctx, node: fx.Node) -> _Size:
    return _Size(_bind(_sig_size, node)["dim"])


METHODS: dict[str, Callable] = {
    "relu": _relu,
    "relu_": _relu,
    "add": _t_add,
    "add_": _t_add,
    "flatten": _t_flatten,
    "view": _t_view,
    "reshape": _t_view,
    "size": _t_size,
    "contiguous": _alias,
    "clamp": _f_clamp,
    "clamp_": _f_clamp,
    "clip": _f_clamp,
    "clip_": _f_clamp,
    "mean": _f_mean,
}


# --------------------------------------------------------------------------- placeholder / get_attr
def _placeholder(cx: _Ctx, node: fx.Node) -> ir.Node | None:
    if cx.has_input:
        if not node.users:
            return None  # an unused optional forward argument
        raise _Unsupported("a second model input; only single-input models are supported")
    cx.has_input = True
    return ir.Input(cx.name(node), (), shape=cx.input_shape)


def _get_attr(cx: _Ctx, node: fx.Node) -> None:
    raise _Unsupported("a parameter/buffer used directly in forward; use nn.Conv2d/nn.Linear/nn.BatchNorm modules")


# Which converter handles a node, per fx opcode.
_LOOKUP: dict[str, Callable[[_Ctx, fx.Node], Callable | None]] = {
    "placeholder": lambda cx, n: _placeholder,
    "get_attr": lambda cx, n: _get_attr,
    "call_module": lambda cx, n: MODULES.get(type(cx.module(n))),
    "call_function": lambda cx, n: FUNCTIONS.get(n.target),
    "call_method": lambda cx, n: METHODS.get(n.target),
}


# --------------------------------------------------------------------------- error reporting
_ACTIVATION = ("use ReLU or a clipped ReLU (ReLU6, hardtanh(x, 0, a)): only those map onto integrate-and-fire "
               "neurons; retrain")
_SOFTMAX = "drop it: the classifier must output logits (argmax is the same)"
_NORM = "use BatchNorm directly after a Conv2d/Linear (it is folded into the weights) and retrain"
_HINTS: dict[Any, str] = {
    **dict.fromkeys([nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Hardsigmoid,
                     nn.PReLU, nn.Mish, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, F.gelu, F.silu,
                     F.leaky_relu, F.elu, F.hardswish, F.hardsigmoid, "sigmoid", "tanh"], _ACTIVATION),
    **dict.fromkeys([nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
                     "softmax", "log_softmax"], _SOFTMAX),
    **dict.fromkeys([nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm, F.layer_norm],
                    _NORM),
    **dict.fromkeys([operator.mul, torch.mul, "mul", operator.matmul, torch.matmul, torch.bmm, "matmul",
                     nn.MultiheadAttention, F.scaled_dot_product_attention],
                    "products of activations (gating, attention) have no spiking equivalent here; "
                    "only additions and channel concatenations join branches"),
}

_SUPPORTED = ("nn." + ", nn.".join(c.__name__ for c in MODULES)
              + "; F.relu/torch.relu/x.relu(), clamp(x, 0, a)/F.hardtanh(x, 0, a)/F.relu6 (clipped ReLU), "
              "x + y/torch.add (residual), torch.cat(xs, 1), torch.flatten(x, 1), x.view(x.size(0), -1), "
              "x.mean((2, 3)), F.avg_pool2d/max_pool2d/adaptive_avg_pool2d, F.interpolate (nearest, integer "
              "factors), F.dropout")


def _type_name(cls: type) -> str:
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else f"{cls.__module__}.{cls.__qualname__}"


def _fn_name(fn: Callable) -> str:
    mod = getattr(fn, "__module__", None) or "torch"
    mod = {"torch.nn.functional": "F", "_operator": "operator"}.get(mod, mod)
    return f"{mod}.{getattr(fn, '__name__', fn)}"


def _location(node: fx.Node) -> str:
    """'file:line' of the user's source line that created ``node`` (empty if unknown)."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.stack_trace or "")
    own = [i for i, (f, _) in enumerate(frames) if os.path.abspath(f) in _OWN_FILES]
    frames = frames[own[-1] + 1:] if own else frames  # only frames inside the traced forward
    user = [(f, line) for f, line in frames if not _internal(f)]
    return f"{_short(user[-1][0])}:{user[-1][1]}" if user and node.op != "placeholder" else ""


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_TORCH_DIR + os.sep) or path in _OWN_FILES


def _short(path: str) -> str:
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return path if rel.startswith("..") else rel


def _key(cx: _Ctx, node: fx.Node) -> Any:
    """What a node calls: module type, function or method name (registry/hint key)."""
    if node.op == "call_module":
        return type(cx.module(node))
    return node.target if node.op in ("call_function", "call_method") else node.op


def _what(cx: _Ctx, node: fx.Node) -> str:
    """Human name of what a node calls, e.g. nn.Sigmoid, torch.sigmoid, Tensor.sigmoid."""
    key = _key(cx, node)
    show = {"call_module": _type_name, "call_function": _fn_name, "call_method": "Tensor.{}".format}
    return show.get(node.op, str)(key)


def _describe(cx: _Ctx, node: fx.Node, reason: str | None = None) -> str:
    """Qualified name, what it calls and the source line, e.g. 'features.3' (nn.Sigmoid) at model.py:12."""
    if node.op == "call_module":
        label = node.target
    else:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        label = f"{stack[-1][0]}.{node.name}" if stack else node.name
    text = f"'{label}' ({_what(cx, node)}{': ' + reason if reason else ''})"
    loc = _location(node)
    return f"{text} at {loc}" if loc else text


# --------------------------------------------------------------------------- the steps
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode while tracing, restoring every submodule's flag (the user's model is not changed)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise LoihiConvError(f"input_shape {input_shape!r} is not (C, H, W) or (F,)",
                             "pass the shape of one sample without the batch dim, e.g. (1, 28, 28)")
    return shape


def _check_finite(model: nn.Module) -> None:
    bad = [f"'{name}' ({int(t.isnan().sum())} NaN, {int(t.isinf().sum())} Inf)"
           for name, t in chain(model.named_parameters(), model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise LoihiConvError(f"non-finite values in model tensors: {', '.join(bad)}",
                             "the checkpoint is corrupt or training diverged; load a good checkpoint or retrain")


class _Tracer(fx.Tracer):
    """Every module type registered in MODULES stays one call_module node: fx keeps only
    torch.nn's own modules whole and would trace into a registered custom one (e.g. qat.QReLU)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) in MODULES or super().is_leaf_module(m, module_qualified_name)


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    tracer.record_stack_traces = True  # source lines for error messages
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, ... from inside the user's forward
        frames = [f for f in traceback.extract_tb(e.__traceback__) if not _internal(f.filename)]
        where = f" at {_short(frames[-1].filename)}:{frames[-1].lineno} (`{frames[-1].line}`)" if frames else ""
        detail = (str(e).splitlines() or [""])[0]
        raise LoihiConvError(
            f"torch.fx cannot trace {type(model).__name__}{where}: {type(e).__name__}: {detail}",
            "remove data-dependent control flow (if/for/while on tensor values, len(x), x.item()) from "
            "forward, or pass a traceable wrapper module whose forward calls only supported layers") from e
    return fx.GraphModule(tracer.root, graph)


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph, remembering each tensor's shape and the node being run."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.extra_traceback = False  # keep torch's message short; we name the node ourselves
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(out.shape)
        return out


def _record_shapes(gm: fx.GraphModule, model: nn.Module, input_shape: tuple[int, ...]):
    """Shapes of every fx node for one zero sample, and (node, exception) if the run failed."""
    p = next((t for t in chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    x = torch.zeros((1,) + input_shape, dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else "cpu")
    rec = _ShapeRecorder(gm)
    try:
        with torch.no_grad():
            rec.run(x)
    except Exception as e:  # a shape mismatch surfaces as a RuntimeError deep inside torch
        return rec.shapes, (rec.current, e)
    return rec.shapes, None


def _is_inplace(cx: _Ctx, node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target.endswith("_")
    if node.op == "call_module":
        return bool(getattr(cx.module(node), "inplace", False))
    return node.op == "call_function" and (node.target in (operator.iadd, torch.relu_, F.relu_)
                                           or node.kwargs.get("inplace") is True)


def _mutation_hazards(cx: _Ctx) -> list[str]:
    """In-place ops whose input is read again later: the IR is functional, so they would differ."""
    order = {n: i for i, n in enumerate(cx.gm.graph.nodes)}
    out = []
    for node in cx.gm.graph.nodes:
        x = node.args[0] if node.args else None
        if (isinstance(x, fx.Node) and _is_inplace(cx, node) and _lookup(cx, node) not in (None, _alias)
                and any(order[u] > order[node] for u in x.users)):
            out.append(_describe(cx, node, f"in-place, and its input '{x.name}' is used again afterwards; "
                                           "use the returned value or a non-in-place op"))
    return out


def _lookup(cx: _Ctx, node: fx.Node) -> Callable | None:
    return _LOOKUP[node.op](cx, node)


@dataclass
class _Problem:
    """All unsupported nodes of one kind (what they call + why): reported as one line."""
    first: str  # the first one's description: name, what it calls, source line
    fix: str | None
    count: int = 1

    def line(self) -> str:
        times = f"{self.count} layers, first " if self.count > 1 else ""
        return f"{times}{self.first}" + (f"; fix: {self.fix}" if self.fix else "")


def _note(problems: dict, kind: Any, first: str, fix: str | None) -> None:
    if kind in problems:
        problems[kind].count += 1
    else:
        problems[kind] = _Problem(first, fix)


def _convert(cx: _Ctx) -> tuple[ir.Graph, dict[Any, _Problem], Any]:
    """Map every fx node to IR; returns the graph, the problems by kind and the output value."""
    nodes: dict[str, ir.Node] = {}
    problems: dict[Any, _Problem] = {}
    output = ""
    for node in cx.gm.graph.nodes:
        if node.op == "output":
            output = cx.value(node.args[0])  # an IR name, or a tuple/dict/constant
            continue
        converter = _lookup(cx, node)
        try:
            if converter is None:
                raise _Unsupported
            result = converter(cx, node)
        except _Unsupported as e:
            # a converter's reason already says what to change; an unknown op gets its kind's hint
            hint = None if converter else _HINTS.get(_key(cx, node), "remove it or rewrite it with the supported layers")
            _note(problems, (_what(cx, node), e.reason), _describe(cx, node, e.reason), hint)
            cx.env[node.name] = cx.name(node)  # keep going to report later nodes too
            continue
        except _NoShape:
            cx.env[node.name] = cx.name(node)
            continue
        for new in result if isinstance(result, list) else [result]:  # a list: several nodes, the last the value
            if isinstance(new, ir.Node):
                nodes[new.name] = new
                result = new.name
        cx.env[node.name] = result
    graph = ir.Graph(nodes, output if isinstance(output, str) else "", meta={})
    return graph, problems, output


def _unsupported_error(problems: dict[Any, _Problem]) -> LoihiConvError:
    """One line per kind of unsupported layer: how many, the first one, the fix."""
    lines = "".join(f"\n  - {p.line()}" for p in problems.values())
    total = sum(p.count for p in problems.values())
    return LoihiConvError(f"unsupported layers: {total} layer(s) of {len(problems)} kind(s):{lines}",
                          f"Supported: {_SUPPORTED}")


def _conv_expects(m: nn.Conv2d, given: tuple[int, ...]) -> tuple | None:
    return (m.in_channels, "H", "W") if len(given) != 3 or given[0] != m.in_channels else None


def _linear_expects(m: nn.Linear, given: tuple[int, ...]) -> tuple | None:
    return (m.in_features,) if math.prod(given) != m.in_features else None


# The input a model's first synapse implies, when ``given`` contradicts it (else None).
_EXPECTS: dict[type, Callable[[Any, tuple[int, ...]], tuple | None]] = {
    nn.Conv2d: _conv_expects, nn.Linear: _linear_expects}


def _shape_error(cx: _Ctx, node: fx.Node, exc: Exception) -> LoihiConvError:
    given = cx.input_shape
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    notes = []
    first = next((n for n in cx.gm.graph.nodes if n.op == "call_module" and type(cx.module(n)) in _EXPECTS), None)
    expected = first is not None and _EXPECTS[type(cx.module(first))](cx.module(first), given)
    if expected:
        shown = ", ".join(map(str, expected)) + ("," if len(expected) == 1 else "")
        notes.append(f"the first layer '{first.target}' ({_what(cx, first)}) expects input ({shown}), given {given}")
    if (node is not None and node is not first and node.op == "call_module"
            and type(cx.module(node)) is nn.Linear and node.args):
        got = cx.shapes.get(getattr(node.args[0], "name", None))
        if got:
            notes.append(f"'{node.target}' (nn.Linear) expects {cx.module(node).in_features} features "
                         f"but gets {math.prod(got[1:])}: the model was built for another input size")
    where = _describe(cx, node) if node is not None else "the model"
    return LoihiConvError(
        f"input_shape {given} does not fit the model: {where} fails on it ({detail})"
        + (f"; {'; '.join(notes)}" if notes else ""),
        "pass the shape of one training sample without the batch dim: (C, H, W) for images, (F,) for vectors")


def _check_output(graph: ir.Graph, model_name: str, output: Any) -> None:
    """The output must be logits: a synapse, optionally followed by BN/average pooling/flatten."""
    if not isinstance(output, str):
        what = f"{len(output)} values" if isinstance(output, (tuple, list, dict)) else repr(output)
        raise LoihiConvError(
            f"{model_name} returns a {type(output).__name__} of {what}, not a single logits tensor",
            "return only the classifier's logits (wrap the model: forward(x) returns model(x)[0])")
    node = graph[output]
    pooled = False
    while isinstance(node, (ir.AvgPool2d, ir.Flatten, ir.BatchNorm)):
        pooled = pooled or isinstance(node, ir.AvgPool2d)
        node = graph[node.inputs[0]]
    if isinstance(node, ir.SYNAPSES):
        return
    if isinstance(node, ir.ReLU) and pooled:  # SqueezeNet: conv -> ReLU -> global average pool; the
        return  # pool is the readout synapse, the ReLU a spiking population
    if isinstance(node, ir.ReLU):
        raise LoihiConvError(
            f"{model_name} ends in a ReLU ('{node.name}'): the classifier must output logits",
            "remove the final ReLU (the last Conv2d/Linear is the readout) and retrain or fine-tune")
    raise LoihiConvError(
        f"{model_name}'s output comes from {type(node).__name__} '{node.name}', not from a Conv2d/Linear",
        "end the model with a Linear/Conv2d producing logits (optionally followed by average pooling/flatten)")


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> ir.Graph:
    """Trace ``model`` (eval mode, unchanged) into a float IR graph with shapes filled in.

    ``input_shape`` is one sample without batch, e.g. (1, 28, 28) for (N, C, H, W) input or (784,).
    BatchNorm nodes stay in the graph (``fold.fold_batchnorm`` removes them); Dropout/Identity vanish.
    Raises ``LoihiConvError`` for untraceable models, unsupported layers (all reported together),
    a wrong ``input_shape``, NaN/Inf parameters, and outputs that are not logits.
    """
    input_shape = _check_input_shape(input_shape)
    _check_finite(model)
    with _eval_mode(model):
        gm = _symbolic_trace(model)
        shapes, failure = _record_shapes(gm, model, input_shape)
    cx = _Ctx(gm, shapes, input_shape)
    hazards = _mutation_hazards(cx)
    gm.graph.eliminate_dead_code()  # our own copy of the graph; drops e.g. unused x.size() calls
    graph, problems, output = _convert(cx)
    if hazards:  # in-place hazards first, as one kind
        fix = "assign the result (x = x.relu_()) instead of reusing the input"
        problems = {"in-place": _Problem(hazards[0], fix, len(hazards)), **problems}
    if problems:
        raise _unsupported_error(problems)
    if failure is not None:
        raise _shape_error(cx, *failure)
    _check_output(graph, type(model).__name__, output)
    graph.meta.update(model=type(model).__name__, input_shape=input_shape)
    try:
        return ops.infer_shapes(graph)
    except RuntimeError as e:  # should not happen once the fx shape run succeeded
        raise LoihiConvError(f"the traced graph of {type(model).__name__} cannot be run: {e}",
                             "report this model to the loihi-conv developers") from e
