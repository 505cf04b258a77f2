"""Make Lava importable after other code has touched multiprocessing.

Lava 0.10 calls ``multiprocessing.set_start_method('fork')`` when its runtime module is first
imported (lava/magma/runtime/message_infrastructure/multiprocessing.py:47). That raises
"context has already been set" once anything else has fixed the start method -- e.g. a torch
DataLoader during ``loihi_conv.convert`` -- even when the method already is 'fork'. Call
``prepare()`` before the first Lava import.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import signal
import sys

from loihi_conv.base.errors import LoihiConvError

_LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"


def prepare() -> None:
    """Undo an already-fixed 'fork' start method so Lava's own ``set_start_method`` succeeds."""
    if _LAVA_MP in sys.modules:
        return
    method = mp.get_start_method(allow_none=True)
    if method is None:
        return
    if method != "fork":
        raise LoihiConvError(
            f"multiprocessing already uses the {method!r} start method; Lava needs 'fork'",
            "import netx_export's Lava modules (or lava) before anything sets another method")
    mp.set_start_method(None, force=True)  # Lava sets 'fork' again right away


# ---- faults: Ctrl-C, SIGTERM ----------------------------------------------------------------
# Lava runs one OS process per Lava process (plus a SharedMemoryManager server owning the
# channels' /dev/shm segments). Those children must not act on SIGINT/SIGTERM themselves: a
# terminal's Ctrl-C reaches the whole process group, the children died mid-message and Lava's
# graceful stop then waited on them for minutes. They ignore both; the main process alone
# handles a signal and tears the runtime down (``abort_runtime``).
_starting_lava = False


def _child_after_fork() -> None:
    if _starting_lava:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


os.register_at_fork(after_in_child=_child_after_fork)


@contextlib.contextmanager
def children_ignore_signals():
    """Processes forked inside this block (Lava's runtime start) ignore SIGINT and SIGTERM."""
    global _starting_lava
    _starting_lava = True
    try:
        yield
    finally:
        _starting_lava = False


def abort_runtime(process) -> None:
    """Tear down the runtime of Lava ``process`` at once: kill its OS processes and shut the
    shared-memory manager down (which unlinks every segment). Unlike ``Runtime.stop`` it sends
    no message and waits for no reply, so it works mid-run and with dead children."""
    rt = getattr(process, "_runtime", None)
    if rt is None:
        return
    mi = getattr(rt, "_messaging_infrastructure", None)
    for actor in getattr(mi, "actors", ()):
        if getattr(actor, "_is_done", True) or getattr(actor, "_parent_pid", None) != os.getpid():
            continue
        with contextlib.suppress(Exception):
            actor.kill()
            mp.Process.join(actor, timeout=5)  # Lava's own join() has no timeout
    smm = getattr(mi, "smm", None)
    if smm is not None:
        with contextlib.suppress(Exception):
            smm.shutdown()
    watchdog = getattr(rt, "_watchdog_manager", None)
    if watchdog is not None:
        with contextlib.suppress(Exception):
            watchdog.stop()
    rt._is_started = rt._is_running = False  # Runtime.__del__ would otherwise call stop()


# ---- import noise -----------------------------------------------------------------------------
def import_netx():
    """``lava.lib.dl.netx``, imported without the lines its imports print on every run
    (torch's "No CUDA runtime is found" and slayer's "Prophesee Dataset Toolbox could not be
    found"): they concern features loihi-conv never uses. The text is kept in ``IMPORT_NOISE``
    and shown if the import fails."""
    global IMPORT_NOISE
    prepare()
    if "lava.lib.dl.netx" in sys.modules:
        return sys.modules["lava.lib.dl.netx"]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            from lava.lib.dl import netx
    except Exception as e:
        raise LoihiConvError(f"cannot import lava-dl's netx ({type(e).__name__}: {e}); it printed: "
                             f"{buf.getvalue().strip()[:400]}",
                             "install lava-dl 0.6.0: pip install --no-deps lava-dl==0.6.0") from e
    IMPORT_NOISE = buf.getvalue()
    return netx


IMPORT_NOISE = ""
