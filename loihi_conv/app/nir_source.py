"""``--model FILE.nir``: a NIR graph is already an SNN, so ``convert`` skips the ANN conversion
(and the recipe search) and quantizes it directly on calibration samples of ``--dataset``."""
from __future__ import annotations

from pathlib import Path

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir


def is_nir(model: str | None) -> bool:
    return isinstance(model, str) and model.lower().endswith(".nir")


def load(model: str, dataset: str | None, dt: float | None = None, reset: str | None = None) -> tuple[ir.Graph, str]:
    """The SNN IR of ``model`` and the dataset it runs on (whose samples must fit its input)."""
    from loihi_conv.app import data
    from loihi_conv.interop import load_nir

    if dataset is None:
        raise LoihiConvError(f"--dataset is required with a NIR model ({model}): it gives the calibration and "
                             "test samples", f"add --dataset {{{','.join(sorted(data.INFO))}}} or --dataset data.npz")
    snn = load_nir(Path(model), dt=dt, reset=reset)
    shape = tuple(data.dataset_info(dataset).input_shape)
    if shape != tuple(snn.input.shape):
        raise LoihiConvError(f"{model} takes inputs of shape {tuple(snn.input.shape)}, {dataset} samples are {shape}",
                             "pass a --dataset .npz whose x_train/x_test fit the NIR graph's Input")
    return snn, dataset


def quantize(model: str, dataset: str | None, target: str, timesteps: int, force: bool = False,
             dt: float | None = None, reset: str | None = None):
    """Fixed-point network of a NIR file for ``target`` at readout window T (stamped like
    ``pipeline.quantize_snn``'s)."""
    from loihi_conv.app import data
    from loihi_conv.fixed.quantize import quantize as run

    snn, ds = load(model, dataset, dt, reset)
    calib, _ = data.load_dataset(ds, "train")  # quantize takes a seeded subset
    calib = calib.reshape((-1,) + tuple(snn.input.shape))  # an event stream's frames are samples too
    qnet = run(snn, target, timesteps=timesteps, calib=calib, force=force)
    qnet.meta.update(model=str(model), dataset=ds, target=target, timesteps=int(timesteps), source="nir",
                     nir_notes=snn.meta.get("notes", []))
    return snn, qnet
