"""Float SNN simulation speed: ours (``loihi_conv.snn.simulate``, default recipe) vs SpikingJelly's
ann2snn simulation, on the same network (zoo ``fmnist_cnn`` ANN weights), the same 500
Fashion-MNIST test images and 2 torch threads each; plus 256 plain ANN forward passes.

    PYTHONPATH=. .venv/bin/python benchmarks/speed_float.py [--quick]

SpikingJelly runs in its own venv (``SJ_PYTHON``, default /work/side-venv-sj/bin/python; made by
benchmarks/setup_side_venv_sj.sh) through benchmarks/sj_float_sim.py; weights and images go
through a temporary .pt/.npz. Writes benchmarks/results/speed_float.{json,md} (``--quick``: 100
images, T 8 and 32, into speed_float_quick.*); ``run(quick)``
returns {"rows", "markdown"} for benchmarks/results/speed.md. Each time is one run: the machine
is shared, so the load average is reported next to the numbers.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loihi_conv.app.pipeline import calibration_data, test_data
from loihi_conv.app.zoo import get_model
from loihi_conv.convert import Recipe, convert
from loihi_conv.snn.simulate import simulate

RESULTS = Path(__file__).parent / "results"
SJ_SCRIPT = Path(__file__).parent / "sj_float_sim.py"
SJ_PYTHON = Path(os.environ.get("SJ_PYTHON", "/work/side-venv-sj/bin/python"))
MODEL, DATASET, THREADS = "fmnist_cnn", "fashion-mnist", 2
COMMAND = "PYTHONPATH=. .venv/bin/python benchmarks/speed_float.py"


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def _spikingjelly(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, calib: torch.Tensor,
                  timesteps: tuple[int, ...]) -> dict[int, dict] | str:
    """SpikingJelly's seconds/accuracy per T, or why it could not run."""
    if not SJ_PYTHON.exists():
        return (f"SpikingJelly side venv missing ({SJ_PYTHON}): create it with "
                "`bash benchmarks/setup_side_venv_sj.sh` (or point SJ_PYTHON at one)")
    with tempfile.TemporaryDirectory() as tmp:
        weights, data = Path(tmp) / "w.pt", Path(tmp) / "d.npz"
        torch.save(net.state_dict(), weights)
        np.savez(data, x=x.numpy(), y=y.numpy(), calib=calib.numpy())
        cmd = [str(SJ_PYTHON), str(SJ_SCRIPT), "--weights", str(weights), "--data", str(data),
               "--threads", str(THREADS), "--batch", "500"] + [a for T in timesteps for a in ("--T", str(T))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return f"SpikingJelly run failed: {proc.stderr.strip().splitlines()[-1:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["T"]: r for r in rows}


def _ours(snn, x, y, T: int, engine: str = "block"):
    t0 = time.perf_counter()
    res = simulate(snn, x, (T,), num_threads=THREADS, engine=engine, record=False)
    return time.perf_counter() - t0, res.accuracy(y)[T], res.output[T]


def _ann(net, x, passes: int) -> float:
    with torch.no_grad():
        net(x)
        t0 = time.perf_counter()
        for _ in range(passes):
            net(x)
        return time.perf_counter() - t0


def run(quick: bool = False) -> dict:
    timesteps = (8, 32) if quick else (8, 32, 64, 256)
    samples = 100 if quick else 500
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        net, _ = get_model(MODEL, train_if_missing=False)
        x, y = test_data(DATASET, samples)
        recipe = Recipe()
        calib = calibration_data(DATASET, recipe)
        snn = convert(net, calib, recipe, input_shape=tuple(x.shape[1:]))
        load = {"before": _load()}
        sj = _spikingjelly(net, x, y, calib, timesteps)
        load["after SpikingJelly"] = _load()
        rows = []
        for T in timesteps:
            secs, acc, out = _ours(snn, x, y, T)
            row = {"T": T, "samples": samples, "ours_s": round(secs, 2), "ours_acc": round(acc, 4)}
            if T == timesteps[-2]:  # the per-step reference engine once: its time, and that outputs match
                ref_s, _, ref_out = _ours(snn, x, y, T, engine="step")
                row.update(step_engine_s=round(ref_s, 2), identical_to_step_engine=bool(torch.equal(out, ref_out)))
            if isinstance(sj, dict) and T in sj:
                row.update(sj_s=round(sj[T]["seconds"], 2), sj_acc=sj[T]["accuracy"],
                           speedup=round(sj[T]["seconds"] / secs, 2))
            rows.append(row)
        ann_s = _ann(net.eval(), x, 256)
        load["after"] = _load()
    finally:
        torch.set_num_threads(before)
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    if isinstance(sj, dict) and sj:
        first = next(iter(sj.values()))
        versions.update(sj_torch=first["torch"], spikingjelly=first["spikingjelly"])
    cmd = COMMAND + (" --quick" if quick else "")
    lines = ["## Float simulator vs SpikingJelly", "",
             f"`{MODEL}` ({samples} Fashion-MNIST test images, batch 500, {THREADS} torch threads each), "
             "ours with the default recipe (if-soft, delay 1: T+4 steps), SpikingJelly "
             f"{versions.get('spikingjelly', '?')} ann2snn (`Converter(mode='max')`, torch "
             f"{versions.get('sj_torch', '?')}) in a side venv; ours on torch {versions['torch']}. "
             "One run each on a shared 2-core machine.", "",
             "| T | SpikingJelly s | ours s | speed-up | SJ acc | our acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r.get('sj_s', 'n/a')} | {r['ours_s']} | "
                     f"{str(r['speedup']) + 'x' if 'speedup' in r else 'n/a'} | {r.get('sj_acc', 'n/a')} | "
                     f"{r['ours_acc']} |")
    lines += ["", f"256 plain ANN forward passes of the same net on the same images: {ann_s:.2f} s "
              f"(ours at T={timesteps[-1]}: {rows[-1]['ours_s']} s)."]
    ref = [r for r in rows if "step_engine_s" in r]
    if ref:
        r = ref[0]
        lines.append(f"Per-step reference engine (`engine=\"step\"`, today's simulator before this change) at "
                     f"T={r['T']}: {r['step_engine_s']} s; outputs bit-identical to the default engine: "
                     f"{r['identical_to_step_engine']}.")
    if isinstance(sj, str):
        lines.append(f"SpikingJelly: not measured -- {sj}.")
    lines += [f"Load average (1/5/15 min): {'; '.join(f'{k} {v}' for k, v in load.items())}.", "",
              f"Command: `{cmd}`", ""]
    return {"rows": rows, "ann_256_passes_s": round(ann_s, 2), "load": load, "versions": versions,
            "spikingjelly_error": sj if isinstance(sj, str) else None, "command": cmd,
            "markdown": "\n".join(lines)}


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    out = run(quick=quick)
    RESULTS.mkdir(exist_ok=True)
    name = "speed_float_quick" if quick else "speed_float"  # a smoke run never overwrites the numbers
    (RESULTS / f"{name}.json").write_text(json.dumps({k: v for k, v in out.items() if k != "markdown"}, indent=1))
    (RESULTS / f"{name}.md").write_text(out["markdown"])
    print(out["markdown"])


if __name__ == "__main__":
    main()
