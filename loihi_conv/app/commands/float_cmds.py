"""train, evaluate: the float side (ANN, float SNN)."""
from __future__ import annotations

import dataclasses

import click

from loihi_conv.app.commands.group import Ctx, guarded, main, parse_timesteps, write_json
from loihi_conv.app.commands.options import model_options, pop_recipe, recipe_options, scale_options


@main.command()
@click.argument("name")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write metrics here.")
@click.pass_obj
@guarded
def train(obj: Ctx, name: str, json_out: str | None) -> None:
    """Train zoo model NAME (or load its cached checkpoint) and print its test accuracy.

    \b
    Example: loihi-conv train fmnist_vgg
    """
    from loihi_conv.app import zoo

    _, info = zoo.get_model(name, progress=not obj.quiet)
    obj.echo(f"{name}: test accuracy {100 * info['test_accuracy']:.2f}% on {info['dataset']} "
             f"(checkpoint {info['checkpoint']})")
    write_json(json_out, info)


@main.command()
@model_options
@recipe_options
@click.option("--timesteps", "-T", default=None, help="Comma-separated readout windows (default 4,...,256).")
@click.option("--samples", "-n", type=int, default=None, help="Test images (default: the whole test set).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write results here.")
@scale_options
@click.pass_obj
@guarded
def evaluate(obj: Ctx, model: str, weights: str | None, dataset: str | None, timesteps: str | None,
             samples: int | None, json_out: str | None, scale=None, **kw) -> None:
    """Convert a model and print ANN and float-SNN test accuracy at every T.

    \b
    Examples:
      loihi-conv evaluate --model mnist_cnn
      loihi-conv evaluate --model mnist_cnn --neuron if-zero --timesteps 32,64
      loihi-conv evaluate --model my_net.py:Net --weights net.pt --dataset mnist
      loihi-conv evaluate --model fmnist_cnn --timesteps 8,32,128 --workers 2
    """
    from loihi_conv.app import models, pipeline
    from loihi_conv.app.scaleout import Scale

    ts = parse_timesteps(timesteps) if timesteps is not None else None  # bad options fail before any work
    scale = (scale or Scale()).check()
    recipe = pop_recipe(kw)
    ref = models.resolve(model, weights, dataset, progress=not obj.quiet)
    ev = pipeline.evaluate(ref, recipe, ts, samples, scale=scale)
    obj.echo(ev.table())
    obj.echo(f"conversion {ev.convert_seconds:.1f} s, simulation {ev.simulate_seconds:.1f} s")
    write_json(json_out, dataclasses.asdict(ev))
