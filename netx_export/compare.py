"""Field-by-field comparison of two QNetworks (used by the writer's read-back check and tests)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from loihi_conv.fixed import qir
from netx_export.schema import to_json


def _same(a, b) -> bool:
    if type(a) is not type(b) and not (_arrayish(a) and _arrayish(b)):
        return False
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if _arrayish(a):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _arrayish(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, int)) and not isinstance(x, bool)


def diff_networks(a: qir.QNetwork, b: qir.QNetwork) -> list[str]:
    """Human-readable differences between two networks; empty if equal in every field.

    ``meta`` is compared after a JSON round trip (files store it as JSON: tuples become lists).
    """
    out = []
    for name in ("input_scale", "output_scale"):
        if float(getattr(a, name)) != float(getattr(b, name)):
            out.append(f"{name}: {getattr(a, name)} != {getattr(b, name)}")
    if json.loads(to_json(a.meta)) != json.loads(to_json(b.meta)):
        out.append("meta differs")
    if [x.name for x in a.blocks] != [x.name for x in b.blocks]:
        return out + [f"block names {[x.name for x in a.blocks]} != {[x.name for x in b.blocks]}"]
    for x, y in zip(a.blocks, b.blocks):
        if tuple(x.shape) != tuple(y.shape):
            out.append(f"{x.name}: shape {x.shape} != {y.shape}")
        if not _same(x.bias, y.bias):
            out.append(f"{x.name}: bias differs")
        if not _same(x.neuron, y.neuron):
            out.append(f"{x.name}: neuron {x.neuron!r} != {y.neuron!r}")
        if len(x.synapses) != len(y.synapses):
            out.append(f"{x.name}: {len(x.synapses)} synapses != {len(y.synapses)}")
        for k, (s, t) in enumerate(zip(x.synapses, y.synapses)):
            if not _same(s, t):
                out.append(f"{x.name}: synapse {k} differs")
    return out
