"""Which torchvision classification models loihi-conv converts end to end, and why the others not.

Every builder of ``torchvision.models.list_models(module=torchvision.models)`` (the
classification ones), random init with randomized BatchNorm statistics, input 3x32x32 (a larger
input only where the model cannot run on 32x32: alexnet 64, inception_v3 75, the transformers
224), goes through prepare -> convert (max norm, 64 random calibration images) -> float SNN ->
quantize (if-soft, T=32) -> save (NetX) -> emulate, each model in its own process (bounded by
``--timeout`` seconds). Recorded per model: time and peak resident memory (ru_maxrss) after each
step, the float SNN's agreement with the ANN at a large T on random inputs (relative max error of
the output and argmax agreement), the fixed point's argmax agreement with the float SNN at T=32,
and the NetX file size; or the refusal, one line per kind of unsupported layer.

Random weights make these agreement numbers a check of the machinery, not of accuracy.

    nice -n 10 .venv/bin/python benchmarks/coverage.py [--models resnet18,vgg11] [--timeout 600]
Writes benchmarks/results/coverage.json and coverage.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SIZES = {"alexnet": 64, "inception_v3": 75}  # models whose layers cannot shrink to 32x32
TRANSFORMERS = ("vit_", "swin_", "maxvit_")  # fixed 224x224 patch grids
BUILD_ARGS = {"googlenet": {"aux_logits": False, "init_weights": True},
              "inception_v3": {"aux_logits": False, "init_weights": True}}
T_FLOAT, T_FIXED, SAMPLES, CALIB = 256, 32, 4, 64
EXTRA_SECTIONS = ("lava_resnet18.md", "real_size.md")  # benchmarks/lava_resnet18.py, benchmarks/real_size.py
PRIORITY = ("resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "mobilenet_v2",
            "squeezenet1_0", "squeezenet1_1", "densenet121", "regnet_x_400mf", "alexnet", "googlenet")  # run first


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(name: str) -> dict:
    """One model through the whole pipeline (runs in a child process)."""
    import numpy as np
    import torch
    import torchvision.models as tvm

    from loihi_conv import api
    from loihi_conv.base.errors import LoihiConvError
    from loihi_conv.frontend.prepare import prepare

    torch.manual_seed(0)
    torch.set_num_threads(1)
    size = SIZES.get(name, 224 if name.startswith(TRANSFORMERS) else 32)
    row: dict = {"model": name, "input": [3, size, size], "steps": {}}

    def step(label: str, t0: float) -> None:
        row["steps"][label] = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(_rss_mb())}

    t0 = time.perf_counter()
    model = tvm.get_model(name, weights=None, **BUILD_ARGS.get(name, {})).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    row["parameters"] = sum(p.numel() for p in model.parameters())
    step("build", t0)
    shape = (3, size, size)
    try:
        t0 = time.perf_counter()
        graph = prepare(model, shape)
        step("prepare", t0)
        row["ir_nodes"] = len(graph.nodes)
        calib = torch.rand(CALIB, *shape, generator=gen)
        x = torch.rand(SAMPLES, *shape, generator=gen)
        t0 = time.perf_counter()
        snn = api.convert(graph, calib, api.Recipe(calib_size=CALIB, normalizer="max"))
        step("convert", t0)
        with torch.no_grad():
            ann = model(x)
        t0 = time.perf_counter()
        sim = api.simulate(snn, x, [T_FIXED, T_FLOAT], batch_size=SAMPLES)
        step("float_snn", t0)
        err = (sim.mean_output(T_FLOAT) - ann).abs().max() / ann.abs().max().clamp(min=1e-12)
        row["snn_vs_ann"] = {"T": T_FLOAT, "rel_max_error": float(err),
                             "argmax_agree": float((sim.predictions(T_FLOAT) == ann.argmax(1)).float().mean())}
        t0 = time.perf_counter()
        qnet = api.quantize(snn, "if-soft", timesteps=T_FIXED, calib=calib)
        step("quantize", t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            path = api.save(qnet, Path(tmp) / f"{name}.net")
            row["netx_mb"] = round(os.path.getsize(path) / 2 ** 20, 1)
            step("save", t0)
        t0 = time.perf_counter()
        emu = api.emulate(qnet, api.encode(qnet, x), api.steps_for(qnet, T_FIXED))
        step("emulate", t0)
        scores = torch.as_tensor(np.asarray(api.scores(qnet, emu.output, emu.readout)), dtype=torch.float64)
        ref = sim.output[T_FIXED].double()
        corr = torch.corrcoef(torch.stack([scores.flatten(), ref.flatten()]))[0, 1]  # scale-free
        row["fixed_vs_float"] = {"T": T_FIXED, "score_corr": float(corr),
                                 "argmax_agree": float((scores.argmax(1) == ref.argmax(1)).float().mean())}
        row["blocks"] = len(qnet.blocks)
        row["status"] = "converted"
    except LoihiConvError as e:
        last = list(row["steps"])[-1]
        row["status"] = "refused" if last == "build" else f"failed after {last}"
        row["reason"] = e.problem
        row["fix"] = e.fix
    return row


def _child(name: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--one", name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": f"timeout ({timeout:.0f} s)"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": name, "status": "error", "reason": tail}
    return json.loads(lines[-1])


def _reason_lines(row: dict) -> list[str]:
    text = row.get("reason", "")
    lines = [line.strip(" -") for line in text.splitlines()[1:]] or [text]
    return [line.replace("|", "/").replace(str(Path(sys.prefix)), "…") for line in lines]


def render(rows: list[dict], meta: dict) -> str:
    conv = [r for r in rows if r["status"] == "converted"]
    out = ["# torchvision classification models through loihi-conv", "",
           f"Random init, randomized BN statistics; {meta['samples']} random inputs; calibration "
           f"{meta['calib']} random images (max norm); {sum(not r['status'].startswith('not run') for r in rows)} of "
           f"{meta['models']} builders run; float SNN vs ANN at T={T_FLOAT}, fixed point "
           f"(if-soft) vs float SNN at T={T_FIXED}. {len(conv)} of {len(rows)} converted end to end. "
           "Machinery check on random weights, not accuracy: random logits of 1000 classes differ by "
           "tiny margins, so argmax agreement is fragile; the score correlation is the robust column. "
           f"Run: `{meta['command']}` on {meta['machine']} ({meta['date']}).", "",
           "| model | input | status | SNN vs ANN rel. err / argmax | fixed vs float score corr. / argmax | blocks | NetX MB | "
           "seconds (prepare, convert, float SNN, quantize, save, emulate) | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = r.get("steps", {})
        secs = ", ".join(f"{steps[k]['seconds']:g}" for k in ("prepare", "convert", "float_snn", "quantize", "save",
                                                               "emulate") if k in steps)
        peak = max((s["peak_rss_mb"] for s in steps.values()), default="")
        snn, fx = r.get("snn_vs_ann"), r.get("fixed_vs_float")
        snn_cell = f"{snn['rel_max_error']:.3f} / {snn['argmax_agree']:.2f}" if snn else ""
        fx_cell = f"{fx['score_corr']:.3f} / {fx['argmax_agree']:.2f}" if fx else ""
        inp = "x".join(map(str, r.get("input", [])))
        out.append(f"| {r['model']} | {inp} | {r['status']} | {snn_cell} | {fx_cell} | {r.get('blocks', '')} | "
                   f"{r.get('netx_mb', '')} | {secs} | {peak} |")
    refused = [r for r in rows if r["status"] != "converted"]
    if refused:
        out += ["", "## Refused or failed: one line per kind", ""]
        for r in refused:
            out.append(f"* **{r['model']}** ({r['status']}):")
            out += [f"  * {line}" for line in _reason_lines(r) if line]
    for extra in EXTRA_SECTIONS:  # written by their own scripts; kept in this page when it is rewritten
        if (RESULTS / extra).exists():
            out += ["", (RESULTS / extra).read_text().strip()]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated builders (default: all classification ones)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    import torchvision.models as tvm

    names = args.models.split(",") if args.models else tvm.list_models(module=tvm)
    names = [n for n in PRIORITY if n in names] + [n for n in names if n not in PRIORITY]
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": "benchmarks/coverage.py" + (f" --models {args.models}" if args.models else ""),
            "samples": SAMPLES, "calib": CALIB, "T_float": T_FLOAT, "T_fixed": T_FIXED, "models": len(names)}
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if not args.models else "_subset"
    rows = []
    for i, name in enumerate(names):  # results rewritten after every model: a stopped run keeps its rows
        t0 = time.perf_counter()
        rows.append(_child(name, args.timeout))
        print(f"[{i + 1}/{len(names)}] {name}: {rows[-1]['status']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        (RESULTS / f"coverage{suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (RESULTS / f"coverage{suffix}.md").write_text(render(rows, meta))


if __name__ == "__main__":
    main()
