"""report: accuracy vs T, the accuracy-latency frontier over targets, per-layer errors, firing rates,
raster and backend agreement, with plots."""
from __future__ import annotations

import click

from loihi_conv.app.commands.group import Ctx, guarded, main, parse_timesteps, write_json
from loihi_conv.app.commands.options import model_options, pop_recipe, recipe_options
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.fixed.quantize import TARGETS


@main.command()
@model_options
@recipe_options
@click.option("--target", type=click.Choice(sorted(TARGETS)), default="if-soft", show_default=True,
              help="Loihi target quantized for the emulator and Lava.")
@click.option("--timesteps", "-T", default="4,8,16,32", show_default=True,
              help="Comma-separated readout windows for the accuracy curves.")
@click.option("--detail-T", "detail_t", type=int, default=None,
              help="Window for errors, rates, raster and Lava (default: the largest T).")
@click.option("--samples", "-n", type=int, default=100, show_default=True, help="Test images.")
@click.option("--lava-samples", type=int, default=2, show_default=True,
              help="Test images also run on Lava's CPU simulator (0: skip Lava).")
@click.option("--no-emulator-curve", is_flag=True, help="Quantize and emulate at the detail T only (faster).")
@click.option("--frontier-targets", default=None, metavar="LIST",
              help="Comma-separated targets of the accuracy vs steps-run frontier, each quantized and emulated "
                   f"at every T (default: all, {','.join(TARGETS)}); 'none' skips it.")
@click.option("--format", "fmt", type=click.Choice(("md", "html")), default="md", show_default=True)
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Directory for report.md|html, report.json and figures/.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the numbers (report.json) here.")
@click.pass_obj
@guarded
def report(obj: Ctx, model, weights, dataset, target, timesteps, detail_t, samples, lava_samples,
           no_emulator_curve, frontier_targets, fmt, out, json_out, **kw) -> None:
    """Measure a conversion on a few test images and write a report with plots and the numbers
    behind them (JSON beside it).

    \b
    Examples:
      loihi-conv report --model digits_cnn --out runs/report
      loihi-conv report --model mnist_cnn --target cuba -T 8,16,32,64 --lava-samples 0 --out r/ --format html
      loihi-conv report --model mnist_cnn -T 4,8,16,32 --frontier-targets cuba,if-soft --out r/
    """
    from loihi_conv.app import report as rep

    recipe = pop_recipe(kw)
    data = rep.collect(model, target, parse_timesteps(timesteps), detail_t, samples, lava_samples, recipe,
                       weights, dataset, emulator_curve=not no_emulator_curve,
                       frontier_targets=_targets(frontier_targets), progress=lambda msg: obj.echo(f"  {msg}"))
    paths = rep.write(data, out, fmt)
    write_json(json_out, data.to_dict())
    if data.frontier["targets"]:
        obj.echo(f"accuracy vs steps run (ANN {100 * data.ann_accuracy:.2f}%, {data.samples} images):")
        for line in rep.frontier_summary(data):
            obj.echo(f"  {line}")
    obj.echo(f"wrote {paths['report']} and {paths['json']} ({len(paths) - 2} figure files)")


def _targets(value: str | None) -> list[str] | None:
    """``--frontier-targets``: None (every target), 'none' -> [], else the names (checked by collect)."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return []
    names = [t.strip() for t in value.split(",") if t.strip()]
    if not names:
        raise LoihiConvError(f"--frontier-targets {value!r} names no target",
                             f"pass some of {','.join(TARGETS)} (comma-separated), or none")
    return names
