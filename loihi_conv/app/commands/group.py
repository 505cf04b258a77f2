"""The ``loihi-conv`` click group and what every command shares (context, error guard, step
checks, JSON output). Command modules import ``main`` from here and register on it;
``loihi_conv.app.cli`` imports them all.

Exit codes: 0 success; 1 unexpected internal error (a bug: please report it with --debug);
2 bad input or environment (LoihiConvError); 3 malformed NetX file (NetXFormatError).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

import click

from loihi_conv.base.errors import LoihiConvError

DEFAULT_T = (4, 8, 16, 32, 64, 128, 256)
# Longest readout window / run we accept. Far beyond any useful window (accuracy saturates within
# a few hundred steps), and it keeps a mistyped T from looping for hours or overflowing int64.
MAX_STEPS = 1_000_000


class Ctx:
    def __init__(self, debug: bool, quiet: bool):
        self.debug = debug
        self.quiet = quiet

    def echo(self, msg: str = "") -> None:
        if not self.quiet:
            click.echo(msg)


def guarded(fn):
    """Turn LoihiConvError into one clean message and an exit code (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context().find_object(Ctx)
        debug = ctx.debug if ctx else False
        try:
            _check_outputs(kwargs)
            with warnings.catch_warnings():
                warnings.showwarning = functools.partial(_show_warning, debug)
                if not debug:  # Lava's own numerics (e.g. 0/0 in its conv utils) are not the user's
                    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"lava\.")
                return fn(*args, **kwargs)
        except LoihiConvError as e:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("terminated", err=True)
            sys.exit(143)
        except OSError as e:  # a file the OS refused us (permissions, disk, a device): not a bug
            if debug or not e.errno:
                raise
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"error: {os.strerror(e.errno)}{where}\n  fix: check the path, its "
                       "permissions and the free disk space", err=True)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 - last line of defence; a bug, not bad input
            if debug:
                raise
            click.echo(f"internal error: {type(e).__name__}: {e}\n  (a bug in loihi-conv; rerun with --debug "
                       "for the traceback and report it)", err=True)
            sys.exit(1)

    return wrapper


OUTPUT_PARAMS = ("out", "json_out", "recipe_out")  # file outputs: checked before any work


def _check_outputs(kwargs: dict) -> None:
    """Every output file the command was given: not a device/FIFO/directory, in a writable
    place -- refused before minutes of work, not after."""
    from loihi_conv.base.files import check_writable

    command = click.get_current_context().command
    files = [p.name for p in command.params if p.name in OUTPUT_PARAMS
             and isinstance(p.type, click.Path) and not p.type.dir_okay]
    check_writable(*(kwargs.get(name) for name in files))


class Terminated(BaseException):
    """SIGTERM, raised in the main process so that cleanup runs (temp files of atomic writes,
    Lava runtimes): Python's default action would end the process on the spot."""


def _on_sigterm(main_pid: int, signum, frame) -> None:
    if os.getpid() != main_pid:  # a forked child that kept the handler: the default action
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _install_sigterm(ctx: click.Context) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.signal(signal.SIGTERM, functools.partial(_on_sigterm, os.getpid()))
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def _show_warning(debug: bool, message, category, filename, lineno, file=None, line=None) -> None:
    """One ``warning: ...`` line on stderr instead of Python's file:line + source-line format."""
    where = f" ({category.__name__} at {filename}:{lineno})" if debug else ""
    click.echo(f"warning: {message}{where}", err=True)


def parse_timesteps(value: str | None) -> tuple[int, ...]:
    """``--timesteps 8,16,64`` -> (8, 16, 64); None -> DEFAULT_T."""
    if value is None:
        return DEFAULT_T
    try:
        ts = tuple(int(v) for v in str(value).split(","))
    except ValueError:
        raise LoihiConvError(f"--timesteps {value!r} is not a comma-separated list of integers",
                             "pass e.g. --timesteps 8,16,64") from None
    for T in ts:
        check_steps(T, f"--timesteps {value!r}", "--timesteps 8,16,64")
    return ts


def check_steps(value: int, option: str, example: str) -> int:
    """A step count / readout window given on the command line: 1 <= value <= MAX_STEPS."""
    if value <= 0:
        raise LoihiConvError(f"{option}: steps must be a positive integer, got {value}",
                             f"pass e.g. {example}")
    if value > MAX_STEPS:
        raise LoihiConvError(f"{option}: {value} steps is more than the supported {MAX_STEPS}",
                             f"readout windows of a few hundred steps are enough; pass e.g. {example}")
    return int(value)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        from loihi_conv.base.files import atomic_write_text

        atomic_write_text(Path(path), json.dumps(payload, indent=2, default=float))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors (and --json output).")
@click.version_option(package_name="loihi-conv")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Convert trained PyTorch CNNs into spiking networks for Intel Loihi 2.

    \b
    Examples:
      loihi-conv demo
      loihi-conv train mnist_cnn
      loihi-conv evaluate --model mnist_cnn --timesteps 16,64 --json out.json
      loihi-conv convert --model mnist_cnn --target if-soft --out mnist.net
      loihi-conv run-lava mnist.net --dataset mnist --samples 20 --timesteps 64
      loihi-conv emulate mnist.net --input x.npy --steps 64 --out y.npy
      loihi-conv verify mnist.net --dataset mnist --samples 5 --timesteps 32
    """
    ctx.obj = Ctx(debug, quiet)
    _install_sigterm(ctx)
