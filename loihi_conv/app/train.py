"""Deterministic CPU training for the model zoo.

Layout: images float32 (N, C, H, W) in [0, 1] (as ``loihi_conv.app.data`` returns), labels int64 (N,).
No input normalisation: the converted SNN receives the raw [0, 1] image as input current.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from loihi_conv.app.data import load_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (hashed into the checkpoint name)."""
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3           # peak learning rate
    optimizer: str = "adam"    # key of OPTIMIZERS
    schedule: str = "onecycle"  # key of SCHEDULES
    weight_decay: float = 0.0
    augment: str = "none"      # key of AUGMENTS
    label_smoothing: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- registries
OPTIMIZERS: dict[str, Callable[[nn.Module, TrainConfig], torch.optim.Optimizer]] = {
    "adam": lambda m, c: torch.optim.AdamW(m.parameters(), lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda m, c: torch.optim.SGD(m.parameters(), lr=c.lr, momentum=0.9, nesterov=True,
                                        weight_decay=c.weight_decay),
}

SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainConfig, int], object]] = {
    "onecycle": lambda o, c, steps: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=c.lr, total_steps=steps, pct_start=0.25),
    "cosine": lambda o, c, steps: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps),
}


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random per-image translation by up to ``pad`` pixels (zero fill), (N,C,H,W) -> same."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip per image (clothes are left/right symmetric)."""
    mask = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


AUGMENTS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": lambda x, gen: x,
    "shift": _shift,
    "flip": _flip,
    "flip+shift": lambda x, gen: _shift(_flip(x, gen), gen),
}


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and switch on deterministic algorithms for the block, then restore the mode."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on (N, C, H, W) images and (N,) labels."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size])
        correct += (logits.argmax(1) == labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


def _show_progress(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def train_model(model: nn.Module, dataset: str, config: TrainConfig,
                progress: bool = True) -> float:
    """Train ``model`` in place on the dataset's train split; return its test accuracy.

    CPU, seeded and deterministic: the same initial weights, config and seed give the same
    trained weights (build the model under ``torch.manual_seed`` too, as ``zoo`` does).
    """
    x_train, y_train = load_dataset(dataset, "train")
    x_test, y_test = load_dataset(dataset, "test")
    steps_per_epoch = -(-len(x_train) // config.batch_size)
    with deterministic(config.seed):
        gen = torch.Generator().manual_seed(config.seed)
        opt = OPTIMIZERS[config.optimizer](model, config)
        sched = SCHEDULES[config.schedule](opt, config, config.epochs * steps_per_epoch)
        augment = AUGMENTS[config.augment]
        model.train()
        t0 = time.perf_counter()
        bar = tqdm(total=config.epochs * steps_per_epoch, disable=not _show_progress(progress),
                   desc=f"train {dataset}", unit="batch")
        with bar:
            for epoch in range(config.epochs):
                order = torch.randperm(len(x_train), generator=gen)
                for start in range(0, len(x_train), config.batch_size):
                    idx = order[start:start + config.batch_size]
                    xb = augment(x_train[idx], gen)
                    loss = F.cross_entropy(model(xb), y_train[idx],
                                           label_smoothing=config.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
                log.info("%s epoch %d/%d: last batch loss %.4f, %.0f s elapsed", dataset,
                         epoch + 1, config.epochs, loss.item(), time.perf_counter() - t0)
        model.eval()
        return evaluate(model, x_test, y_test)
