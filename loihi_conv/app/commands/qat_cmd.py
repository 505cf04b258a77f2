"""finetune-qrelu: QReLU quantization-aware fine-tuning (HPC eq. 16) for zero coding error."""
from __future__ import annotations

import time

import click

from loihi_conv.app.commands.group import Ctx, check_steps, guarded, main, write_json
from loihi_conv.app.commands.options import model_options


@main.command("finetune-qrelu")
@model_options
@click.option("--timesteps", "-T", type=int, required=True,
              help="Readout window T the QReLU is made for (P = T * S_max levels).")
@click.option("--s-max", type=int, default=1, show_default=True,
              help="Largest spike value (power of two): 1 = if-soft neurons, 2 = if-multibit.")
@click.option("--epochs", "-e", type=int, default=1, show_default=True)
@click.option("--max-batches", type=int, default=None, help="Stop after this many batches (a partial epoch).")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Peak AdamW learning rate (cosine decay).")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--percentile", type=float, default=99.0, show_default=True,
              help="Initial lambda: this percentile of each ReLU's output (HPC §4.3 uses 99).")
@click.option("--rounding", type=click.Choice(["floor", "round"]), default="floor", show_default=True,
              help="floor: the paper (exact with v_init 0); round: nearest level (exact with v_init 0.5).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="State dict to write (.pt); model class (.py), recipe (.toml) and metrics (.json) go next to it.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the metrics here too.")
@click.pass_obj
@guarded
def finetune_qrelu(obj: Ctx, model: str, weights: str | None, dataset: str | None, timesteps: int, s_max: int,
                   epochs: int, max_batches: int | None, lr: float, batch_size: int, percentile: float,
                   rounding: str, seed: int, out: str, json_out: str | None) -> None:
    """Fine-tune a trained model with QReLU activations (HPC eqs. 9-11, 16) for readout window T,
    so that its converted IF neurons reproduce the quantized activations (zero coding error).

    Writes OUT (.pt state dict) plus OUT.py (the model class QReLUModel), OUT.toml (the matching
    recipe: normalizer "qrelu", thresholds = trained lambda / S_max) and OUT.json (metrics).

    \b
    Example, then convert and evaluate the result with the existing commands:
      loihi-conv finetune-qrelu --model fmnist_vgg -T 8 --s-max 1 --epochs 1 --out vgg_q8.pt
      loihi-conv evaluate --model vgg_q8.py:QReLUModel --weights vgg_q8.pt \\
          --dataset fashion-mnist --recipe vgg_q8.toml -T 8
      loihi-conv convert --model vgg_q8.py:QReLUModel --weights vgg_q8.pt \\
          --dataset fashion-mnist --recipe vgg_q8.toml --target if-soft -T 8 --out vgg_q8.net
    (S_max=1 needs no recipe file: --normalizer qrelu does the same.)
    """
    from pathlib import Path

    from loihi_conv.app import models, qat, qat_checkpoint
    from loihi_conv.app.data import load_dataset
    from loihi_conv.app.train import evaluate
    from loihi_conv.base.errors import LoihiConvError

    check_steps(timesteps, "--timesteps", "-T 8")
    qat.check_finetune_args(timesteps, s_max, rounding, epochs, lr, batch_size, max_batches)
    if Path(out).suffix != ".pt":  # fail before any training
        raise LoihiConvError(f"--out {out} must end in .pt (the state dict)", f"pass e.g. --out {Path(out).stem}.pt")
    ref = models.resolve(model, weights, dataset, progress=not obj.quiet)
    t0 = time.perf_counter()
    net = qat.finetune(ref.module, ref.dataset, timesteps, s_max, epochs=epochs, lr=lr, batch_size=batch_size,
                       seed=seed, percentile=percentile, rounding=rounding, max_batches=max_batches,
                       progress=not obj.quiet)
    seconds = time.perf_counter() - t0
    x, y = load_dataset(ref.dataset, "test")
    acc = evaluate(net, x, y)
    info = {"model": ref.name, "test_accuracy": acc, "float_test_accuracy": ref.info.get("test_accuracy"),
            "epochs": epochs, "max_batches": max_batches, "lr": lr, "batch_size": batch_size,
            "percentile": percentile, "seed": seed, "finetune_seconds": round(seconds, 1)}
    paths = qat_checkpoint.save_finetuned(net, ref.name, out, ref.dataset, info)
    obj.echo(f"QReLU {ref.name} (T={timesteps}, S_max={s_max}, {rounding}): test accuracy {100 * acc:.2f}% "
             f"on {ref.dataset} after {seconds:.0f} s of fine-tuning")
    obj.echo(f"wrote {paths['weights']}, {paths['model_file'].name}, {paths['recipe'].name}, {paths['info'].name}")
    obj.echo(f"next: loihi-conv evaluate --model {paths['model_file']}:QReLUModel --weights {paths['weights']} "
             f"--dataset {ref.dataset} --recipe {paths['recipe']} -T {timesteps}")
    write_json(json_out, {**info, **{k: str(v) for k, v in paths.items()}})
