"""Model zoo: small convertible CNNs, trained once on CPU and cached; plus user-model loading.

Convertible means: Conv2d, Linear, BatchNorm2d/1d, ReLU (module or ``F.relu``), AvgPool2d,
MaxPool2d, Flatten, Dropout and residual ``+`` only; input is the raw [0, 1] image (N, C, H, W),
no normalisation layer; the last layer is a Linear without ReLU (the SNN's readout).
Models are kept small so Lava's CPU simulator can run them.

Checkpoints: ``cache_dir()/models/<name>-<hash>.pt`` (a state_dict, loaded with
``weights_only=True``) and a sidecar ``.json`` of metrics; the hash covers the model's source,
its structure and its training config, so editing either retrains instead of loading stale
weights.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv.app.data import cache_dir, dataset_info
from loihi_conv.app.train import TrainConfig, train_model
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.files import atomic_write, refuse_code_archive


# --------------------------------------------------------------------------- models
class MnistCNN(nn.Module):
    """conv5(1->16)+BN+ReLU -> pool2 -> conv5(16->32)+BN+ReLU -> pool2 -> FC128 -> FC10.

    ``pool`` picks average or max pooling; the hidden FC uses functional ``F.relu`` on purpose
    (the tracer must handle both spellings).
    """

    def __init__(self, pool: type[nn.Module] = nn.AvgPool2d):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), pool(2),   # 28 -> 24 -> 12
            nn.Conv2d(16, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), pool(2),  # 12 -> 8 -> 4
            nn.Flatten(),
        )
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.drop(F.relu(self.fc1(x)))
        return self.fc2(x)


def _conv_bn_relu(ci: int, co: int) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, 3, padding=1), nn.BatchNorm2d(co), nn.ReLU()]


class FashionVGG(nn.Module):
    """VGG-style: 2 x [conv3-BN-ReLU x2, avgpool2] (32, 64 channels) -> FC128 -> FC10."""

    def __init__(self, widths: tuple[int, int] = (32, 64), hidden: int = 128):
        super().__init__()
        w1, w2 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(1, w1), *_conv_bn_relu(w1, w1), nn.AvgPool2d(2),   # 28 -> 14
            *_conv_bn_relu(w1, w2), *_conv_bn_relu(w2, w2), nn.AvgPool2d(2),  # 14 -> 7
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(w2 * 7 * 7, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FashionCNN(nn.Module):
    """3 x [conv3-BN-ReLU, avgpool2] (32, 64, 128 channels; 28 -> 14 -> 7 -> 3) -> FC128 -> FC10.

    One conv per stage keeps it at about 44k neurons (the VGG has about 75k), so Lava's CPU
    simulator runs it in seconds per image.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), hidden: int = 128):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(1, w1), nn.AvgPool2d(2),   # 28 -> 14
            *_conv_bn_relu(w1, w2), nn.AvgPool2d(2),  # 14 -> 7
            *_conv_bn_relu(w2, w3), nn.AvgPool2d(2),  # 7 -> 3 (the last row and column dropped)
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(w3 * 3 * 3, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity when shapes match, else a strided 1x1 conv + BN.
    """

    def __init__(self, ci: int, co: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(co, co, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.relu2 = nn.ReLU()
        if stride == 1 and ci == co:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(ci, co, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(co))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class FashionResNet(nn.Module):
    """Stem conv3(1->16)+pool2 -> blocks 16 (identity), 32/s2, 64 (1x1 shortcuts) -> pool7 -> FC10.

    Pooling right after the stem keeps every block at 14x14 or below (cheap to train on CPU
    and to simulate in Lava).
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(*_conv_bn_relu(1, w1), nn.AvgPool2d(2))  # 28 -> 14
        self.layer1 = BasicBlock(w1, w1)              # 14, identity shortcut
        self.layer2 = BasicBlock(w1, w2, stride=2)    # 7, strided 1x1 conv shortcut
        self.layer3 = BasicBlock(w2, w3)              # 7, 1x1 conv shortcut (channels change)
        self.pool = nn.AvgPool2d(7)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


class DigitsCNN(nn.Module):
    """Tiny CNN for 8x8 sklearn digits: conv3(1->8)+BN+ReLU -> pool2 -> conv3(8->16) -> FC10."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),  # 8 -> 4
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),  # 4 -> 2
            nn.Flatten(), nn.Linear(16 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- registry
class ZooEntry(NamedTuple):
    builder: Callable[[], nn.Module]
    dataset: str
    config: TrainConfig


ZOO: dict[str, ZooEntry] = {
    "mnist_cnn": ZooEntry(MnistCNN, "mnist", TrainConfig(epochs=6, batch_size=128, lr=2e-3)),
    "mnist_cnn_maxpool": ZooEntry(lambda: MnistCNN(pool=nn.MaxPool2d), "mnist",
                                  TrainConfig(epochs=6, batch_size=128, lr=2e-3)),
    "fmnist_vgg": ZooEntry(FashionVGG, "fashion-mnist",
                           TrainConfig(epochs=7, batch_size=128, lr=2e-3, weight_decay=5e-4,
                                       augment="flip")),
    "fmnist_cnn": ZooEntry(FashionCNN, "fashion-mnist",
                           TrainConfig(epochs=8, batch_size=128, lr=2e-3, weight_decay=5e-4,
                                       augment="flip")),
    "fmnist_resnet": ZooEntry(FashionResNet, "fashion-mnist",
                              TrainConfig(epochs=6, batch_size=128, lr=3e-3, weight_decay=5e-4,
                                          augment="flip")),
    "digits_cnn": ZooEntry(DigitsCNN, "digits",
                           TrainConfig(epochs=20, batch_size=64, lr=1e-2)),
}


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise LoihiConvError(f"unknown zoo model {name!r}", f"use one of: {', '.join(ZOO)}")
    return ZOO[name]


def build_model(name: str) -> nn.Module:
    """Build zoo model ``name`` with seeded (untrained) initial weights."""
    entry = _entry(name)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(entry.config.seed)
        return entry.builder()


def config_hash(name: str) -> str:
    """Short hash of the model's source + structure + training config + dataset."""
    entry = _entry(name)
    model = build_model(name)
    classes = sorted({type(m) for m in model.modules() if type(m).__module__ == __name__},
                     key=lambda c: c.__qualname__)
    sources = [inspect.getsource(cls) for cls in classes]
    payload = json.dumps({"model": repr(model), "source": sources,
                          "dataset": entry.dataset, "config": entry.config.to_dict()},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def checkpoint_path(name: str) -> Path:
    """Where zoo model ``name``'s state_dict is (or will be) cached."""
    return cache_dir() / "models" / f"{name}-{config_hash(name)}.pt"


def _load_state(path: Path) -> dict:
    refuse_code_archive(path)  # before torch.load: it would jit.load a TorchScript zip
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt/foreign file
        raise LoihiConvError(f"cannot read weights file {path}: {type(e).__name__}: {e}",
                             "check the path; it must be a torch.save'd state_dict "
                             "(tensors only)") from None


def get_model(name: str, train_if_missing: bool = True,
              progress: bool = True) -> tuple[nn.Module, dict]:
    """Return zoo model ``name`` in eval mode and its info (dataset, shapes, accuracy, paths).

    Loads the cached checkpoint; if there is none, trains it (or raises if
    ``train_if_missing`` is False) and caches the state_dict and a metrics JSON atomically.
    """
    entry = _entry(name)
    ckpt = checkpoint_path(name)
    meta_path = ckpt.with_suffix(".json")
    model = build_model(name)
    if ckpt.exists() and meta_path.exists():
        model.load_state_dict(_load_state(ckpt))
        info = json.loads(meta_path.read_text())
    elif not train_if_missing:
        raise LoihiConvError(f"zoo model {name!r} has no cached checkpoint at {ckpt}",
                             f"train it once with get_model({name!r}) (train_if_missing=True)")
    else:
        t0 = time.perf_counter()
        acc = train_model(model, entry.dataset, entry.config, progress=progress)
        ds = dataset_info(entry.dataset)
        info = {"name": name, "dataset": entry.dataset, "input_shape": list(ds.input_shape),
                "num_classes": ds.num_classes, "test_accuracy": acc,
                "train_seconds": round(time.perf_counter() - t0, 1),
                "config": entry.config.to_dict(), "config_hash": config_hash(name),
                "torch": torch.__version__}
        atomic_write(ckpt, lambda p: torch.save(model.state_dict(), p))
        atomic_write(meta_path, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
    info["checkpoint"] = str(ckpt)
    info["input_shape"] = tuple(info["input_shape"])
    return model.eval(), info


# --------------------------------------------------------------------------- user models
def _import_file(path: Path):
    module_name = "loihi_conv_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LoihiConvError(f"{path} cannot be imported as a Python module",
                             "give a .py file: path/to/module.py:ClassName")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses/pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise LoihiConvError(f"importing {path} failed: {type(e).__name__}: {e}",
                             "fix the error in that file (run it with python to see the "
                             "traceback)") from None
    return module


def _instantiate(cls: type, spec: str) -> nn.Module:
    required = [p.name for p in inspect.signature(cls).parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise LoihiConvError(f"{spec} needs constructor arguments: {', '.join(required)}",
                             "give them default values, or add a subclass whose __init__ "
                             "takes no arguments and name that class")
    try:
        return cls()
    except Exception as e:
        raise LoihiConvError(f"constructing {spec} failed: {type(e).__name__}: {e}",
                             "make the class constructible with no arguments") from None


def _state_dict_mismatch(model: nn.Module, state: dict) -> list[str]:
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items()
              if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            problems.append(f"{label}: {', '.join(items)}")
    return problems


def load_user_model(spec: str, weights: str | None = None) -> nn.Module:
    """Import ``path/to/module.py:ClassName``, build it with no args, load weights, eval mode.

    The file is executed because the user named it. ``weights`` is a ``torch.save``'d
    state_dict (or a dict holding one under ``"state_dict"``), read with ``weights_only=True``.
    """
    file_part, sep, class_name = spec.rpartition(":")
    if not sep or not file_part or not class_name:
        raise LoihiConvError(f"model spec {spec!r} is not of the form path/to/module.py:ClassName",
                             "write the file path, a colon, then the class name")
    path = Path(file_part)
    if not path.is_file():
        raise LoihiConvError(f"model file {path} does not exist", "check the path in the spec")
    module = _import_file(path)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        found = sorted(n for n, v in vars(module).items()
                       if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__)
        what = "is not an nn.Module class" if cls is not None else "is not defined"
        raise LoihiConvError(f"{class_name} {what} in {path}",
                             f"name one of the nn.Module classes there: {', '.join(found) or '(none)'}")
    model = _instantiate(cls, spec)
    if weights is not None:
        wpath = Path(weights)
        if not wpath.is_file():
            raise LoihiConvError(f"weights file {wpath} does not exist", "check the path")
        state = _load_state(wpath)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise LoihiConvError(f"{wpath} holds a {type(state).__name__}, not a state_dict",
                                 "save it with torch.save(model.state_dict(), path)")
        problems = _state_dict_mismatch(model, state)
        if problems:
            raise LoihiConvError(f"weights {wpath} do not fit {class_name}:\n    "
                                 + "\n    ".join(problems),
                                 "use the weights saved from this exact class definition")
        model.load_state_dict(state)
    return model.eval()
