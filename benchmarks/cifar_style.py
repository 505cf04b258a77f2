"""CIFAR-style VGG and ResNet (3x32x32, 10 classes) trained here, converted through the CLI with
default flags (the recipe search runs), scored on the full test set at T=32 (if-soft, sdnn).

No colour image set is reachable offline, so the data are ``loihi_conv.app.colour_shapes`` (10
classes of procedurally drawn coloured shapes/textures, class-independent colours, gradients,
distractors and noise; 10000 train / 2000 test, seed 0), given to the CLI twice: as a ``.npz``
and as an ImageFolder tree with ``--input-size 32 --mean M --std S`` (the same tensors).

Steps (each CLI command is recorded verbatim with its wall time):
  1. python -m loihi_conv.app.colour_shapes --out WORK
  2. train CifarVGG / CifarResNet below with loihi_conv.app.train.train_model (seeded, CPU)
  3. loihi-conv convert --model benchmarks/cifar_style.py:CifarVGG --weights WORK/cifar_vgg.pt
         --dataset WORK/colour_shapes.npz --target if-soft -T 32 -o WORK/cifar_vgg-if-soft-npz.net
     (and sdnn; and --dataset WORK/colour_shapes --input-size 32 --mean .. --std ..)
  4. loihi-conv score WORK/cifar_vgg-if-soft-npz.net --json ...   (full 2000-image test set)

    nice -n 10 .venv/bin/python benchmarks/cifar_style.py [--work runs/cifar_style] [--models vgg,resnet]
        [--targets if-soft,sdnn] [--views npz,folder]
Writes benchmarks/results/cifar_style.json and .md (rewritten after every step).
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

import torch
from torch import nn

from loihi_conv.app.zoo import BasicBlock  # the zoo ResNet's block: same modules, names and init order

RESULTS = Path(__file__).parent / "results"
CLI = str(Path(sys.executable).with_name("loihi-conv"))
T = 32


def _cbr(ci: int, co: int) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]


class CifarVGG(nn.Module):
    """VGG-style, 6 convs: [16, 16, pool, 32, 32, pool, 64, 64, pool] (avg) -> FC128 -> FC10 (narrow: CPU training)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *_cbr(3, 16), *_cbr(16, 16), nn.AvgPool2d(2),    # 32 -> 16
            *_cbr(16, 32), *_cbr(32, 32), nn.AvgPool2d(2),   # 16 -> 8
            *_cbr(32, 64), *_cbr(64, 64), nn.AvgPool2d(2),   # 8 -> 4
            nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(64 * 16, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CifarResNet(nn.Module):
    """ResNet-8: conv3 stem 16 + avgpool2 -> blocks 16 (16x16), 32/s2 (8x8), 64/s2 (4x4) -> avgpool4 -> FC10.

    The pool after the stem (as in ImageNet ResNets) quarters the cost of CPU training."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 16), nn.AvgPool2d(2))
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 64, stride=2)
        self.pool = nn.AvgPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layer3(self.layer2(self.layer1(self.stem(x)))))))


MODELS = {"vgg": ("cifar_vgg", CifarVGG), "resnet": ("cifar_resnet", CifarResNet)}
EPOCHS = {"vgg": 4, "resnet": 12}  # what fitted the session's CPU time (the machine was shared)


def _config(key: str):
    from loihi_conv.app.train import TrainConfig

    return TrainConfig(epochs=EPOCHS[key], batch_size=128, lr=3e-3, weight_decay=5e-4, augment="flip+shift")


def train(key: str, work: Path) -> dict:
    """Train model ``key`` on WORK/colour_shapes.npz (one thread: reproducible and fair on a shared
    machine); writes WORK/<name>.pt and WORK/<name>.json (ANN test accuracy, seconds)."""
    from loihi_conv.app.train import train_model

    name, cls = MODELS[key]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = cls()
    t1 = time.perf_counter()
    acc = train_model(model, str(work / "colour_shapes.npz"), _config(key), progress=False)
    info = {"ann": round(100 * acc, 2), "train_seconds": round(time.perf_counter() - t1)}
    torch.save(model.state_dict(), work / f"{name}.pt")
    (work / f"{name}.json").write_text(json.dumps(info) + "\n")
    print(f"{name}: ANN {info['ann']} % in {info['train_seconds']} s", flush=True)
    return info


def run(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return {"command": " ".join(shlex.quote(c) for c in cmd), "exit": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
            "output": (proc.stdout + proc.stderr).strip().splitlines()[-25:]}


def render(res: dict) -> str:
    m = res["meta"]
    out = ["# CIFAR-style VGG and ResNet (3x32x32), trained here, through the CLI with default flags", "",
           f"Data: `loihi_conv.app.colour_shapes` ({m['data']}). Fixed-point emulator accuracy on the full test set "
           f"at T={T} (`loihi-conv score`), each file made by `loihi-conv convert` with default recipe flags (the "
           "recipe search runs, 240 s budget). Targets (issue 14): if-soft >= ANN - 0.2, sdnn >= ANN - 0.3. "
           f"Run: `{m['script']}` on {m['machine']} ({m['date']}), nice -n 10, the machine shared.", "",
           "| model | ANN % | train s | view | target | fixed point % | gap | target met | convert s | score s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, mres in res["models"].items():
        for key, r in mres.get("runs", {}).items():
            view, target = key.split("/")
            acc = r.get("accuracy")
            gap = None if acc is None else round(acc - mres["ann"], 2)
            need = -0.2 if target == "if-soft" else -0.3
            out.append(f"| {name} | {mres['ann']:.2f} | {mres['train_seconds']} | {view} | {target} | "
                       f"{'' if acc is None else f'{acc:.2f}'} | {'' if gap is None else f'{gap:+.2f}'} | "
                       f"{'' if gap is None else ('yes' if gap >= need - 1e-9 else 'no')} | "
                       f"{r['convert']['seconds']} | {r.get('score', {}).get('seconds', '')} |")
    out += ["", "Why this data: no colour image set (CIFAR-10 or other) can be fetched offline here; colour_shapes "
            "keeps CIFAR's shape (3x32x32, 10 classes, uint8 pixels, colour carrying no label) with a "
            "procedural generator whose seed makes it reproducible. The networks were trained with "
            "`loihi_conv.app.train.train_model` (AdamW, one-cycle, flip+shift, seed 0, one thread): "
            + ", ".join(f"{n} {c['epochs']} epochs" for n, c in m.get("train_config", {}).items()) + ".",
            "", "The recipe search has a 240 s budget but checks it between trials: on this shared machine "
            "(load 11-17 on 2 cores) one trial (1000 held-out images at T=32) took ~19 min, so each search "
            "below ran 1 trial (its strongest start recipe); see the convert lines below. On an idle machine "
            "the same command runs several trials in its budget (benchmarks/results/recipe_search.md)."]
    missing = [f"{n} {v}/{t}" for n, mres in res["models"].items() for v in ("npz", "folder")
               for t in ("if-soft", "sdnn") if f"{v}/{t}" not in mres.get("runs", {})]
    if missing:
        out += ["", f"Not run in this session (the searches above took ~20 min each on the loaded machine): "
                f"{', '.join(missing)}. The folder view decodes to the .npz's tensors (tests/test_colour_shapes.py)."]
    out += [f"\n{note}" for note in res.get("notes", [])]  # what a later run changed (retraining, dropped rows)
    for e in res.get("extra", []):  # recipes typed by hand (no search), to see what closes a gap
        out += ["", f"By hand, {e['model']} {e['target']}: {e['accuracy']:.2f} % "
                f"({e['accuracy'] - res['models'][e['model']]['ann']:+.2f}): `{e['command']}`"]
    out += ["", "## Commands", ""]
    for name, mres in res["models"].items():
        for key, r in mres.get("runs", {}).items():
            out.append(f"* {name} {key}: `{r['convert']['command']}` then `{r.get('score', {}).get('command', '')}`")
            chosen = [line for line in r["convert"]["output"] if line.startswith(("recipe search (", "chosen:"))][:2]
            out += [f"  * {line.strip()}" for line in chosen]
    return "\n".join(out).replace(str(Path.cwd()) + "/", "") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/cifar_style")
    ap.add_argument("--models", default="vgg,resnet")
    ap.add_argument("--targets", default="if-soft,sdnn")
    ap.add_argument("--views", default="npz,folder")
    ap.add_argument("--train-only", action="store_true", help="only generate the data and train (e.g. two in parallel)")
    ap.add_argument("--results", default=str(RESULTS / "cifar_style.json"),
                    help="JSON to write (and .md beside it); runs in parallel each need their own")
    ap.add_argument("--merge", default=None, help="comma-separated result JSONs: merge their models into --results")
    args = ap.parse_args()
    from loihi_conv.app import colour_shapes

    work = Path(args.work)
    npz, folder, meta_json = work / "colour_shapes.npz", work / "colour_shapes", work / "colour_shapes.json"
    t0 = time.perf_counter()
    if not (npz.exists() and folder.is_dir() and meta_json.exists()):
        colour_shapes.main(["--out", str(work)])
    dmeta = json.loads(meta_json.read_text())
    mean, std = (",".join(f"{v:g}" for v in dmeta[k]) for k in ("mean", "std"))
    if args.train_only:
        for key in args.models.split(","):
            train(key, work)
        return
    res_path = Path(args.results)
    res = json.loads(res_path.read_text()) if res_path.exists() else {"models": {}}
    if args.merge:
        for other in args.merge.split(","):
            res["models"].update(json.loads(Path(other).read_text())["models"])
    res["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "script": "benchmarks/cifar_style.py", "T": T,
                   "data": f"{dmeta['train']} train / {dmeta['test']} test, seed {dmeta['seed']}, mean {mean}, "
                           f"std {std}; generated in {time.perf_counter() - t0:.0f} s",
                   "train_config": {k: _config(k).to_dict() for k in MODELS}}

    def save() -> None:
        res_path.parent.mkdir(parents=True, exist_ok=True)
        res_path.write_text(json.dumps(res, indent=2) + "\n")
        res_path.with_suffix(".md").write_text(render(res))

    if args.merge:
        save()
        return

    views = {"npz": [str(npz)], "folder": [str(folder), "--input-size", "32", "--mean", mean, "--std", std]}
    for key in args.models.split(","):
        name, cls = MODELS[key]
        weights = work / f"{name}.pt"
        mres = res["models"].setdefault(name, {"runs": {}})
        info_path = work / f"{name}.json"
        mres.update(json.loads(info_path.read_text()) if weights.exists() and info_path.exists() else train(key, work))
        save()
        spec = f"{Path(__file__).relative_to(Path.cwd()) if Path(__file__).is_relative_to(Path.cwd()) else __file__}" \
               f":{cls.__name__}"
        for view in args.views.split(","):
            for target in args.targets.split(","):
                net = work / f"{name}-{target}-{view}.net"
                r = {"convert": run([CLI, "convert", "--model", spec, "--weights", str(weights), "--dataset",
                                     *views[view], "--target", target, "-T", str(T), "-o", str(net)])}
                if r["convert"]["exit"] == 0:
                    sj = work / f"{name}-{target}-{view}.score.json"
                    r["score"] = run([CLI, "score", str(net), "--json", str(sj)])
                    if sj.exists():
                        r["accuracy"] = round(100 * json.loads(sj.read_text())["accuracy"], 2)
                mres["runs"][f"{view}/{target}"] = r
                print(f"{name} {view} {target}: {r.get('accuracy')} (ANN {mres['ann']})", flush=True)
                save()


if __name__ == "__main__":
    main()
