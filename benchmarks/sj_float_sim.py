"""SpikingJelly's ann2snn simulation of the Fashion-MNIST CNN, timed (run in the side venv made by
benchmarks/setup_side_venv_sj.sh; benchmarks/speed_float.py calls it through a subprocess).

Reads the ANN weights (a state_dict saved by torch.save) and an .npz with the test images, their
labels and the calibration images; converts with ``ann2snn.Converter(mode="max")`` (BN fused into
the conv, IF neurons with reset by subtraction, SpikingJelly's own threshold scaling) and runs it
the way SpikingJelly's ann2snn example does: ``reset_net`` per batch, then T single steps
summing the output. Prints one JSON line per T: seconds, accuracy.

    /work/side-venv-sj/bin/python benchmarks/sj_float_sim.py --weights W.pt --data D.npz --T 64 --T 256
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn


def conv_bn_relu(ci: int, co: int) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, 3, padding=1), nn.BatchNorm2d(co), nn.ReLU()]


class FashionCNN(nn.Module):
    """loihi_conv.app.zoo.FashionCNN, layer for layer (same state_dict keys)."""

    def __init__(self, widths=(32, 64, 128), hidden=128):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(*conv_bn_relu(1, w1), nn.AvgPool2d(2), *conv_bn_relu(w1, w2), nn.AvgPool2d(2),
                                      *conv_bn_relu(w2, w3), nn.AvgPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(w3 * 3 * 3, hidden), nn.ReLU(), nn.Dropout(0.3),
                                        nn.Linear(hidden, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--T", type=int, action="append", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spikingjelly import __file__ as sj_file  # noqa: F401  (fail here if it is missing)
    from spikingjelly.activation_based import ann2snn, functional

    data = np.load(args.data)
    x, y, calib = (torch.from_numpy(data[k]) for k in ("x", "y", "calib"))
    ann = FashionCNN()
    ann.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    ann.eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(calib, torch.zeros(len(calib))),
                                         batch_size=256)
    t0 = time.perf_counter()
    snn = ann2snn.Converter(mode="max", dataloader=loader)(ann).eval()
    convert_s = time.perf_counter() - t0
    import spikingjelly
    version = getattr(spikingjelly, "__version__", None)
    if version is None:
        from importlib.metadata import version as meta_version
        version = meta_version("spikingjelly")
    with torch.no_grad():
        for T in args.T:
            correct = 0
            t0 = time.perf_counter()
            for start in range(0, len(x), args.batch):
                xb = x[start:start + args.batch]
                functional.reset_net(snn)
                out = 0.0
                for _ in range(T):
                    out = out + snn(xb)
                correct += int((out.argmax(1) == y[start:start + args.batch]).sum())
            seconds = time.perf_counter() - t0
            print(json.dumps({"T": T, "seconds": seconds, "accuracy": correct / len(x), "convert_s": convert_s,
                              "torch": torch.__version__, "spikingjelly": version, "threads": args.threads,
                              "batch": args.batch}), flush=True)


if __name__ == "__main__":
    main()
