"""Scale-out: wall time of `score` (emulator) and `evaluate` (float SNN over a T grid) with 1 and 2
worker processes and on a local Ray instance, each run as the exact CLI command a user types.

Usage: .venv/bin/python benchmarks/speed_scale.py [--quick | --markdown-only]
Writes benchmarks/results/speed_scale.json and speed_scale.md; ``run(quick)`` returns
{"rows": [...], "markdown": "..."} for a combined report. Every parallel run is checked against
the serial run's predictions / accuracies (column "= serial"). Wall times include process start,
imports, data loading and (Ray) cluster start-up: what a user waits for. On a 2-core machine 2x
is the ceiling.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "fmnist_cnn"
T_SCORE = 32
T_GRID = "8,16,32,64"
# (name, flags, environment): torch's default is one intra-op thread per core; on a shared,
# oversubscribed machine that can be slower than one thread, so both single-process forms are run.
RUNNERS = (("1 process", "", {}), ("1 process, 1 thread", "", {"OMP_NUM_THREADS": "1"}),
           ("2 workers", "--workers 2", {}), ("Ray local, 2 workers", "--ray local --workers 2", {}))


def _cli(args: str, extra_env: dict | None = None) -> tuple[float, str]:
    """Run ``loihi-conv ARGS`` in a fresh process; wall seconds and the command as typed."""
    extra_env = extra_env or {}
    cmd = "".join(f"{k}={v} " for k, v in extra_env.items()) + f"loihi-conv --quiet {args}"
    env = {**os.environ, **extra_env, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "loihi_conv.app.cli", "--quiet", *shlex.split(args)], check=True,
                   cwd=ROOT, env=env)
    return time.perf_counter() - t0, cmd


def run(quick: bool = False) -> dict:
    n_score, n_eval = (500, 250) if quick else (2000, 1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        net = f"{tmp}/{MODEL}.net"
        _cli(f"convert -m {MODEL} --target if-soft -T {T_SCORE} --no-search -o {net}")
        tasks = (("score", f"score {net} -n {n_score} --batch-size 500", "predictions", n_score, str(T_SCORE)),
                 ("evaluate", f"evaluate -m {MODEL} -T {T_GRID} -n {n_eval}", "snn_accuracy", n_eval, T_GRID))
        for task, args, key, n, ts in tasks:
            serial = None
            for name, flags, env in RUNNERS:
                out = f"{tmp}/{task}-{len(rows)}.json"
                load = os.getloadavg()[0]
                wall, cmd = _cli(f"{args} {flags} --json {out}".replace("  ", " "), env)
                got = json.loads(Path(out).read_text())
                serial = serial or (wall, got[key])
                rows.append({"task": task, "model": MODEL, "images": n, "T": ts, "runner": name, "seconds": wall,
                             "simulate_seconds": got.get("simulate_seconds", got.get("seconds")),
                             "speedup": serial[0] / wall, "equal_to_serial": got[key] == serial[1], "load_before": load,
                             "command": cmd.replace(tmp, "/tmp")})
    return {"rows": rows, "markdown": _markdown(rows, quick)}


def _markdown(rows: list[dict], quick: bool) -> str:
    lines = ["## Scale-out: `--workers` and `--ray`", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (so 2x is the ceiling), "
             f"shared with other jobs; {'quick run' if quick else 'full run'}. Wall time of the whole command "
             "(start, imports, data, pool or Ray start-up included); `engine s` is the time inside the "
             "emulator / simulator as the command reports it. `= serial`: predictions (score) or accuracy per T "
             "(evaluate) identical to the 1-process run; `load`: the machine's 1-minute load average when the "
             "command started (2.0 = both cores busy).", ""]
    load = sum(r["load_before"] for r in rows) / len(rows)
    if load > 1.5 * (os.cpu_count() or 1):
        lines += [f"**Measured on an oversubscribed machine** (mean load {load:.1f} on {os.cpu_count()} cores): the "
                  "workers competed with other jobs for the cores, so these are not scaling numbers; the identity "
                  "column holds regardless. Rerun on an idle machine for the speed-ups.", ""]
    lines += ["| task | images | T | runner | wall s | engine s | vs 1 process | vs 1 thread | = serial | load |",
              "|---|---:|---|---|---:|---:|---:|---:|---|---:|"]
    one_thread = {r["task"]: r["seconds"] for r in rows if r["runner"] == "1 process, 1 thread"}
    for r in rows:
        lines.append(f"| {r['task']} | {r['images']} | {r['T']} | {r['runner']} | {r['seconds']:.1f} | "
                     f"{r['simulate_seconds']:.1f} | {r['speedup']:.2f}x | {one_thread[r['task']] / r['seconds']:.2f}x | "
                     f"{'yes' if r['equal_to_serial'] else 'NO'} | {r['load_before']:.1f} |")
    lines += ["", "Commands (`/tmp/fmnist_cnn.net` made first with "
              f"`loihi-conv convert -m {MODEL} --target if-soft -T {T_SCORE} --no-search -o /tmp/{MODEL}.net`):", ""]
    lines += [f"    {r['command']}" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--markdown-only" in sys.argv[1:]:  # re-render the table of the last run's JSON
        rows = json.loads((RESULTS / "speed_scale.json").read_text())
        result = {"rows": rows, "markdown": _markdown(rows, quick=rows[0]["images"] < 2000)}
    else:
        result = run(quick="--quick" in sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed_scale.json").write_text(json.dumps(result["rows"], indent=2))
    (RESULTS / "speed_scale.md").write_text(result["markdown"])
    print(result["markdown"])
