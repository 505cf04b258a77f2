"""CLI subcommands; importing a module registers its commands on ``loihi_conv.cli.main``."""
from loihi_conv.commands import backend, demo, inspect, models, report  # noqa: F401
