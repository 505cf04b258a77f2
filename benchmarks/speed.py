"""Issue 18's speed report from one run: float simulator vs SpikingJelly, emulator vs Lava and
vs the machine's multiply-accumulate peak, target parity, ResNet-18-32, scale-out.

Usage: .venv/bin/python benchmarks/speed.py [--quick] [--only float,emulator,scale]
Writes benchmarks/results/speed.json and speed.md. Each section is a module beside this one
(``speed_float``, ``speed_emulator``, ``speed_scale``) with ``run(quick) -> {"rows", "markdown"}``,
runnable alone too. Run it on an otherwise idle machine: every number is a wall time.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SECTIONS = {"float": "speed_float", "emulator": "speed_emulator", "scale": "speed_scale"}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average_start": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not the numbers to quote")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    info = machine()
    out = {"machine": info, "command": " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]]), "sections": {}}
    parts = []
    for key in [k.strip() for k in args.only.split(",") if k.strip()]:
        t0 = time.perf_counter()
        section = importlib.import_module(SECTIONS[key]).run(quick=args.quick)
        section["seconds"] = round(time.perf_counter() - t0, 1)
        out["sections"][key] = section
        parts.append(section["markdown"].strip())
        print(f"{key}: {section['seconds']} s", flush=True)
    info["load_average_end"] = os.getloadavg()
    head = (f"# Speed (issue 18), one run of `{out['command']}`\n\n"
            f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, torch {info['torch']}; "
            f"load average {info['load_average_start'][0]:.2f} at the start, {info['load_average_end'][0]:.2f} "
            f"at the end. Sections: {', '.join(out['sections'])}.\n")
    RESULTS.mkdir(exist_ok=True)
    name = "speed_quick" if args.quick else "speed"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1, default=str))
    (RESULTS / f"{name}.md").write_text("\n\n".join([head, *parts]) + "\n")
    print(f"wrote {RESULTS / name}.json and .md")


if __name__ == "__main__":
    main()
