"""The `loihi-conv` command line. Each command is a thin wrapper over the Python API.

Exit codes: 0 success; 1 unexpected internal error (a bug: please report it with --debug);
2 bad input or environment (LoihiConvError); 3 malformed NetX file (NetXFormatError).
Commands live in ``loihi_conv/app/commands/*_cmd(s).py``; importing them registers them on the
group (``commands.group.main``).
"""
from loihi_conv.app.commands import demo_cmd, fixed_cmds, float_cmds, inspect_cmd, qat_cmd, report_cmd, score_cmd  # noqa: F401
from loihi_conv.app.commands.group import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
