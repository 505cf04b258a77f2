"""inspect: describe a NetX file (layers, Loihi 2 resources, hardware warnings, recipe)."""
from __future__ import annotations

import click

from loihi_conv.app.commands.group import Ctx, guarded, main, write_json


@main.command("inspect")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the full description (layers, totals, warnings, limits) here.")
@click.option("--recipe-out", type=click.Path(dir_okay=False), default=None,
              help="Write the conversion recipe stored in the file as TOML (for convert --recipe).")
@click.pass_obj
@guarded
def inspect_cmd(obj: Ctx, net: str, json_out: str | None, recipe_out: str | None) -> None:
    """Show what NET holds: per layer type, shape, neuron and parameters, weight/bias ranges and
    bits, delays, fan-in; estimated Loihi 2 neurons, synapses, memory and cores (limits cited);
    warnings for what Loihi 2 cannot take. Reads loihi-conv and lava-dl NetX files.

    \b
    Examples:
      loihi-conv inspect mnist.net
      loihi-conv inspect mnist.net --json mnist.json --recipe-out recipe.toml
    """
    from loihi_conv.app.resources import inspect_file, reproduce_command, save_recipe

    ins = inspect_file(net)
    obj.echo(ins.table())
    write_json(json_out, ins.to_dict())
    if recipe_out:
        path = save_recipe(net, recipe_out)
        obj.echo(f"\nwrote the stored recipe to {path}; rebuild the file with:\n  "
                 f"{reproduce_command(net, path)}")
