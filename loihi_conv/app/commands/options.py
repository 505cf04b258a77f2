"""Options shared by several subcommands, so every command spells them the same way."""
from __future__ import annotations

import functools

import click

from loihi_conv.convert import Recipe


def model_options(fn):
    @click.option("--model", "-m", default="mnist_cnn", show_default=True,
                  help="Zoo model name, torchvision:NAME, path/to/model.onnx, path/to/module.py:ClassName "
                       "or pkg.module:factory.")
    @click.option("--weights", type=click.Path(dir_okay=False), default=None,
                  help="State dict (.pt) for a user model; loaded with weights_only=True.")
    @click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                  help="Constructor option for torchvision:NAME or pkg.module:factory, repeatable "
                       "(e.g. num_classes=10).")
    @click.option("--dataset", "-d", default=None,
                  help="mnist | fashion-mnist | digits | path/to/data.npz | an image folder ROOT (ROOT/train/<class>/, "
                       "ROOT/test/<class>/) | pkg.module:function (zoo models know theirs).")
    @click.option("--input-size", default=None, metavar="H[xW]", help="Image folder: resize images to HxW.")
    @click.option("--mean", default=None, metavar="M1,M2,M3", help="Image folder: per-channel mean to subtract.")
    @click.option("--std", default=None, metavar="S1,S2,S3", help="Image folder: per-channel std to divide by.")
    @functools.wraps(fn)
    def wrapper(*a, **k):
        from loihi_conv.app.data import dataset_spec
        from loihi_conv.app.models import ModelSpec, parse_model_args
        from loihi_conv.base.errors import LoihiConvError

        try:
            args = parse_model_args(k.pop("model_args", ()))
            if "model" in k and args:  # the spec carries its options; commands pass it on unchanged
                k["model"] = ModelSpec(k["model"], args)
            pre = {key: k.pop(key, None) for key in ("input_size", "mean", "std")}
            if any(v is not None for v in pre.values()):  # the dataset string carries its preprocessing,
                if k.get("dataset") is None:  # so every file written stores its input encoding
                    raise LoihiConvError("--input-size/--mean/--std without --dataset",
                                         "name the image folder with --dataset")
                k["dataset"] = dataset_spec(k["dataset"], **pre)
        except LoihiConvError as e:  # before the command's own guard: a usage error (exit 2)
            raise click.UsageError(str(e)) from None
        return fn(*a, **k)
    return wrapper


def _neuron_params(ctx, param, values):
    """--neuron-param KEY=VALUE (repeatable) -> {key: int/float/str} for Recipe.neuron_params."""
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param=param)
        for cast in (int, float):
            try:
                out[key] = cast(raw)
                break
            except ValueError:
                continue
        else:
            out[key] = raw
    return out


def recipe_options(fn):
    @click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), default=None,
                  help="Recipe TOML file; the options below override it.")
    @click.option("--normalizer", default=None, help="max | percentile | mmse | qrelu")
    @click.option("--percentile", type=float, default=None, help="p for the percentile normalizer.")
    @click.option("--granularity", type=click.Choice(["channel", "layer"]), default=None)
    @click.option("--neuron", "neuron_model", default=None,
                  help="if-soft (reset by subtraction) | if-zero | if-burst | if-multibit | if-buffered | spicalib")
    @click.option("--neuron-param", "neuron_params", multiple=True, callback=_neuron_params,
                  help="Neuron option KEY=VALUE, repeatable, e.g. s_max=2 or burst=5.")
    @click.option("--v-init", type=float, default=None, help="Initial potential / threshold (0.5: unbiased).")
    @click.option("--calib-size", type=int, default=None, help="Calibration images (train split).")
    @click.option("--calib-timesteps", type=int, default=None,
                  help="T the MMSE / ClipRound / LCP / ACP methods optimise for.")
    @click.option("--mmse-rounding", default=None, help="MMSE objective: round | floor | zero.")
    @click.option("--clip-round/--no-clip-round", default=None, help="Add θ/(2T) to every bias (ClipRound).")
    @click.option("--clamp-delay", type=int, default=None, help="Voltage clamping: layer l silent for d·l steps.")
    @click.option("--lcp/--no-lcp", default=None, help="LCP bias calibration (calibration paper eq. 20).")
    @click.option("--acp/--no-acp", "acp", default=None,
                  help="ACP potential calibration v(0) = T e (calibration paper eq. 22).")
    @click.option("--acp-weights/--no-acp-weights", "acp_weights", default=None,
                  help="Calibrate each layer's weights on its neuron's count curve (calibration paper "
                       "eq. 23; with --acp as in the paper, alone for if-zero/cuba).")
    @click.option("--acp-granularity", type=click.Choice(["neuron", "channel"]), default=None,
                  help="ACP v(0) per neuron (float SNN only) or per channel (exports to if-soft).")
    @click.option("--max-pool", default=None, help="Max-pool scheme: mli | rate-gate | spike-max | avg | relu-tree (exact max as ReLU layers; sdnn).")
    @click.option("--output", default=None, help="Output readout: potential | spikes | softmax.")
    @click.option("--weight-rounding", default=None,
                  help="Integer weights: nearest | gptq (data-aware rounding on calibration data).")
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)
    return wrapper


def build_recipe(recipe_file: str | None, **overrides) -> Recipe:
    """Recipe from a TOML file (or defaults) with the CLI overrides that were given."""
    base = Recipe.from_toml(recipe_file) if recipe_file else Recipe()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**changes) if changes else base


RECIPE_KEYS = ("normalizer", "percentile", "granularity", "neuron_model", "neuron_params", "v_init",
               "calib_size", "calib_timesteps", "mmse_rounding", "clip_round", "clamp_delay", "lcp", "acp",
               "acp_weights", "acp_granularity", "max_pool", "output", "weight_rounding")


def pop_recipe(kwargs: dict) -> Recipe:
    """Take the recipe options out of a command's kwargs and build the Recipe."""
    return build_recipe(kwargs.pop("recipe_file"), **{k: kwargs.pop(k) for k in RECIPE_KEYS})


def pop_fixed(kwargs: dict) -> tuple[Recipe, dict]:
    """Take the recipe options out of a command's kwargs: the Recipe they build (defaults for
    the rest) and the knobs the user fixed -- every key of a ``--recipe`` file, every option
    given on the command line -- which the recipe search leaves alone."""
    recipe_file = kwargs["recipe_file"]
    given = {k: kwargs[k] for k in RECIPE_KEYS if kwargs[k] is not None}
    recipe = pop_recipe(kwargs)
    fixed = {**(Recipe.from_toml(recipe_file).to_dict() if recipe_file else {}), **given}
    return recipe, fixed


def search_options(fn):
    @click.option("--no-search", "no_search", is_flag=True,
                  help="Use the recipe as given (defaults for every option not given) instead of searching.")
    @click.option("--budget", type=float, default=None,
                  help="Seconds the recipe search may take (default 240; options you give are not searched).")
    @click.option("--trials", type=int, default=None,
                  help="At most this many search trials (with no --budget: exactly reproducible).")
    @click.option("--heldout", type=int, default=None,
                  help="Training images (never calibration or test images) the search scores on (default 1000): "
                       "the N with the smallest ANN logit margin among 10 N.")
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)
    return wrapper


def scale_options(fn):
    """--workers, --ray, --device: where the evaluation runs (``app.scaleout``); the command gets
    one ``scale`` argument (checked by the command itself, so a bad device is an input error)."""
    @click.option("--workers", type=click.IntRange(min=1), default=None,
                  help="Worker processes to shard the images (and search trials) over; results are those of "
                       "one process (default 1; with --ray: every CPU of the cluster).")
    @click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
                  help="Run the workers on a Ray cluster: its address (e.g. auto, ray://host:10001), "
                       "or 'local' to start one on this machine.")
    @click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                  help="Torch device of the simulation, calibration and emulator (cuda: unmeasured).")
    @functools.wraps(fn)
    def wrapper(*a, **k):
        from loihi_conv.app.scaleout import Scale

        k["scale"] = Scale(k.pop("workers"), k.pop("ray_address"), k.pop("device"))
        return fn(*a, **k)
    return wrapper
