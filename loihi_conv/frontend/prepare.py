"""``prepare``: nn.Module -> float IR, the frontend's one verb (trace, fold BN, fill shapes)."""
from __future__ import annotations

from torch import nn

from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.concat import push_through_concat
from loihi_conv.frontend.fold_bn import fold_batchnorm
from loihi_conv.frontend.pools import merge_max_pools
from loihi_conv.frontend.tracing import trace


def prepare(model: nn.Module, input_shape: tuple[int, ...]) -> ir.Graph:
    """Trace ``model`` (one sample's ``input_shape``, no batch), move per-channel ops in front of
    channel concatenations (``concat``), merge max-pools in a row (``pools``), fold BN and fill shapes.

    The float IR every later stage starts from; ``ops.forward`` on it equals ``model(x)`` in eval mode.
    """
    graph = ops.infer_shapes(push_through_concat(trace(model, input_shape)))
    return ops.infer_shapes(fold_batchnorm(merge_max_pools(graph)))
