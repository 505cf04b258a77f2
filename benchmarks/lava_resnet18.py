"""torchvision resnet18 at 3x32x32 on Lava's CPU simulator, compared with the emulator (`verify`).

Random init with BN statistics randomized as benchmarks/coverage.py does (num_classes=10), a
seeded .npz of random images (the network is random too: this is a bit-exactness check, not an
accuracy one), then through the CLI only:

    loihi-conv convert --model torchvision:resnet18 --model-arg num_classes=10 --weights W.pt \
        --dataset D.npz --target if-soft -T 4 --no-search -o r18.net
    loihi-conv verify r18.net -n 1 -T 4 --json verify.json

`verify` runs T + depth steps, so every block has received input and spiked before the window
ends. Measured: wall time of each command, the peak memory of the whole process tree (Lava runs
one OS process per Lava process, forked: summed RSS counts the shared pages once per process, so
the proportional set size PSS is summed too; sampled every second with psutil) and the largest
number of processes alive at once.

    nice -n 10 .venv/bin/python benchmarks/lava_resnet18.py [--workdir runs/lava_r18] [-T 4]
Writes benchmarks/results/lava_resnet18.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"
CLI = str(Path(sys.executable).with_name("loihi-conv"))


def make_inputs(workdir: Path) -> tuple[Path, Path]:
    """resnet18 state dict (BN randomized), a seeded random-image .npz (1024 train = default calibration; 4 test)."""
    import numpy as np
    import torch
    import torchvision.models as tvm

    torch.manual_seed(0)
    model = tvm.get_model("resnet18", weights=None, num_classes=10).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # as coverage.py: otherwise every BN is the identity
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    weights = workdir / "resnet18_c10.pt"
    torch.save(model.state_dict(), weights)
    rng = np.random.default_rng(0)
    data = workdir / "random32.npz"
    np.savez(data, x_train=rng.random((1024, 3, 32, 32), dtype=np.float32), y_train=np.arange(1024) % 10,
             x_test=rng.random((4, 3, 32, 32), dtype=np.float32), y_test=np.arange(4) % 10)
    return weights, data


def measured(cmd: list[str]) -> dict:
    """Run ``cmd``; wall time, exit code, peak summed RSS of its process tree, most processes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_mb, peak_pss, most = 0.0, 0.0, 0
    out: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            rss = pss = 0
            for p in tree:
                try:
                    full = p.memory_full_info()
                    rss, pss = rss + full.rss, pss + full.pss
                except psutil.Error:
                    pass
            peak_mb, peak_pss, most = max(peak_mb, rss / 2 ** 20), max(peak_pss, pss / 2 ** 20), max(most, len(tree))
        except psutil.Error:
            pass
        time.sleep(1.0)
    reader.join()
    return {"command": " ".join(shlex.quote(c) for c in cmd), "exit": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb_tree": round(peak_mb),
            "peak_pss_mb_tree": round(peak_pss),
            "max_processes": most, "output_tail": "".join(out).splitlines()[-40:]}


def render(res: dict) -> str:
    m, runs, ver = res["meta"], res["runs"], res.get("verify", {})
    steps = ver.get("steps", "?")
    total = lambda key: sum(sum(d.values()) for d in ver.get(key, {}).values()) if ver else "?"  # noqa: E731
    mism, comp = total("mismatches"), total("compared")
    out = ["## Lava: torchvision resnet18 at 3x32x32, one sample, every state at every step", "",
           f"`{m['script']}` ({m['date']}, {m['machine']}, nice -n 10 on a shared machine). Random init, BN "
           f"statistics randomized, num_classes=10, if-soft, T={m['timesteps']}: {steps} steps (T + depth) so "
           "every block has received input before the window ends.", "",
           "| command | exit | wall s | peak memory, process tree (PSS / summed RSS) MB | processes |",
           "|---|---|---|---|---|"]
    for name, r in runs.items():
        out.append(f"| `{r['command'].replace(str(Path.cwd()) + '/', '')}` | {r['exit']} | {r['seconds']} | "
                   f"{r.get('peak_pss_mb_tree', '?')} / {r['peak_rss_mb_tree']} | {r['max_processes']} |")
    out += ["", f"verify: {mism} mismatches in {comp} compared values; Lava {round(ver.get('lava_seconds', 0))} s "
            f"of the wall time ({runs['verify']['max_processes']} OS processes); predictions Lava "
            f"{ver.get('lava_predictions')} / emulator {ver.get('emulator_predictions')}.", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/lava_r18")
    ap.add_argument("-T", "--timesteps", type=int, default=4)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    weights, data = make_inputs(work)
    net = work / "r18.net"
    T = str(args.timesteps)
    runs = {
        "convert": measured([CLI, "convert", "--model", "torchvision:resnet18", "--model-arg", "num_classes=10",
                             "--weights", str(weights), "--dataset", str(data), "--target", "if-soft", "-T", T,
                             "--no-search", "-o", str(net)]),
        "inspect": measured([CLI, "inspect", str(net)]),
    }
    vjson = work / "verify.json"
    runs["verify"] = measured([CLI, "verify", str(net), "-n", "1", "-T", T, "--json", str(vjson)])
    ver = json.loads(vjson.read_text()) if vjson.exists() else {}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "script": "benchmarks/lava_resnet18.py" + (f" -T {T}" if T != "4" else ""), "timesteps": int(T)}
    RESULTS.mkdir(exist_ok=True)
    res = {"meta": meta, "runs": runs, "verify": ver}
    (RESULTS / "lava_resnet18.json").write_text(json.dumps(res, indent=2))
    (RESULTS / "lava_resnet18.md").write_text(render(res))
    keys = ("exit", "seconds", "peak_rss_mb_tree", "peak_pss_mb_tree", "max_processes")
    print(json.dumps({k: {kk: v[kk] for kk in keys} for k, v in runs.items()}, indent=2))
    for line in runs["verify"]["output_tail"]:
        print(line)


if __name__ == "__main__":
    main()
