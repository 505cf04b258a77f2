"""Write the tutorial notebooks (unexecuted) with nbformat: ``python notebooks/build_notebooks.py``.

The notebooks are generated from the cell sources below so that they stay reviewable as plain
Python. Each has a parameters cell (tagged ``parameters``, papermill-style) whose defaults are
the real settings; ``LOIHI_CONV_NOTEBOOK_SMALL=1`` switches to small, fast settings (the digits
model, a few images), which is what ``tests/test_notebooks.py`` runs. Outputs go to
``$LOIHI_CONV_NOTEBOOK_OUT`` (default ``runs/notebooks``) relative to the working directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

COMMON = '''\
import json
import os
import sys
import warnings
from pathlib import Path

from IPython.display import Image, display

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: plain bars

SMALL = os.environ.get("LOIHI_CONV_NOTEBOOK_SMALL") == "1"  # fast settings for tests / a quick look
OUT_ROOT = Path(os.environ.get("LOIHI_CONV_NOTEBOOK_OUT", "runs/notebooks"))
if SMALL:
    import torch

    torch.set_num_threads(1)  # tiny models: extra threads only add overhead (a lot on a busy machine)
'''


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str, parameters: bool = False):
    cell = new_code_cell(text.strip())
    if parameters:
        cell.metadata["tags"] = ["parameters"]
    return cell


# ---- 01 quickstart ---------------------------------------------------------------------------------
QUICKSTART = [
    md("""
# 01 · Quickstart: MNIST CNN → spiking network → NetX → Lava

This notebook walks the whole loihi-conv pipeline on the zoo's MNIST CNN:

1. load the trained ANN (trained on first use, then cached),
2. **convert** it into a spiking network (per-channel thresholds from calibration images),
3. evaluate the float SNN against the ANN for several readout windows *T*,
4. **quantize** it for a Loihi 2 target and **export** a NetX file,
5. run the file on the bit-exact **emulator** and on **Lava's CPU simulator**, and check that
   the two agree step by step.

The same steps are one command each: `loihi-conv evaluate`, `convert`, `run-lava`, `verify`
(`loihi-conv demo` runs them all).
"""),
    code(COMMON + '''
# Parameters (real settings; SMALL uses the 8x8 digits model and a few images)
MODEL = "digits_cnn" if SMALL else "mnist_cnn"
TARGET = "if-soft"       # "cuba" runs on Loihi 2 as is; "if-soft" is more accurate (custom neuron)
T = 16 if SMALL else 32  # readout window the file is quantized for
TIMESTEPS = (4, 8, 16, 32) if SMALL else (8, 16, 32, 64, 128)
SAMPLES = 100 if SMALL else 1000    # test images for ANN / float SNN / emulator
LAVA_SAMPLES = 2 if SMALL else 10   # test images on Lava's CPU simulator (slow: ~0.1 s/step)
OUT = OUT_ROOT / "01_quickstart"
OUT.mkdir(parents=True, exist_ok=True)
''', parameters=True),
    md("## 1. The trained model"),
    code('''
from loihi_conv.app import models, pipeline
from loihi_conv.convert import Recipe

ref = models.resolve(MODEL, progress=False)
print(f"{ref.name}: dataset {ref.dataset}, input {ref.input_shape}, "
      f"test accuracy when trained {100 * ref.info['test_accuracy']:.2f}%")
ref.module
'''),
    md("""
## 2. Convert to a spiking network

The default `Recipe` is the low-latency setup from the papers: channel-wise 99.99th-percentile
thresholds on 1024 training images, integrate-and-fire neurons with reset by subtraction.
The result is an SNN graph: every ReLU became a spiking `Neuron` with a threshold per channel.
"""),
    code('''
recipe = Recipe()
snn, seconds = pipeline.convert_model(ref, recipe)
print(f"converted in {seconds:.1f} s")
print(snn.summary())
'''),
    md("## 3. Float SNN accuracy against the ANN"),
    code('''
ev = pipeline.evaluate(ref, recipe, TIMESTEPS, SAMPLES)
print(ev.table())
'''),
    md("""
## 4. Quantize for Loihi 2 and export a NetX file

The quantization report lists every block's scale, the bits its weights use, and the worst-case
and observed ranges of its integer states against Loihi's 24-bit limits.
"""),
    code('''
import netx_export
from loihi_conv.app.resources import inspect_network
from loihi_conv.emulate.quant_report import report as quant_report

qnet = pipeline.quantize_snn(snn, ref, recipe, TARGET, T)
x_calib = pipeline.calibration_data(ref.dataset, recipe)
print(quant_report(qnet, calib=x_calib[:16]))
path = netx_export.save(qnet, OUT / f"{MODEL}_{TARGET}_T{T}.net")
ins = inspect_network(netx_export.load(path))
print(f"\\nwrote {path}: {ins.neurons:,} neurons, {ins.synapses:,} synapses, "
      f"about {ins.cores[0]}..{ins.cores[1]} Loihi 2 neurocores")
for w in ins.warnings:
    print("warning:", w)
'''),
    md("## 5. Emulator and Lava"),
    code('''
emu_acc, emu_seconds = pipeline.emulator_accuracy(qnet, ref.dataset, T, SAMPLES)
print(f"emulator ({TARGET}, T={T}): {100 * emu_acc:.2f}% on {SAMPLES} images in {emu_seconds:.1f} s")
'''),
    md("""
`verify` runs each image through Lava's CPU simulator (`Loihi2SimCfg('fixed_pt')`) and the
emulator and compares every block's spikes and neuron states at every step.
"""),
    code('''
import numpy as np
from loihi_conv.app.verify import verify

x, y = pipeline.test_data(ref.dataset, LAVA_SAMPLES)
ver = verify(netx_export.load(path), x, T)
print(ver.table())
lava_acc = float((np.asarray(ver.lava_predictions) == y.numpy()).mean())
print(f"\\n{ver.total_mismatches} mismatches in {ver.total_compared:,} compared values; "
      f"Lava accuracy {100 * lava_acc:.1f}% on {LAVA_SAMPLES} images, "
      f"predictions equal to the emulator's: {ver.lava_predictions == ver.emulator_predictions}")
'''),
    md("## 6. Side by side"),
    code('''
from loihi_conv.app import plots

summary = {"model": MODEL, "target": TARGET, "T": T, "samples": SAMPLES, "ann": ev.ann_accuracy,
           "snn_float": ev.snn_accuracy.get(T), "emulator": emu_acc, "lava": lava_acc,
           "lava_samples": LAVA_SAMPLES, "mismatches": ver.total_mismatches, "file": str(path)}
for name, key in [("ANN", "ann"), (f"float SNN, T={T}", "snn_float"), (f"emulator {TARGET}", "emulator"),
                  (f"Lava {TARGET} ({LAVA_SAMPLES} images)", "lava")]:
    if summary[key] is not None:
        print(f"{name:34s} {100 * summary[key]:6.2f}%")
(OUT / "summary.json").write_text(json.dumps(summary, indent=2))

fig = plots.accuracy_vs_t({"float SNN": ev.snn_accuracy, f"emulator ({TARGET})": {T: emu_acc}},
                          ev.ann_accuracy, MODEL, SAMPLES)
display(Image(plots.save(fig, OUT, "accuracy")["png"]))
'''),
    md("""
**Next:** `02_bring_your_own_model.ipynb` converts your own PyTorch model;
`03_low_latency_methods.ipynb` compares the conversion options; `loihi-conv report` draws
per-layer errors, firing rates, a spike raster and the backend agreement.
"""),
]

# ---- 02 bring your own model -----------------------------------------------------------------------
BYOM = [
    md("""
# 02 · Bring your own model

Your model lives in a Python file (`module.py:ClassName`) and its weights in a state dict
(`torch.save(model.state_dict(), ...)`); loihi-conv loads the weights with
`weights_only=True`. Here the notebook writes a small CNN to `module.py`, trains it briefly and
converts it twice -- through the Python API and through the CLI -- and checks that both give
the same NetX file, byte for byte.

**Convertible layers:** `Conv2d`, `Linear`, `BatchNorm` right after a conv/linear, `ReLU`,
`AvgPool2d`, `Flatten`, `Dropout`, residual `+`; the input is the raw image in [0, 1]; the last
layer is a `Linear` without ReLU.
"""),
    code(COMMON + '''
# Parameters
DATASET = "digits" if SMALL else "mnist"
EPOCHS = 10 if SMALL else 2
BATCH = 32 if SMALL else 128
TARGET = "cuba"         # standard NetX: runs on Loihi 2 without custom microcode
T = 32
SAMPLES = 100 if SMALL else 1000
CALIB_SIZE = 256 if SMALL else 1024  # calibration (training) images
OUT = OUT_ROOT / "02_bring_your_own_model"
OUT.mkdir(parents=True, exist_ok=True)
''', parameters=True),
    md("## 1. A model in its own file"),
    code('''
from loihi_conv.app.data import dataset_info

info = dataset_info(DATASET)
c, h, w = info.input_shape
flat = 16 * ((h - 2) // 2 - 2) * ((w - 2) // 2 - 2)
(OUT / "module.py").write_text(f"""
import torch.nn as nn


class MyNet(nn.Module):
    \\"\\"\\"conv3-BN-ReLU -> avgpool2 -> conv3-ReLU -> flatten -> linear ({info.num_classes} classes).\\"\\"\\"

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d({c}, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear({flat}, {info.num_classes})

    def forward(self, x):
        return self.head(self.body(x))
""")
print((OUT / "module.py").read_text())
'''),
    md("## 2. Train it briefly and save the state dict"),
    code('''
import importlib.util

import torch
from loihi_conv.app.data import load_dataset

spec = importlib.util.spec_from_file_location("module", OUT / "module.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

torch.manual_seed(0)
net = module.MyNet()
x_train, y_train = load_dataset(DATASET, "train")
opt = torch.optim.Adam(net.parameters(), lr=3e-3)
for epoch in range(EPOCHS):
    net.train()
    perm = torch.randperm(len(x_train))
    for i in range(0, len(perm), BATCH):
        idx = perm[i:i + BATCH]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
    print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}")
net.eval()
torch.save(net.state_dict(), OUT / "weights.pt")
'''),
    md("""
## 3. Convert through the Python API

`models.resolve("path/module.py:Class", weights, dataset)` imports the class, builds it without
arguments and loads the state dict; everything after that is the same as for zoo models.
"""),
    code('''
import netx_export
from loihi_conv.app import models, pipeline
from loihi_conv.convert import Recipe

spec_str = f"{OUT / 'module.py'}:MyNet"
ref = models.resolve(spec_str, str(OUT / "weights.pt"), DATASET)
recipe = Recipe(calib_size=CALIB_SIZE)
ev = pipeline.evaluate(ref, recipe, (8, 16, T), SAMPLES)
print(ev.table())

snn, _ = pipeline.convert_model(ref, recipe)
qnet = pipeline.quantize_snn(snn, ref, recipe, TARGET, T)
api_path = netx_export.save(qnet, OUT / "api.net")
emu_acc, _ = pipeline.emulator_accuracy(qnet, DATASET, T, SAMPLES)
print(f"emulator ({TARGET}, T={T}): {100 * emu_acc:.2f}%  ->  {api_path}")
'''),
    md("""
## 4. The same through the CLI

`--model path/module.py:Class --weights state.pt --dataset NAME` works with every command
(`evaluate`, `convert`, `report`, ...). Exit status 2 means bad input; the message says how to fix it.
"""),
    code('''
import shutil
import subprocess

cli = shutil.which("loihi-conv") or str(Path(sys.executable).with_name("loihi-conv"))
args = ["convert", "--model", spec_str, "--weights", str(OUT / "weights.pt"), "--dataset", DATASET,
        "--target", TARGET, "--timesteps", str(T), "--calib-size", str(CALIB_SIZE), "--no-search",
        "--out", str(OUT / "cli.net")]
done = subprocess.run([cli, "--quiet", *args], capture_output=True, text=True)
print("$ loihi-conv", " ".join(args))
print("exit status", done.returncode, done.stderr[-2000:])
same = (OUT / "cli.net").read_bytes() == api_path.read_bytes()
print("CLI file identical to the API file:", same)
'''),
    code('''
done = subprocess.run([cli, "inspect", str(OUT / "cli.net")], capture_output=True, text=True)
print(done.stdout.split("\\n\\nLoihi 2 limits used")[0])
'''),
    md("""
## 5. When a model cannot be converted

Layers without a spiking equivalent are refused with a message naming the layer and the fix:
"""),
    code('''
from loihi_conv.convert import convert
from loihi_conv.base.errors import LoihiConvError

bad = torch.nn.Sequential(torch.nn.Conv2d(c, 4, 3), torch.nn.Sigmoid(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * (h - 2) * (w - 2), 10))
try:
    convert(bad, x_train[:64])
except LoihiConvError as e:
    print("LoihiConvError:", e)

summary = {"dataset": DATASET, "ann": ev.ann_accuracy, "snn_float": ev.snn_accuracy[T], "emulator": emu_acc,
           "cli_exit": done.returncode, "cli_identical": same}
(OUT / "summary.json").write_text(json.dumps(summary, indent=2))
summary
'''),
]

# ---- 03 low-latency methods ------------------------------------------------------------------------
METHODS = [
    md("""
# 03 · Low-latency conversion: comparing the options

A converted network's accuracy at small *T* depends on how thresholds are chosen and how the
neurons work. This notebook converts one model with each option and compares:

| option | what it does | source |
|---|---|---|
| `normalizer="max"`, layer-wise | threshold = max activation of the layer | Diehl et al. 2015 |
| `normalizer="percentile"` (p = 99.9, 99.99) | robust to outliers: the p-th percentile | Rueckauer et al. 2016 |
| `granularity="channel"` | one threshold per channel | Kim et al. 2019 (Spiking-YOLO) |
| `neuron_model="if-zero"` vs `"if-soft"` | reset to zero vs reset by subtraction | Rueckauer et al. 2016, eq. 4-5 |
| `v_init=0.5` | start at half the threshold ("unbiased quantization") | Li et al. (RetinaNet conversion) |

Each option is one `Recipe` field; on the command line the same options are
`--normalizer`, `--percentile`, `--granularity`, `--neuron`, `--v-init`.
"""),
    code(COMMON + '''
# Parameters
MODEL = "digits_cnn" if SMALL else "mnist_cnn"
TIMESTEPS = (4, 8, 16, 32) if SMALL else (4, 8, 16, 32, 64, 128)
SAMPLES = 100 if SMALL else 500
CALIB_SIZE = 256 if SMALL else 1024  # calibration (training) images per conversion
DETAIL_T = 16  # window for the per-layer error plots (one of TIMESTEPS)
OUT = OUT_ROOT / "03_low_latency_methods"
OUT.mkdir(parents=True, exist_ok=True)
''', parameters=True),
    code('''
from loihi_conv.app import models, pipeline, plots
from loihi_conv.convert import Recipe

ref = models.resolve(MODEL, progress=False)
base = Recipe(calib_size=CALIB_SIZE)
OPTIONS = {
    "max, layer (Diehl 2015)": base.replace(normalizer="max", granularity="layer"),
    "p99.99, layer (Rueckauer 2016)": base.replace(granularity="layer"),
    "p99.9, channel": base.replace(percentile=99.9),
    "p99.99, channel (default)": base,
    "p99.99, channel, reset to zero": base.replace(neuron_model="if-zero"),
    "p99.99, channel, v_init 0.5": base.replace(v_init=0.5),
}
'''),
    md("""
## Convert and simulate every option

One float-SNN simulation per option gives the accuracy at every T and, at `DETAIL_T`, the
per-layer activation error: per channel `||x - s||² / ||x||²` between the ANN activation x and
the SNN's estimate s = rate × threshold (Li et al., parameter calibration, Fig. 5).
"""),
    code('''
from loihi_conv.frontend.prepare import prepare
from loihi_conv.frontend.ops import forward
from loihi_conv.app.report import channel_relative_error
from loihi_conv.snn.simulate import simulate

x, y = pipeline.test_data(ref.dataset, SAMPLES)
ann_out, ann_acts = forward(prepare(ref.module, ref.input_shape), x, record=True)
ann = float((ann_out.argmax(1) == y).float().mean())
accuracy, errors = {}, {}
for name, recipe in OPTIONS.items():
    snn, _ = pipeline.convert_model(ref, recipe)
    sim = simulate(snn, x, TIMESTEPS, delay=recipe.delay, record="neuron")
    accuracy[name] = sim.accuracy(y)
    errors[name] = {layer: channel_relative_error(ann_acts[layer], s) for layer, s in sim.activations(DETAIL_T).items()}
    print(f"{name:32s} " + "  ".join(f"T={T}: {100 * a:5.1f}%" for T, a in accuracy[name].items()))
print(f"{'ANN':32s} {100 * ann:.2f}%")
'''),
    md("## Accuracy vs T"),
    code('''
fig = plots.accuracy_vs_t(accuracy, ann, f"{MODEL}: conversion options", SAMPLES)
display(Image(plots.save(fig, OUT, "accuracy_options")["png"]))
'''),
    md("""
## Where the error comes from: per-layer activation error

Error grows with depth; better thresholds and `v_init` shrink it.
"""),
    code('''
compare = ["max, layer (Diehl 2015)", "p99.99, channel (default)", "p99.99, channel, v_init 0.5"]
fig = plots.layer_error_compare({name: errors[name] for name in compare}, DETAIL_T, MODEL)
display(Image(plots.save(fig, OUT, "layer_error_options")["png"]))
'''),
    md("## Summary"),
    code('''
import numpy as np

for T in TIMESTEPS:
    best = max(accuracy, key=lambda k: accuracy[k][T])
    print(f"T={T:4d}: best {best} ({100 * accuracy[best][T]:.2f}%)")
summary = {"model": MODEL, "samples": SAMPLES, "ann": ann,
           "accuracy": {k: {str(T): a for T, a in v.items()} for k, v in accuracy.items()},
           "median_layer_error": {k: {layer: float(np.median(e)) for layer, e in v.items()} for k, v in errors.items()}}
_ = (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
'''),
]

# ---- NIR to Lava ---------------------------------------------------------------------------------
NIR_TO_LAVA = [
    md("""
# NIR → Lava: a spiking network from snnTorch onto Loihi 2's simulator

[NIR](https://github.com/neuromorphs/NIR) is how spiking networks move between libraries. Here a
small convolutional LIF network built and exported by **snnTorch** (its own `export_to_nir`;
`tests/fixtures/nir/make_fixtures.py` made it, together with snnTorch's spike counts on a fixed
input) is

1. read with loihi-conv's guarded NIR reader and mapped into its SNN IR (docs/nir.md),
2. simulated in float and compared with snnTorch's own spike counts, layer by layer,
3. quantized for the standard NetX `cuba` target, written as a NetX file,
4. run on **Lava's CPU simulator** and on the bit-exact emulator, compared at every step.

CLI: `loihi-conv convert --model snntorch_conv.nir --dataset data.npz --nir-dt 1e-4 --target cuba -o net.net`.
"""),
    code(COMMON + """
# Parameters
import loihi_conv

FIXTURE = Path(loihi_conv.__file__).resolve().parents[1] / "tests" / "fixtures" / "nir" / "snntorch_conv"
DT = 1e-4            # snnTorch writes tau = dt / (1 - beta) with dt = 1e-4: the step to import with
TARGET = "cuba"      # standard NetX: Lava's LIF with the NIR decays (1/4096 units)
T = 8                # readout window the file is quantized for
LAVA_SAMPLES = 1 if SMALL else 4
OUT = OUT_ROOT / "nir_to_lava"
OUT.mkdir(parents=True, exist_ok=True)
""", parameters=True),
    md("## 1 · Read the NIR file"),
    code("""
import numpy as np
import torch

from loihi_conv import api
from loihi_conv.interop import read

graph = read(FIXTURE.with_suffix(".nir"))
ref = np.load(FIXTURE.with_suffix(".npz"))
print("made by", graph.metadata.get("library"))
for name, node in graph.nodes.items():
    print(f"  {name:8s} {type(node).__name__}")
snn = api.load_nir(graph, dt=DT)
print(snn.summary())
"""),
    md("## 2 · Float simulation vs snnTorch (same input, same steps, NIR's same-step timing)"),
    code("""
x = torch.as_tensor(ref["x"])
steps = int(ref["T"])
res = api.simulate(snn, x, [steps], delay=0, record="neuron")
agree = {}
for key in [k for k in ref.files if k.startswith("counts_")]:
    layer = key[len("counts_"):]
    lib, ours = ref[key], res.counts[steps][layer].numpy()
    agree[layer] = int(np.abs(lib - ours).sum())
    print(f"layer {layer}: snnTorch {int(lib.sum())} spikes, loihi-conv {int(ours.sum())}, "
          f"differing counts {agree[layer]}")
"""),
    md("## 3 · Quantize and export NetX"),
    code("""
qnet = api.quantize(snn, TARGET, timesteps=T, calib=x)
path = api.save(qnet, OUT / "snntorch_conv.net")
print(api.report(qnet))
print("wrote", path)
"""),
    md("## 4 · Lava vs the emulator, every state of every block at every step"),
    code("""
from loihi_conv.app.verify import verify

ver = verify(api.load(path), x[:LAVA_SAMPLES], T)
print(ver.table())
print(f"{ver.total_mismatches} mismatches in {ver.total_compared} compared values")
summary = {"library": str(graph.metadata.get("library")), "float_vs_library": agree,
           "mismatches": ver.total_mismatches, "compared": ver.total_compared, "file": str(path)}
_ = (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
"""),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_bring_your_own_model.ipynb": BYOM,
    "03_low_latency_methods.ipynb": METHODS,
    "nir_to_lava.ipynb": NIR_TO_LAVA,
}


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook (no outputs) into ``out_dir``; returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (loihi-conv .venv)",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        path = out_dir / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print("wrote", p)
