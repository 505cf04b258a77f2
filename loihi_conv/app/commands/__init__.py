"""CLI subcommands: one module per group of commands, each registering on ``group.main``."""
