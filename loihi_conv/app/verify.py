"""Emulator vs Lava, step by step: the proof that what runs on Lava is what was converted."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from loihi_conv.emulate import emulate
from loihi_conv.fixed import qir
from loihi_conv.fixed.decode import encode, predictions, steps_for


@dataclass
class Verification:
    """Mismatching elements per block and state over all samples and steps (0 = bit-exact)."""
    samples: int
    steps: int
    mismatches: dict[str, dict[str, int]] = field(default_factory=dict)
    compared: dict[str, dict[str, int]] = field(default_factory=dict)
    lava_predictions: list[int] = field(default_factory=list)
    emulator_predictions: list[int] = field(default_factory=list)
    lava_seconds: float = 0.0

    @property
    def total_mismatches(self) -> int:
        return sum(sum(d.values()) for d in self.mismatches.values())

    @property
    def total_compared(self) -> int:
        return sum(sum(d.values()) for d in self.compared.values())

    def table(self) -> str:
        rows = [f"{'block':24s} {'state':8s} {'compared':>12s} {'mismatches':>10s}"]
        for b, states in self.compared.items():
            for s, n in states.items():
                rows.append(f"{b:24s} {s:8s} {n:>12d} {self.mismatches[b][s]:>10d}")
        return "\n".join(rows)


def verify(qnet: qir.QNetwork, x, timesteps: int, runner=None, progress=None) -> Verification:
    """Run the analog inputs ``x`` (N, *input shape) through Lava (one sample at a time, the
    network compiled once) and the emulator (batched), and compare every block's out-port and
    every neuron state at every step."""
    from netx_export.runner import LavaRunner

    steps = steps_for(qnet, timesteps)
    x_int = encode(qnet, x)
    emu = emulate(qnet, x_int, steps, record=True)
    own = runner is None
    runner = runner or LavaRunner(qnet)
    ver = Verification(len(x_int), steps)
    try:
        for i in (progress or (lambda it: it))(range(len(x_int))):
            res = runner.run(x_int[i], steps, probes="all")
            ver.lava_seconds += res.seconds
            _compare(ver, "output", {"s": res.output}, {"s": emu.output[i]})
            for block, states in res.states.items():
                _compare(ver, block, states, {k: v[i] for k, v in emu.states[block].items()})
            ver.lava_predictions.append(int(predictions(qnet, res)[0]))
    finally:
        if own:
            runner.close()
    ver.emulator_predictions = predictions(qnet, emu).tolist()
    return ver


def _compare(ver: Verification, block: str, lava: dict, emu: dict) -> None:
    for name, arr in lava.items():
        if name not in emu:
            continue
        a, b = np.asarray(arr), np.asarray(emu[name])
        c = ver.compared.setdefault(block, {})
        m = ver.mismatches.setdefault(block, {})
        c[name] = c.get(name, 0) + a.size
        m[name] = m.get(name, 0) + (int((a != b).sum()) if a.shape == b.shape else a.size)
