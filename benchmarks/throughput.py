"""Emulator vs Lava CPU simulator throughput (sample·steps per second) on the same NetX file.

Usage: .venv/bin/python benchmarks/throughput.py [--model mnist_cnn] [--targets cuba,if-soft]
       [--timesteps 64] [--lava-samples 4] [--batch 1000] [--threads 1] [--repeats 3]
Writes benchmarks/results/throughput.json and throughput.md. Emulator rates are the best of
``--repeats`` runs (a shared machine only ever slows a run down).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from netx_export.lava_env import prepare

prepare()

import netx_export  # noqa: E402
from loihi_conv.app import models, pipeline  # noqa: E402
from loihi_conv.convert import Recipe  # noqa: E402
from loihi_conv.emulate import emulate  # noqa: E402
from loihi_conv.fixed.decode import encode, steps_for  # noqa: E402
from netx_export.runner import LavaRunner  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def emulator_rate(qnet, x_int, steps: int, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        emulate(qnet, x_int, steps)
        best = min(best, time.perf_counter() - t0)
    return len(x_int) * steps / best


def lava_rate(path, x_int, steps: int) -> tuple[float, float]:
    with LavaRunner(path) as r:
        r.run(x_int[0], steps)  # compile + first run excluded from the rate
        t0 = time.perf_counter()
        for i in range(1, len(x_int)):
            r.run(x_int[i], steps)
        wall = time.perf_counter() - t0
        return (len(x_int) - 1) * steps / wall, r.timing["compile_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--targets", default="cuba,if-soft")
    ap.add_argument("--timesteps", type=int, default=64)
    ap.add_argument("--lava-samples", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="emulator runs per rate (best kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ref = models.resolve(args.model)
    recipe = Recipe()
    snn, _ = pipeline.convert_model(ref, recipe)
    x, _ = pipeline.test_data(ref.dataset, max(args.batch, args.lava_samples))
    rows = []
    for target in args.targets.split(","):
        qnet = pipeline.quantize_snn(snn, ref, recipe, target, args.timesteps)
        path = netx_export.save(qnet, RESULTS / f".bench_{args.model}_{target}.net")
        qnet = netx_export.load(path)
        steps = steps_for(qnet, args.timesteps)
        x_int = encode(qnet, x)
        lava, compile_s = lava_rate(path, x_int[:args.lava_samples], steps)
        emu1 = emulator_rate(qnet, x_int[:1], steps, repeats=max(3, args.repeats))
        emub = emulator_rate(qnet, x_int[:args.batch], steps, repeats=args.repeats)
        rows.append({"model": args.model, "target": target, "steps": steps, "lava_sample_steps_per_s": lava,
                     "lava_compile_s": compile_s, "emulator_b1_sample_steps_per_s": emu1,
                     f"emulator_b{args.batch}_sample_steps_per_s": emub,
                     "speedup_b1": emu1 / lava, f"speedup_b{args.batch}": emub / lava})
        path.unlink(missing_ok=True)
    meta = {"threads": args.threads, "repeats": args.repeats,
            "machine": platform.processor() or platform.machine(),
            "cpus": torch.get_num_threads(), "torch": torch.__version__}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    b = args.batch
    lines = ["# Emulator vs Lava CPU simulator throughput", "",
             f"sample·steps per second, {args.model}, T={args.timesteps}, torch threads={args.threads}", "",
             f"| target | steps | Lava (batch 1) | emulator batch 1 | emulator batch {b} | speed-up b1 | speed-up b{b} |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['steps']} | {r['lava_sample_steps_per_s']:.1f} | "
                     f"{r['emulator_b1_sample_steps_per_s']:.0f} | {r[f'emulator_b{b}_sample_steps_per_s']:.0f} | "
                     f"{r['speedup_b1']:.0f}× | {r[f'speedup_b{b}']:.0f}× |")
    (RESULTS / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
