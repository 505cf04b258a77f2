"""The emulator against this machine's multiply-accumulate peak and against Lava (issue 18, item 2).

Sections: (a) torch MAC peak per dtype (u8 x s8 -> int32 oneDNN GEMM and conv: the kernels the
emulator uses for spikes; torch has no CPU ``_int_mm``; int32 GEMM; float32 GEMM and conv),
threads=2; (b) the emulator's MAC throughput per target (if-soft, cuba, sdnn) and network as a
fraction of the best peak; (c) emulator vs Lava sample·steps/s on mnist_cnn at batch 1000 (Lava's
rate from benchmarks/throughput.py's code); (d) ResNet-18 (torchvision, random init, 3x32x32)
if-soft T=32.

MACs per step are counted from the fixed-point IR as the dense network defines them: dense
in x out, conv C_out·H_out·W_out x kH·kW·C_in/groups (nominal: a pool-folded conv does 1/stride²
of them, an event-driven machine only those of non-zero inputs); throughput = MACs/step x
sample·steps/s. Emulator rates are the best of ``repeats`` runs.

    python benchmarks/speed_emulator.py [--quick]
writes benchmarks/results/speed_emulator.json and .md; ``run(quick)`` returns {"rows", "markdown"}
for benchmarks/results/speed.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results"
THREADS = 2
COMMAND = "python benchmarks/speed_emulator.py"


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def mac_peak(quick: bool) -> list[dict]:
    """GMAC/s of the torch CPU kernels, one row per dtype/op."""
    torch.manual_seed(0)
    rep = 2 if quick else 5
    n = 512 if quick else 1024
    rows = []

    def row(op, dtype, macs, secs, note=""):
        rows.append({"section": "peak", "op": op, "dtype": dtype, "gmacs": macs / secs / 1e9, "note": note})

    a, b = torch.randn(n, n), torch.randn(n, n)
    row(f"GEMM {n}³", "float32", n ** 3, _best(lambda: a @ b, rep))
    m = 256
    ai, bi = torch.randint(-128, 128, (m, m), dtype=torch.int32), torch.randint(-128, 128, (m, m), dtype=torch.int32)
    row(f"GEMM {m}³", "int32", m ** 3, _best(lambda: ai @ bi, rep), "no int BLAS: torch's generic kernel")
    q = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    packed = torch.ops.onednn.qlinear_prepack(q, None)
    scale, zp = torch.ones(n), torch.zeros(n, dtype=torch.int64)
    s = torch.randint(0, 2, (n, n), dtype=torch.uint8)
    row(f"GEMM {n}³", "u8×s8→int32", n ** 3, _best(lambda: torch.ops.onednn.qlinear_pointwise(
        s, 1.0, 0, packed, scale, zp, None, 1.0, 0, torch.float32, "none", [], ""), rep),
        "oneDNN qlinear (torch._int_mm is CUDA-only in torch 2.3)")
    bsz, c, hw, k = (16 if quick else 64), 64, 32, 3
    macs = bsz * c * hw * hw * c * k * k
    x = torch.randn(bsz, c, hw, hw).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, k, k).contiguous(memory_format=torch.channels_last)
    with torch.backends.nnpack.flags(enabled=False):
        row(f"conv {bsz}×{c}×{hw}² k{k}", "float32", macs, _best(lambda: F.conv2d(x, w, padding=1), rep))
    qw = torch.randint(-128, 128, (c, c, k, k), dtype=torch.int8)
    cs = torch.ones(c)
    cpk = torch.ops.onednn.qconv_prepack(qw, cs, 1.0, 0, [1, 1], [1, 1], [1, 1], 1, None)
    xs = torch.randint(0, 2, (bsz, c, hw, hw), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    row(f"conv {bsz}×{c}×{hw}² k{k}", "u8×s8→int32", macs, _best(lambda: torch.ops.onednn.qconv2d_pointwise(
        xs, 1.0, 0, cpk, cs, torch.zeros(c, dtype=torch.int64), None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0,
        torch.float32, "none", [], ""), rep), "oneDNN qconv")
    return rows


def _event_driven(s: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """out[m] = sum of the weight rows of m's spikes: the spikes' (row, col) list, then
    embedding_bag's fused gather-sum (torch's fastest CPU sparse x dense; sparse.mm is ~100x slower)."""
    counts = s.sum(1, dtype=torch.int64)
    cols = s.nonzero()[:, 1]
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    return F.embedding_bag(cols, wt, offsets, mode="sum")


def sparse_rows(quick: bool) -> list[dict]:
    """Event-driven accumulation break-even: a dense layer (mnist_cnn's 2048 -> 128) on a spike
    train of rate r, as the emulator does it (oneDNN u8 x s8 GEMM, all MACs) vs event-driven
    (the spikes' indices, then a float32 gather-sum of their weight rows: only the spikes' MACs;
    finding the spikes is counted, since the trains are dense)."""
    torch.manual_seed(0)
    m, k, n = (4096 if quick else 16384), 2048, 128
    q = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    packed = torch.ops.onednn.qlinear_prepack(q, None)
    scale, zp = torch.ones(n), torch.zeros(n, dtype=torch.int64)
    wt = q.t().float().contiguous()
    rows = []
    for r in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        s = (torch.rand(m, k) < r).to(torch.uint8)
        dense = _best(lambda: torch.ops.onednn.qlinear_pointwise(
            s, 1.0, 0, packed, scale, zp, None, 1.0, 0, torch.float32, "none", [], ""), 2)
        sparse = _best(lambda: _event_driven(s, wt), 2)
        rows.append({"section": "sparse", "rate": r, "rows": m, "in": k, "out": n,
                     "dense_ms": dense * 1e3, "event_ms": sparse * 1e3, "event_speedup": dense / sparse})
    return rows


def macs_per_step(qnet) -> int:
    """Nominal MACs of one step of one sample (module doc)."""
    from loihi_conv.emulate.synapses import conv_output_shape
    from loihi_conv.fixed.qir import ConvSyn
    shapes = {b.name: tuple(b.shape) for b in qnet.blocks}
    total = 0
    for b in qnet.blocks:
        for syn in b.synapses:
            w = np.asarray(syn.weight)
            if isinstance(syn, ConvSyn):
                out = conv_output_shape(syn, shapes[syn.source])
                total += int(np.prod(out)) * int(np.prod(w.shape[1:]))  # (C_in/groups)·kH·kW per output
            else:
                total += int(w.size)
    return total


def resnet18_qnet(timesteps: int, n: int):
    """benchmarks/coverage.py's ResNet-18: torchvision random init, randomized BN statistics,
    max-norm conversion on 64 random images, if-soft quantized; plus n random test images."""
    import torchvision.models as tvm

    from loihi_conv import api
    from loihi_conv.frontend.prepare import prepare
    torch.manual_seed(0)
    model = tvm.get_model("resnet18", weights=None).eval()
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=gen) * 0.2 - 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
    shape = (3, 32, 32)
    calib = torch.rand(64, *shape, generator=gen)
    snn = api.convert(prepare(model, shape), calib, api.Recipe(calib_size=64, normalizer="max"))
    qnet = api.quantize(snn, "if-soft", timesteps=timesteps, calib=calib)
    return qnet, torch.rand(n, *shape, generator=gen)


def emulator_rows(quick: bool, peak: float) -> list[dict]:
    from loihi_conv.app import models, pipeline
    from loihi_conv.convert import Recipe
    from loihi_conv.fixed.decode import encode, steps_for
    timesteps, n, rep = 64, (64 if quick else 256), 1
    rows = []
    for name in ("mnist_cnn", "fmnist_cnn", "fmnist_vgg"):
        ref, recipe = models.resolve(name), Recipe()
        snn, _ = pipeline.convert_model(ref, recipe)
        x, _ = pipeline.test_data(ref.dataset, n)
        for target in ("if-soft", "cuba", "sdnn"):
            qnet = pipeline.quantize_snn(snn, ref, recipe, target, timesteps)
            steps = steps_for(qnet, timesteps)
            r = rate(qnet, encode(qnet, x), steps, rep)
            rows.append(_emu_row(name, target, timesteps, steps, len(x), r, macs_per_step(qnet), peak))
    return rows


def rate(qnet, x_int, steps: int, repeats: int) -> float:
    """Best-of-``repeats`` emulator sample·steps/s after a small warm-up run (kernel loading)."""
    from throughput import emulator_rate

    from loihi_conv.emulate import emulate
    emulate(qnet, x_int[:4], steps)
    return emulator_rate(qnet, x_int, steps, repeats=repeats)


def _emu_row(name, target, timesteps, steps, batch, rate, macs, peak):
    return {"section": "emulator", "model": name, "target": target, "T": timesteps, "steps": steps,
            "batch": batch, "sample_steps_per_s": rate, "macs_per_step": macs,
            "gmacs": rate * macs / 1e9, "fraction_of_peak": rate * macs / 1e9 / peak}


def resnet_row(quick: bool, peak: float) -> dict:
    from loihi_conv import api
    n = 8 if quick else 64
    qnet, x = resnet18_qnet(32, n)
    steps = api.steps_for(qnet, 32)
    r = rate(qnet, api.encode(qnet, x), steps, 1 if quick else 2)
    return _emu_row("resnet18-32", "if-soft", 32, steps, n, r, macs_per_step(qnet), peak)


def lava_rows(quick: bool) -> list[dict]:
    from throughput import lava_rate

    import netx_export
    from loihi_conv.app import models, pipeline
    from loihi_conv.convert import Recipe
    from loihi_conv.fixed.decode import encode, steps_for
    timesteps, batch, lava_n = 64, (200 if quick else 1000), (2 if quick else 4)
    ref, recipe = models.resolve("mnist_cnn"), Recipe()
    snn, _ = pipeline.convert_model(ref, recipe)
    x, _ = pipeline.test_data(ref.dataset, batch)
    rows = []
    for target in ("if-soft", "cuba", "sdnn"):
        qnet = pipeline.quantize_snn(snn, ref, recipe, target, timesteps)
        path = netx_export.save(qnet, RESULTS / f".speed_mnist_cnn_{target}.net")
        try:
            qnet = netx_export.load(path)
            steps = steps_for(qnet, timesteps)
            x_int = encode(qnet, x)
            lava, _ = lava_rate(path, x_int[:lava_n], steps)
            emu = rate(qnet, x_int, steps, 1 if quick else 2)
        finally:
            path.unlink(missing_ok=True)
        rows.append({"section": "lava", "model": "mnist_cnn", "target": target, "T": timesteps, "steps": steps,
                     "batch": len(x_int), "lava_sample_steps_per_s": lava, "emulator_sample_steps_per_s": emu,
                     "speedup": emu / lava})
    return rows


def before_after_rows(quick: bool) -> list[dict]:
    """The emulator with the fused kernels off (before) and on (after), back to back on the same
    inputs (so under the same machine load), with an exact comparison of the results:
    mnist_cnn T=64 (every target) and ResNet-18-32 if-soft T=32."""
    from loihi_conv.app import models, pipeline
    from loihi_conv.convert import Recipe
    from loihi_conv.emulate import fused
    from loihi_conv.fixed.decode import encode, steps_for
    ref, recipe = models.resolve("mnist_cnn"), Recipe()
    snn, _ = pipeline.convert_model(ref, recipe)
    x, _ = pipeline.test_data(ref.dataset, 200 if quick else 1000)
    cases = [("mnist_cnn", t, q, encode(q, x), steps_for(q, 64), 64) for t in ("if-soft", "cuba", "sdnn")
             for q in [pipeline.quantize_snn(snn, ref, recipe, t, 64)]]
    qnet, xr = resnet18_qnet(32, 8 if quick else 64)
    cases.append(("resnet18-32", "if-soft", qnet, encode(qnet, xr), steps_for(qnet, 32), 32))
    return _toggle_rows("before_after", cases, lambda on: setattr(fused, "ENABLED", on), fused.ENABLED)


def zero_rows_rows(quick: bool) -> list[dict]:
    """Synapses on every message row (before) vs on the non-zero rows only (after, the default:
    ``engine._apply_nonzero``), back to back on the same inputs, with an exact comparison:
    mnist_cnn and fmnist_cnn, T=64, every target."""
    from loihi_conv.app import models, pipeline
    from loihi_conv.convert import Recipe
    from loihi_conv.emulate import engine
    from loihi_conv.fixed.decode import encode, steps_for
    cases = []
    for name, n in (("mnist_cnn", 200 if quick else 1000), ("fmnist_cnn", 64 if quick else 256)):
        ref, recipe = models.resolve(name), Recipe()
        snn, _ = pipeline.convert_model(ref, recipe)
        x, _ = pipeline.test_data(ref.dataset, n)
        for t in ("if-soft", "cuba", "sdnn"):
            q = pipeline.quantize_snn(snn, ref, recipe, t, 64)
            cases.append((name, t, q, encode(q, x), steps_for(q, 64), 64))
    default = engine.SKIP_ZERO_ROWS
    return _toggle_rows("zero_rows", cases,
                        lambda on: setattr(engine, "SKIP_ZERO_ROWS", default if on else -1.0), True)


def _toggle_rows(section: str, cases, switch, default: bool) -> list[dict]:
    """Each case emulated with ``switch(False)`` (before) then ``switch(True)`` (after)."""
    from loihi_conv.emulate import emulate
    rows = []
    for name, target, q, x_int, steps, timesteps in cases:
        res, secs = {}, {}
        for on in (False, True):
            switch(on)
            emulate(q, x_int[:4], steps)  # warm-up (kernel loading)
            t0 = time.perf_counter()
            res[on] = emulate(q, x_int, steps)
            secs[on] = time.perf_counter() - t0
        switch(default)
        a, b = res[False], res[True]
        same = (np.array_equal(a.output, b.output) and (a.readout is None or np.array_equal(a.readout, b.readout))
                and all(np.array_equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts))
        n = len(x_int)
        rows.append({"section": section, "model": name, "target": target, "T": timesteps, "steps": steps,
                     "batch": n, "before_sample_steps_per_s": n * steps / secs[False],
                     "after_sample_steps_per_s": n * steps / secs[True], "speedup": secs[False] / secs[True],
                     "identical": bool(same), "load": _load()})
    return rows


def markdown(rows: list[dict], quick: bool, meta: dict) -> str:
    cmd = COMMAND + (" --quick" if quick else "")
    out = ["## Emulator", "",
           f"`{cmd}` (torch threads={meta['threads']}, {meta['machine']}, load average "
           f"{meta['load_before']} before / {meta['load_after']} after; the machine is shared, so rates "
           "are lower bounds)", "",
           "### Machine MAC peak (torch CPU kernels)", "",
           "| op | dtype | GMAC/s | note |", "|---|---|---|---|"]
    out += [f"| {r['op']} | {r['dtype']} | {r['gmacs']:.1f} | {r['note']} |" for r in rows if r["section"] == "peak"]
    # (sections without rows keep their empty table: the lead's speed.md shows what was not run)
    out += ["", "### Emulator MAC throughput vs the best peak", "",
            "MACs/step: nominal dense count from the fixed-point IR (see the script's doc).", "",
            "| network | target | T (steps) | batch | sample·steps/s | MMAC/step | GMAC/s | % of peak |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['model']} | {r['target']} | {r['T']} ({r['steps']}) | {r['batch']} | {r['sample_steps_per_s']:.0f} | "
            f"{r['macs_per_step'] / 1e6:.2f} | {r['gmacs']:.2f} | {100 * r['fraction_of_peak']:.1f}% |"
            for r in rows if r["section"] == "emulator"]
    out += ["", "### Emulator vs Lava CPU simulator (mnist_cnn)", "",
            "| target | T (steps) | batch | Lava sample·steps/s (batch 1) | emulator sample·steps/s | speed-up |",
            "|---|---|---|---|---|---|"]
    out += [f"| {r['target']} | {r['T']} ({r['steps']}) | {r['batch']} | {r['lava_sample_steps_per_s']:.1f} | "
            f"{r['emulator_sample_steps_per_s']:.0f} | {r['speedup']:.0f}× |" for r in rows if r["section"] == "lava"]
    for section, title in (("before_after", "Before / after the fused kernels (back to back, same inputs)"),
                           ("zero_rows", "Before / after skipping all-zero message rows (back to back, same inputs)")):
        ab = [r for r in rows if r["section"] == section]
        if not ab:
            continue
        out += ["", f"### {title}", "",
                "| network | target | T (steps) | batch | before sample·steps/s | after | speed-up | identical | load |",
                "|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['model']} | {r['target']} | {r['T']} ({r['steps']}) | {r['batch']} | "
                f"{r['before_sample_steps_per_s']:.0f} | {r['after_sample_steps_per_s']:.0f} | {r['speedup']:.2f}× | "
                f"{'yes' if r['identical'] else 'NO'} | {r['load']} |" for r in ab]
    sp = [r for r in rows if r["section"] == "sparse"]
    if sp:
        out += ["", "### Event-driven accumulation break-even (dense layer 2048→128)", "",
                f"{sp[0]['rows']} spike vectors; dense = oneDNN u8×s8 GEMM (what the emulator runs), "
                "event-driven = spike indices (nonzero) + float32 gather-sum of their weight rows (embedding_bag).", "",
                "| spike rate | dense ms | event-driven ms | event-driven speed-up |", "|---|---|---|---|"]
        out += [f"| {100 * r['rate']:.1f}% | {r['dense_ms']:.1f} | {r['event_ms']:.1f} | {r['event_speedup']:.2f}× |"
                for r in sp]
    return "\n".join(out) + "\n"


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def run(quick: bool = False, parts: str = "peak,emulator,resnet,lava,sparse,before_after,zero_rows") -> dict:
    from netx_export.lava_env import prepare
    prepare()
    torch.set_num_threads(THREADS)
    meta = {"threads": THREADS, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "load_before": _load(), "quick": quick, "nice": os.nice(0)}
    wanted = parts.split(",")
    rows = mac_peak(quick) if "peak" in wanted or "emulator" in wanted or "resnet" in wanted else []
    peak = max((r["gmacs"] for r in rows), default=0.0)
    if "emulator" in wanted:
        rows += emulator_rows(quick, peak)
    if "resnet" in wanted:
        rows.append(resnet_row(quick, peak))
    if "lava" in wanted:
        rows += lava_rows(quick)
    if "sparse" in wanted:
        rows += sparse_rows(quick)
    if "before_after" in wanted:
        rows += before_after_rows(quick)
    if "zero_rows" in wanted:
        rows += zero_rows_rows(quick)
    meta["load_after"] = _load()
    return {"rows": rows, "meta": meta, "markdown": markdown(rows, quick, meta)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small batches (a smoke run)")
    ap.add_argument("--parts", default="peak,emulator,resnet,lava,sparse,before_after,zero_rows")
    ap.add_argument("--torch-neurons", action="store_true",
                    help="the neuron recurrences through the torch runners only (the emulator before the fused kernels)")
    ap.add_argument("--out", default="speed_emulator", help="results file stem")
    args = ap.parse_args()
    if args.torch_neurons:
        from loihi_conv.emulate import fused
        fused.ENABLED = False
    res = run(args.quick, args.parts)
    RESULTS.mkdir(exist_ok=True)
    res["meta"]["fused"] = not args.torch_neurons
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": res["meta"], "rows": res["rows"]}, indent=2))
    (RESULTS / f"{args.out}.md").write_text(res["markdown"])
    print(res["markdown"])


if __name__ == "__main__":
    main()
