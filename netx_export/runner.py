"""Run a built network on Lava's CPU simulator (or Loihi 2): compile once, run many samples.

Between samples every neuron state (LIF u/v, SigmaDelta sigma/act/residue, SoftIF v), every
synapse buffer (Dense/DelayDense ``a_buff``, Conv ``a_buf``) and every spiking max-pool state in
use (mli ``cum``/``sent``, rate-gate ``rate``) is reset and the input replaced;
the compiled runtime is reused (reference doc section 4: identical to fresh runs).

Cost notes (Lava 0.10 moves Var data one element per message, ~40 us each): states are reset
inside the graph by one ``SampleReset`` process after each sample's last step, inputs enter and
recordings leave through memory-mapped files (``procs.mmapio``), so per-sample host overhead is
independent of layer sizes. Only ``inject='bias'`` still uses ``Var.set`` (input-sized).

Time keeps counting across samples, so every file/ring buffer has ``steps`` rows (1 for a
static input) and each sample runs exactly ``steps`` steps: step s of a sample is row s-1.
Changing ``steps``, ``probes``, ``inject`` or static/time-series input recompiles.

Layouts at the border: ``x_int`` is PyTorch order, static (*shape) or (T_in, *shape); the
result's ``output`` is (steps, *out_shape) and states are (steps, *shape), PyTorch order; all
conversions go through ``loihi_conv.base.layout``.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.layout import chw_to_whc, monitor_to_torch, torch_to_lava
from loihi_conv.base.limits import INT16_MAX
from loihi_conv.fixed import qir
from loihi_conv.fixed.decode import readout_state
from netx_export import lava_env
from netx_export.build import LavaNet, build

# State Vars recorded per neuron model (names as in the Lava processes); SoftIF: its state_names.
STATE_NAMES = {qir.Cuba: ("u", "v"), qir.Readout: ("u", "v"),
               qir.Delta: ("act", "residue"), qir.SigmaDelta: ("sigma", "act", "residue"),
               qir.Sigma: ("sigma",)}
# Vars zeroed between samples (SoftIF's v restarts at v_init << 6 instead, see RESTART).
RESET_VARS = {qir.Cuba: ("u", "v"), qir.Readout: ("u", "v"), qir.SoftIF: ("vb",),
              qir.Delta: ("act", "residue", "sigma", "error"),
              qir.SigmaDelta: ("sigma", "act", "residue", "error"), qir.Sigma: ("sigma",)}


def state_names(neuron) -> tuple[str, ...]:
    """Probe-able states of a block's neuron: STATE_NAMES, or a SoftIF's own ``state_names``
    (the buffer V^b of a buffered SoftIF and the step-counted Vars in use; every SoftIF process
    has all of them)."""
    return getattr(neuron, "state_names", STATE_NAMES.get(type(neuron), ()))


def reset_vars(neuron) -> tuple[str, ...]:
    """Vars zeroed between samples (a compiled net is reused across samples): RESET_VARS plus
    the SoftIF step-counted Vars in use (unused ones stay 0)."""
    return RESET_VARS[type(neuron)] + getattr(neuron, "counters", ())


def pool_state_names(block: qir.Block) -> tuple[str, ...]:
    """Probe-able states of the block's spiking max-pool stages (``procs.pool.STATE_VARS``):
    ``pool<k>.<var>`` for synapse k, e.g. ``pool0.cum``. Recorded only when named in
    ``probes`` (not by 'all': the emulator has no such record to compare with)."""
    from netx_export.procs.pool import STATE_VARS

    return tuple(pool_state(k, var) for k, syn in enumerate(block.synapses)
                 if getattr(syn, "pool", None) is not None for var in STATE_VARS[syn.pool.scheme])


def pool_state(k: int, var: str) -> str:
    """The probe name of Var ``var`` of synapse k's pool stage."""
    return f"pool{k}.{var}"


BIAS_VARS = {qir.Cuba: "bias_mant", qir.Readout: "bias_mant", qir.SoftIF: "bias_mant"}
SYNAPSE_BUFFERS = ("a_buff", "a_buf")  # Dense/DelayDense, Conv
INJECT = ("a_in", "bias")


@dataclass
class LavaResult:
    """One sample. ``output``: the output block's out-port per step (steps, *out_shape);
    ``states[block][name]``: (steps, *shape); ``readout``: the output block's final decode
    state (*out_shape) (``loihi_conv.fixed.decode.READOUT_STATE``: ``u`` of a Readout, which
    accumulates Σ a<<6, ``v`` of a spiking SoftIF/CUBA output), else None; ``readout_trace``:
    that state after every step (steps, *out_shape) (the "softmax" decode reads it);
    ``seconds``: wall time of the simulation of this sample."""
    output: np.ndarray
    states: dict[str, dict[str, np.ndarray]]
    readout: np.ndarray | None
    steps: int
    seconds: float
    readout_trace: np.ndarray | None = None


@dataclass
class _Compiled:
    """One compiled graph: the network plus our I/O processes and their host-side files."""
    key: tuple
    net: LavaNet
    workdir: Path
    sources: dict[bool, np.memmap]  # flat? -> host view of an MmapSource file
    recorders: dict[tuple[str, str], np.memmap]  # (block, var or 's_out') -> host view
    anchor: Any  # any process of the graph: run/stop go through it
    started: bool = False


@dataclass
class LavaRunner:
    """``with LavaRunner('model.net') as r: res = r.run(x_int, steps=32, probes=['conv1'])``.

    ``net_or_path``: a QNetwork, a .net path, or an already built LavaNet (used for the first
    compile only; later recompiles rebuild from its QNetwork). ``engine`` as in ``build``.
    ``hardware=True`` runs on Loihi 2 through lava-loihi (INRC members only).
    ``timing``: accumulated build/compile/run seconds, steps and samples.
    """
    net_or_path: Any
    engine: str | None = None
    hardware: bool = False
    input_message_bits: int = 16
    timing: dict[str, float] = field(default_factory=lambda: {
        "build_s": 0.0, "compile_s": 0.0, "run_s": 0.0, "steps": 0, "samples": 0})
    _c: _Compiled | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.hardware:
            _require_lava_loihi()
        prebuilt = self.net_or_path if isinstance(self.net_or_path, LavaNet) else None
        self._source = prebuilt.qnet if prebuilt else self.net_or_path
        t0 = time.perf_counter()
        self._prebuilt = prebuilt or self._build()  # validates the file before any compile
        self.timing["build_s"] += time.perf_counter() - t0
        self.qnet = self._prebuilt.qnet

    # ---- public ---------------------------------------------------------------------------
    def run(self, x_int: np.ndarray, steps: int, probes=None, inject: str = "a_in") -> LavaResult:
        """Run one sample for ``steps`` steps; see the module docstring for layouts.

        ``probes``: None, 'all', block names, or {block: [state names]} (STATE_NAMES; a
        spiking max-pool stage's Vars by name, ``pool_state_names``).
        ``inject``: 'a_in' (input ints into the input neuron's a_in, or into the first synapses
        when the input block has no neuron) or 'bias' (a static input replaces the input
        neuron's bias_mant, as in lava-dl's tinynet test and ``loihi_conv.emulate``).
        """
        steps = int(steps)
        if steps < 1:
            raise LoihiConvError(f"steps = {steps}", "run at least one step")
        if inject not in INJECT:
            raise LoihiConvError(f"unknown inject {inject!r}", f"use one of {INJECT}")
        x = self._check_input(x_int, steps, inject)
        static = bool((x == x[:1]).all())
        pairs = self._probe_pairs(probes)
        key = (steps, pairs, inject, static)
        if self._c is None or self._c.key != key:
            self._compile(key)
        c = self._c
        try:
            self._load_sample(c, x[:1] if static else x, inject)
            t0 = time.perf_counter()
            if not c.started:
                self._start(c)
            t1 = time.perf_counter()
            c.anchor.run(condition=_run_steps(steps), run_cfg=self._run_cfg())
            t2 = time.perf_counter()
            res = self._collect(c, steps, pairs, t2 - t1)
        except BaseException:  # also Ctrl-C / SIGTERM: tear the runtime down, wait for nothing
            self.close(abort=True)
            raise
        self.timing["compile_s"] += t1 - t0
        self.timing["run_s"] += t2 - t1
        self.timing["steps"] += steps
        self.timing["samples"] += 1
        return res

    def close(self, abort: bool = False) -> None:
        """Stop the Lava runtime and remove the I/O files (idempotent). ``abort``: kill the
        runtime's processes instead of Lava's graceful stop (after an error or a signal)."""
        c, self._c = self._c, None
        if c is None:
            return
        try:
            if abort or not c.started:
                lava_env.abort_runtime(c.anchor)
            else:
                c.anchor.stop()
        except Exception:  # a runtime that already died cannot be stopped: kill what is left
            lava_env.abort_runtime(c.anchor)
        except BaseException:  # interrupted while stopping
            lava_env.abort_runtime(c.anchor)
            raise
        finally:
            shutil.rmtree(c.workdir, ignore_errors=True)

    def __enter__(self) -> "LavaRunner":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)

    @property
    def seconds_per_step(self) -> float:
        """Mean simulation wall time per step over all samples run so far."""
        return self.timing["run_s"] / max(self.timing["steps"], 1)

    # ---- compile ----------------------------------------------------------------------------
    def _build(self) -> LavaNet:
        return build(self._source, engine=self.engine, input_message_bits=self.input_message_bits)

    def _compile(self, key: tuple) -> None:
        """Build (or take the prebuilt) network and wire its I/O (``_wire``)."""
        self.close()
        steps, pairs, inject, static = key
        t0 = time.perf_counter()
        net, self._prebuilt = (self._prebuilt or self._build()), None
        self.timing["build_s"] += time.perf_counter() - t0
        first = net.blocks[0]
        if net.inputs and inject != "a_in":
            raise LoihiConvError(f"inject={inject!r} needs an input neuron; input block "
                                 f"{first.name!r} has none", "use inject='a_in'")
        if inject == "bias" and BIAS_VARS.get(type(first.model)) is None:
            raise LoihiConvError(f"inject='bias' needs a LIF or SoftIF input neuron, input is "
                                 f"{type(first.model).__name__}", "use inject='a_in'")
        workdir = Path(tempfile.mkdtemp(prefix="loihi_conv_lava_", dir=_shm()))
        try:
            self._c = self._wire(key, net, workdir)
        except BaseException:  # nothing compiled yet: only the I/O files to remove
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _wire(self, key: tuple, net: LavaNet, workdir: Path) -> _Compiled:
        """Sources, recorders and the SampleReset around the network."""
        from netx_export.procs.mmapio import MmapSource, PortRecorder, VarRecorder, open_file

        steps, pairs, inject, static = key
        first, out = net.blocks[0], net.output
        rows = 1 if static else steps

        def new_file(name: str, shape: tuple[int, ...], n: int) -> tuple[str, np.memmap]:
            path = str(workdir / f"{name}.i64")
            return path, open_file(path, n, shape, "w+")

        sources: dict[bool, np.memmap] = {}
        ports = [(t.port, t.flat) for t in net.inputs] if net.inputs else \
            [(first.neuron.a_in, False)] if inject == "a_in" else []
        procs: dict[bool, Any] = {}
        for port, flat in ports:
            if flat not in procs:
                shape = (int(np.prod(first.shape)),) if flat else _whc(first.shape)
                path, sources[flat] = new_file(f"input{int(flat)}", shape, rows)
                procs[flat] = MmapSource(shape=shape, rows=rows, path=path)
            procs[flat].s_out.connect(port)
        recorders: dict[tuple[str, str], np.memmap] = {}
        path, recorders[(out.name, "s_out")] = new_file("output", _whc(out.shape), steps)
        anchor = PortRecorder(shape=_whc(out.shape), rows=steps, path=path)
        out.neuron.s_out.connect(anchor.a_in)
        for k, (name, var) in enumerate((*pairs, *_readout_pair(net, pairs))):
            target = _state_var(net[name], var)
            path, recorders[(name, var)] = new_file(f"state{k}", target.shape, steps)
            VarRecorder(shape=target.shape, rows=steps, path=path).ref.connect_var(target)
        _sample_reset(net, steps)
        return _Compiled(key, net, workdir, sources, recorders, anchor)

    def _start(self, c: _Compiled) -> None:
        """Compile and start the runtime (the expensive part, once per compile key)."""
        cfg = self._run_cfg()
        executable = c.anchor.compile(run_cfg=cfg)
        with lava_env.children_ignore_signals():
            c.anchor.create_runtime(run_cfg=cfg, executable=executable)
        c.started = True

    def _run_cfg(self):
        if self.hardware:
            from lava.magma.core.run_configs import Loihi2HwCfg

            return Loihi2HwCfg(select_sub_proc_model=True)
        from lava.magma.core.run_configs import Loihi2SimCfg

        return Loihi2SimCfg(select_tag="fixed_pt")

    # ---- per sample ---------------------------------------------------------------------------
    def _check_input(self, x_int, steps: int, inject: str) -> np.ndarray:
        """-> (steps, *shape) int64, PyTorch order. A static input (*shape) is applied every
        step; a time series (T_in, *shape) is applied as x[(t-1) % T_in] at step t (like the
        emulator and a Lava RingBuffer of length T_in). inject='bias' takes static input only."""
        shape = tuple(self.qnet.input.shape)
        x = np.asarray(x_int)
        if x.dtype.kind not in "iub":
            if x.dtype.kind != "f" or not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
                raise LoihiConvError(f"input has dtype {x.dtype} with non-integer values",
                                     "pass integer inputs: round(x * qnet.input_scale)")
        if x.shape == shape:
            x = x[None]
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape or x.shape[0] < 1 \
                or (inject == "bias" and x.shape[0] != 1):
            want = f"{shape}" if inject == "bias" else f"{shape} or (T_in, *{shape})"
            raise LoihiConvError(f"input shape {x.shape} does not match: expected {want}",
                                 "pass one sample in PyTorch order (no batch axis)")
        lim = INT16_MAX if inject == "bias" else 2**31 - 1
        if x.size and np.abs(x.astype(np.float64)).max() > lim:
            raise LoihiConvError(f"input ints reach {np.abs(x).max()}, beyond {lim}",
                                 "lower the input scale" + (" (LIF bias_mant is int16)"
                                                            if inject == "bias" else ""))
        return x.astype(np.int64)[np.arange(steps) % x.shape[0]]

    def _load_sample(self, c: _Compiled, x: np.ndarray, inject: str) -> None:
        """Input for one sample: the source files ((T,...) PyTorch -> Lava order, time first)
        or the input neuron's bias. No state reset here: SampleReset did it in-graph."""
        first = c.net.blocks[0]
        if inject == "bias":  # the image replaces the block's bias (as in loihi_conv.emulate)
            var = getattr(first.neuron, BIAS_VARS[type(first.model)])
            value = chw_to_whc(x[0]).astype(np.int32)
            if c.started:
                var.set(value)
            else:
                var.init = value
        for flat, mm in c.sources.items():
            data = x.reshape(len(x), -1) if flat else x
            mm[:] = np.moveaxis(torch_to_lava(data), -1, 0)  # (W,H,C,T) -> (T,W,H,C)
            mm.flush()

    def _collect(self, c: _Compiled, steps: int, pairs, seconds: float) -> LavaResult:
        rec = {k: monitor_to_torch(np.array(mm)) for k, mm in c.recorders.items()}
        o = c.net.output.name
        states: dict[str, dict[str, np.ndarray]] = {}
        for name, var in pairs:
            states.setdefault(name, {})[var] = rec[(name, var)]
        trace = rec.get((o, readout_state(c.net.output.model)))
        readout = None if trace is None else trace[-1]
        return LavaResult(rec[(o, "s_out")], states, readout, steps, seconds, readout_trace=trace)

    def _probe_pairs(self, probes) -> tuple[tuple[str, str], ...]:
        """Normalize probes to ((block, state), ...) in network order."""
        if probes is None:
            return ()
        names = [b.name for b in self.qnet.blocks]
        if probes == "all":
            probes = names
        wanted = dict(probes) if isinstance(probes, dict) else {p: None for p in probes}
        pairs = []
        for block in self.qnet.blocks:
            if block.name not in wanted:
                continue
            avail = state_names(block.neuron)
            named = avail + pool_state_names(block)  # pool states: by name only
            for s in wanted.pop(block.name) or avail:
                if s not in named:
                    raise LoihiConvError(f"block {block.name!r} has no state {s!r}",
                                         f"its states are {named}")
                pairs.append((block.name, s))
        if wanted:
            raise LoihiConvError(f"unknown probe block(s) {sorted(wanted)}",
                                 f"blocks are {names}")
        return tuple(pairs)


def _require_lava_loihi() -> None:
    lava_env.prepare()
    from lava.utils import loihi

    if not loihi.is_installed():
        raise LoihiConvError(
            "hardware=True needs Loihi 2, but the lava-loihi extension is not installed",
            "lava-loihi is available only to Intel INRC members (see the lava README); run on "
            "the CPU simulator with hardware=False")


def _run_steps(steps: int):
    from lava.magma.core.run_conditions import RunSteps

    return RunSteps(num_steps=steps)


def _shm() -> str | None:
    """RAM-backed /dev/shm for the I/O files when it exists (else the default temp dir)."""
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def _whc(shape) -> tuple[int, ...]:
    return tuple(int(s) for s in shape[::-1])


def _readout_pair(net: LavaNet, pairs) -> tuple[tuple[str, str], ...]:
    """The output block's decode state (``readout_state``: u of a LIF-type output, v of a SoftIF)
    is always recorded, every step (for ``readout`` and ``readout_trace``)."""
    o = net.output
    key = readout_state(o.model)
    if key in state_names(o.model) and (o.name, key) not in pairs:
        return ((o.name, key),)
    return ()


def _pool_vars(lb) -> dict[str, Any]:
    """The Vars a block's pool stages use, by probe name (``pool_state_names``)."""
    from netx_export.procs.pool import STATE_VARS

    return {pool_state(k, var): getattr(p, var) for k, p in enumerate(lb.pools) if p is not None
            for var in STATE_VARS[p.proc_params["scheme"]]}


def _state_var(lb, name: str):
    """The Var behind a probe name: a pool stage's, else the block's neuron's."""
    pools = _pool_vars(lb)
    return pools[name] if name in pools else getattr(lb.neuron, name)


def _sample_reset(net: LavaNet, steps: int):
    """One SampleReset writing the start values of every neuron state, synapse buffer and
    spiking max-pool state in use (all restart at 0)."""
    from netx_export.procs.samplereset import sample_reset

    targets = []
    for lb in net.blocks:
        if lb.neuron is not None:
            for name in reset_vars(lb.model):
                var = getattr(lb.neuron, name)
                targets.append((var, np.zeros(var.shape, np.int64)))
            targets += RESTART.get(type(lb.model), lambda lb: [])(lb)
        for syn in lb.synapses:
            targets += [(getattr(syn, b), np.zeros(getattr(syn, b).shape, np.int64))
                        for b in SYNAPSE_BUFFERS if hasattr(syn, b)]
        targets += [(var, np.zeros(var.shape, np.int64)) for var in _pool_vars(lb).values()]
    reset = sample_reset([v for _, v in targets], interval=steps)
    for k, (var, _) in enumerate(targets):
        getattr(reset, f"ref_{k}").connect_var(var)
    return reset


def _restart_softif(lb) -> list:
    """SoftIF starts each sample at v = v_init << 6, not at 0."""
    from netx_export.procs.softif_process import initial_v

    v_init = lb.model.v_init if lb.model.v_init is not None else 0
    return [(lb.neuron.v, initial_v(np.broadcast_to(v_init, (lb.neuron.v.shape[-1],)),
                                    lb.neuron.v.shape))]


RESTART = {qir.SoftIF: _restart_softif}
