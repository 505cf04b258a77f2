"""Real-size networks through the CLI: convert (calibrate, normalize, quantize, save) -> inspect ->
emulate (batched, `score`), with each command's wall time, peak memory and progress output.

Models: torchvision resnet18 and vgg11 at 3x32x32, resnet18 at 3x224x224; random init with BN
statistics randomized as benchmarks/coverage.py does, num_classes=10; a seeded .npz of random
images (the weights are random: this measures the machinery, not accuracy). Every command runs in
a pseudo-terminal (``script``), so the progress bars a user sees are captured; peak memory is the
proportional set size (PSS) summed over the command's process tree, sampled every 0.5 s.

    loihi-conv convert --model torchvision:NAME --model-arg num_classes=10 --weights W.pt \
        --dataset D.npz --calib-size C --target if-soft -T 32 --no-search -o NAME.net
    loihi-conv inspect NAME.net --json NAME.inspect.json
    loihi-conv score NAME.net -n N -b B --json NAME.score.json

    nice -n 10 .venv/bin/python benchmarks/real_size.py [--work runs/real_size] [--only resnet18-32]
Writes benchmarks/results/real_size.json (and prints a markdown table for coverage.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"
CLI = str(Path(sys.executable).with_name("loihi-conv"))
# name: (builder, input size, training images = calibration size, test images scored, batch)
CASES = {"resnet18-32": ("resnet18", 32, 1024, 256, 256),
         "vgg11-32": ("vgg11", 32, 1024, 256, 256),
         "resnet18-224": ("resnet18", 224, 128, 16, 8)}


def make_inputs(work: Path, builder: str, size: int, n_train: int, n_test: int) -> tuple[Path, Path]:
    import numpy as np
    import torch
    import torchvision.models as tvm

    torch.manual_seed(0)
    model = tvm.get_model(builder, weights=None, num_classes=10).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # as coverage.py
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    weights = work / f"{builder}_c10.pt"
    torch.save(model.state_dict(), weights)
    data = work / f"random{size}.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, x_train=rng.random((n_train, 3, size, size), dtype=np.float32),
                 y_train=np.arange(n_train) % 10,
                 x_test=rng.random((n_test, 3, size, size), dtype=np.float32), y_test=np.arange(n_test) % 10)
    return weights, data


def measured(cmd: list[str]) -> dict:
    """Run ``cmd`` in a pseudo-terminal; wall time, exit, peak PSS of its tree, progress bars seen."""
    line = " ".join(shlex.quote(c) for c in cmd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(["script", "-qfec", line, "/dev/null"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak = 0.0
    chunks: list[bytes] = []
    import threading

    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(4096), b"")), daemon=True)
    reader.start()
    while proc.poll() is None:
        pss = 0
        try:
            for p in [root] + root.children(recursive=True):
                try:
                    pss += p.memory_full_info().pss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, pss / 2 ** 20)
        time.sleep(0.5)
    reader.join()
    text = b"".join(chunks).decode(errors="replace")
    frames = [f.strip() for f in re.split(r"[\r\n]", text) if f.strip()]
    bar = re.compile(r"^(.{2,60}?):\s+\d+%[| ]")  # tqdm: "desc:  50%|###  | 1/2" (or no bar when narrow)
    bars = sorted({m.group(1).strip() for f in frames for m in [bar.match(f)] if m})
    final = [f for f in frames if not bar.match(f)]
    return {"command": line, "exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "peak_pss_mb": round(peak), "progress_bars": bars, "output_tail": final[-30:]}


def render(res: dict) -> str:
    m = res["meta"]
    out = ["## Real size: convert -> quantize -> save -> inspect -> emulate, memory and progress", "",
           f"`{m['script']}` ({m['date']}, {m['machine']}; nice -n 10 on a shared machine). Random init, BN "
           "randomized, num_classes=10, if-soft T=32, `--no-search`; random images. Peak memory: PSS summed over "
           "the command's process tree. Progress: the bars the command drew in a terminal.", "",
           "| network | step | exit | wall s | peak MB | progress bars |", "|---|---|---|---|---|---|"]
    for case, row in res["cases"].items():
        for step, r in row["steps"].items():
            out.append(f"| {case} ({row['netx_mb']} MB NetX) | {step} | {r['exit']} | {r['seconds']} | "
                       f"{r['peak_pss_mb']} | {', '.join(r['progress_bars']) or '-'} |")
    out += ["", "What `inspect` says about the hardware:", ""]
    for case, row in res["cases"].items():
        t = row.get("inspect_totals") or {}
        tail = row["steps"].get("inspect", {}).get("output_tail", [])
        lines = [ln for ln in tail if "neurocores" in ln and "per" not in ln.split()[0]]
        out.append(f"* {case}: neurocores {t.get('cores')}, chips {t.get('chips')}, neurons {t.get('neurons')}, "
                   f"synapses {t.get('synapses')}")
        out += [f"  * `{ln.strip()[:300]}`" for ln in lines[:4]]
    out += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in next(iter(res['cases'].values()))['steps']
                                          .values()), ""]
    return "\n".join(out).replace(str(Path.cwd()) + "/", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/real_size")
    ap.add_argument("--only", default=",".join(CASES))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "real_size.json"
    res = json.loads(out_path.read_text()) if out_path.exists() else {"cases": {}}
    res["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{psutil.virtual_memory().total / 2 ** 30:.0f} GiB", "script": "benchmarks/real_size.py"}
    for case in args.only.split(","):
        builder, size, n_train, n_test, batch = CASES[case]
        weights, data = make_inputs(work, builder, size, n_train, n_test)
        net = work / f"{case}.net"
        steps = {"convert": measured([CLI, "convert", "--model", f"torchvision:{builder}", "--model-arg",
                                      "num_classes=10", "--weights", str(weights), "--dataset", str(data),
                                      "--calib-size", str(n_train), "--target", "if-soft", "-T", "32",
                                      "--no-search", "-o", str(net)])}
        if steps["convert"]["exit"] == 0:
            steps["inspect"] = measured([CLI, "inspect", str(net), "--json", str(work / f"{case}.inspect.json")])
            steps["score"] = measured([CLI, "score", str(net), "-n", str(n_test), "-b", str(batch),
                                       "--json", str(work / f"{case}.score.json")])
        row = {"builder": builder, "input": [3, size, size], "calib_images": n_train, "scored_images": n_test,
               "batch": batch, "netx_mb": round(net.stat().st_size / 2 ** 20, 1) if net.exists() else None,
               "steps": steps}
        ij = work / f"{case}.inspect.json"
        if ij.exists():
            row["inspect_totals"] = json.loads(ij.read_text()).get("totals")
        res["cases"][case] = row
        RESULTS.mkdir(exist_ok=True)
        out_path.write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS / "real_size.md").write_text(render(res))
        print(case, {k: (v["exit"], v["seconds"], v["peak_pss_mb"], v["progress_bars"]) for k, v in steps.items()},
              flush=True)


if __name__ == "__main__":
    main()
