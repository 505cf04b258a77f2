"""Every Loihi 2 / Lava number loihi-conv relies on, in one place, each with its source.

The quantizer chooses scales inside these limits, the emulator and the Lava processes apply the
same wraps and saturations, the NetX reader/writer validate against them, and ``inspect``
prints ``LIMITS`` as its table of hardware facts. Nothing else spells these numbers out.

Sources: lava-nc 0.10.0 / lava-dl 0.6.0 (file paths below), summarized in
``shared/research/lava-netx-reference.md`` (§1.7 NetX weights, §3.4 LIF, §3.5 SigmaDelta, §5
hardware); Intel's public Loihi 2 figures for the per-chip numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

REF = "shared/research/lava-netx-reference.md §5"


@dataclass(frozen=True)
class Limit:
    """One Loihi 2 number: its value, where it comes from, and whether we derived it."""
    value: int
    what: str
    source: str
    inferred: bool = False


LIMITS: dict[str, Limit] = {
    "weight_bits": Limit(8, "synaptic weight mantissa bits (signed; x a shared power of two)",
                         "lava-nc proc/dense/process.py docstring, utils/weightutils.py"),
    "bias_max": Limit(4095, "bias mantissa, 13-bit signed (-4096..4095), exponent 3-bit",
                      "lava-nc proc/lif/models.py docstring (PyLifModelBitAcc)"),
    "vth_max": Limit(131071, "threshold mantissa vThMant, 17-bit unsigned (<< 6 internally)",
                     "lava-nc proc/lif/models.py docstring"),
    "delay_max": Limit(62, "synaptic delay, 6-bit (0..63); netx clamps to 62",
                       "lava-nc proc/dense/models.py (DelayDense); lava-dl netx/hdf5.py"),
    "state_bits": Limit(24, "neuron state u, v (signed bits)", "lava-nc proc/lif/models.py"),
    "message_bits": Limit(16, "graded spike payload bits (netx SDNN default num_message_bits)",
                          "lava-dl netx/hdf5.py; lava-dl netx tutorials' adapters"),
    "cores_per_chip": Limit(128, "neurocores per Loihi 2 chip (+ 6 Lakemont x86 cores)",
                            "open-neuromorphic.org Loihi 2 page; Intel Loihi 2 brief"),
    "neurons_per_chip": Limit(1_048_576, "neurons per chip ('1 million')",
                              "open-neuromorphic.org Loihi 2 page"),
    "synapses_per_chip": Limit(120_000_000, "synapses per chip ('120 million max')",
                               "open-neuromorphic.org Loihi 2 page"),
    "neurons_per_core_max": Limit(8192, "neurons per core, best case: 1 M neurons / 128 cores",
                                  "division of the two chip figures above", inferred=True),
    "neurons_per_core": Limit(4096, "CUBA neurons per core as Lava placed them: a 64-neuron "
                              "layer used 1.56 % of a core's neurons",
                              "lava-dl tutorials/lava/lib/dl/netx/mnist/run.ipynb hardware log",
                              inferred=True),
    "synapses_per_core_max": Limit(937_500, "synapses per core, best case: 120 M / 128 cores",
                                   "division of the chip figures above", inferred=True),
    "synapses_per_core": Limit(42_885, "dense 8-bit synapses per core as Lava placed them: "
                               "784x128 synapses took 3 cores at 78 %",
                               "lava-dl tutorials/lava/lib/dl/netx/mnist/run.ipynb hardware log",
                               inferred=True),
}

# ---- neuron state and arithmetic (lava-nc proc/lif/models.py, proc/sdn/models.py) ----------
STATE_BITS = LIMITS["state_bits"].value
STATE_MAX = 2 ** (STATE_BITS - 1) - 1  # u, v, sigma, act: 24-bit signed, symmetric saturation
ACT_SHIFT = 6  # a_in << 6, bias_mant << 6 and vth << 6 in LIF (and our SoftIF): MSB alignment
DECAY_ONE = 4096  # du, dv are 12-bit fractions of 4096 (4096 = full decay, 0 = none)
VTH_MAX = LIMITS["vth_max"].value  # 17-bit unsigned vThMant
BIAS_MAX = LIMITS["bias_max"].value  # 13-bit signed bias mantissa (hardware)
INT16_MAX = 2 ** 15 - 1  # LIF's bias_mant Var is int16 (Lava's CPU model wraps beyond it)
SDNN_EXP = 6  # netx SDNN: spike_exp = state_exp = 6

# ---- synapses (lava-nc proc/dense, proc/conv; lava-dl netx/hdf5.py; reference doc §1.7) -----
WEIGHT_BITS = LIMITS["weight_bits"].value
WEIGHT_MAX = 254  # mixed-sign 8-bit weights: even ints in [-254, 254] (mantissa [-127, 127] x 2)
DENSE_MIXED_RANGE = (-256, 254)  # what netx loads exactly for a mixed-sign dense matrix
DENSE_POSITIVE_MAX = 255  # ... and for a non-negative one, [0, 255]
CONV_WRAP = 2 ** (STATE_BITS - 1)  # a conv's a_buf is 24-bit signed (wraps)
LAVA_CONV_GROUPS_MAX = 127  # Lava's PyConvModel keeps ``groups`` in an int8 Var: 128 wraps to -128, 256 to 0
DELAY_MAX = LIMITS["delay_max"].value  # netx clamps synaptic delays to 62
MESSAGE_BITS = LIMITS["message_bits"].value  # graded spike payloads (SDNN), signed
NETX_READOUT_VTH = 131072  # netx's default dense neuron: 1 << 18 - 1 (operator precedence)

# ---- loihi-conv's extension (docs/netx-extension.md): sized for one microcode register ------
GRADED_UNITS_MAX = 127  # largest |payload| of a graded SoftIF spike: a signed byte
COUNTER_MAX = 2 ** 16 - 1  # SoftIF step counter fields (clampSteps, spiCalibBeta)
RATE_DECAY_SHIFT = 3  # spiking max-pool rate gate: r -= r >> 3, a decay of 7/8 per step
RATE_INPUT_SHIFT = 12  # rate gate: one message unit adds 2^12 (floor error << one unit)
