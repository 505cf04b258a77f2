"""Options shared by several subcommands, so every command spells them the same way."""
from __future__ import annotations

import functools

import click

from loihi_conv.recipe import Recipe


def model_options(fn):
    @click.option("--model", "-m", default="mnist_cnn", show_default=True,
                  help="Zoo model name, or path/to/module.py:ClassName for your own model.")
    @click.option("--weights", type=click.Path(dir_okay=False), default=None,
                  help="State dict (.pt) for a user model; loaded with weights_only=True.")
    @click.option("--dataset", "-d", default=None,
                  help="mnist | fashion-mnist | digits (zoo models know theirs).")
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)
    return wrapper


def recipe_options(fn):
    @click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), default=None,
                  help="Recipe TOML file; the options below override it.")
    @click.option("--normalizer", default=None, help="max | percentile")
    @click.option("--percentile", type=float, default=None, help="p for the percentile normalizer.")
    @click.option("--granularity", type=click.Choice(["channel", "layer"]), default=None)
    @click.option("--neuron", "neuron_model", default=None, help="if-soft (reset by subtraction) | if-zero")
    @click.option("--v-init", type=float, default=None, help="Initial potential / threshold (0.5: unbiased).")
    @click.option("--calib-size", type=int, default=None, help="Calibration images (train split).")
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)
    return wrapper


def build_recipe(recipe_file: str | None, **overrides) -> Recipe:
    """Recipe from a TOML file (or defaults) with the CLI overrides that were given."""
    base = Recipe.from_toml(recipe_file) if recipe_file else Recipe()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**changes) if changes else base


RECIPE_KEYS = ("normalizer", "percentile", "granularity", "neuron_model", "v_init", "calib_size")


def pop_recipe(kwargs: dict) -> Recipe:
    """Take the recipe options out of a command's kwargs and build the Recipe."""
    return build_recipe(kwargs.pop("recipe_file"), **{k: kwargs.pop(k) for k in RECIPE_KEYS})
