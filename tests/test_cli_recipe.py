"""Every conversion method is a named CLI option that lands in the Recipe (issue: methods are
composable options of `convert`, CLI and Python API)."""
import json

import click
from click.testing import CliRunner

from loihi_conv.app.commands.options import pop_recipe, recipe_options


@click.command()
@recipe_options
def show(**kw):
    click.echo(json.dumps(pop_recipe(kw).to_dict()))


def invoke(args: list[str]):
    return CliRunner(mix_stderr=False).invoke(show, args)


def test_method_flags_compose_into_the_recipe():
    res = invoke(["--normalizer", "mmse", "--mmse-rounding", "zero", "--calib-timesteps", "16",
                  "--clip-round", "--clamp-delay", "2", "--lcp", "--acp",
                  "--acp-granularity", "channel", "--neuron", "if-multibit", "--neuron-param", "s_max=4",
                  "--max-pool", "avg", "--output", "spikes"])
    assert res.exit_code == 0, res.stderr
    r = json.loads(res.stdout)
    assert (r["normalizer"], r["mmse_rounding"], r["calib_timesteps"]) == ("mmse", "zero", 16)
    assert (r["clip_round"], r["clamp_delay"], r["lcp"], r["acp"], r["acp_weights"]) == (True, 2, True, True, False)
    assert (r["acp_granularity"], r["neuron_model"], r["neuron_params"]) == ("channel", "if-multibit", {"s_max": 4})
    assert (r["max_pool"], r["output"]) == ("avg", "spikes")


def test_flags_override_a_recipe_file_and_unset_flags_keep_it(tmp_path):
    from loihi_conv.convert import Recipe

    path = Recipe(lcp=True, clamp_delay=1, percentile=99.9).to_toml(tmp_path / "r.toml")
    r = json.loads(invoke(["--recipe", str(path), "--no-lcp"]).stdout)
    assert (r["lcp"], r["clamp_delay"], r["percentile"]) == (False, 1, 99.9)


def test_bad_method_options_are_one_clear_error():
    res = invoke(["--neuron-param", "s_max"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.stderr
    res = invoke(["--neuron", "if-multibit", "--neuron-param", "s_max=3"])  # not a power of two
    assert res.exit_code != 0 and "power of two" in str(res.exception or res.stderr)
    res = invoke(["--neuron", "if-buffered", "--acp", "--acp-weights"])  # eq. 21 is not a buffered IF's rate
    assert res.exit_code != 0 and "acp_weights" in str(res.exception or res.stderr)
