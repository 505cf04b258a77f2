"""How much memory a size read from a file or a flag may claim, checked before allocating.

One rule for every such size: the bytes it needs must fit in a fixed cap and in a share of
the memory available now. ``LOIHI_CONV_MAX_BYTES`` (bytes) replaces both for a machine where
the defaults are wrong; the error message names it.
"""
from __future__ import annotations

import os

from loihi_conv.base.errors import LoihiConvError

ENV = "LOIHI_CONV_MAX_BYTES"
CAP_BYTES = 2 << 30  # 268M int64 values: beyond the synapses of any Loihi 2 system a file targets
SHARE = 2  # claim at most 1/SHARE of the memory available now: the work copies arrays


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return CAP_BYTES


def limit_bytes() -> int:
    raw = os.environ.get(ENV)
    if raw:
        try:
            return max(int(raw), 0)
        except ValueError:
            raise LoihiConvError(f"{ENV}={raw!r} is not a number of bytes",
                                 f"set e.g. {ENV}=4000000000 or unset it") from None
    return min(CAP_BYTES, available_bytes() // SHARE)


def check_fits(nbytes: float, what: str, fix: str, error_cls: type[LoihiConvError] = LoihiConvError) -> None:
    """Raise ``error_cls`` if ``nbytes`` (needed by ``what``) exceeds ``limit_bytes()``.
    ``fix`` says which flag or input makes it smaller."""
    limit = limit_bytes()
    if nbytes > limit:
        raise error_cls(f"{what} needs {_gb(nbytes)} of memory, more than the {_gb(limit)} this run "
                        f"allows (half the memory available now, at most {_gb(CAP_BYTES)})",
                        f"{fix}; or raise the limit with {ENV}=<bytes>")


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
