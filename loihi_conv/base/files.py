"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one.
And the checks on what a user names as a destination or as a data file, before anything
touches it."""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import zipfile
from errno import EDQUOT, ENOSPC
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success fsync and rename it over
    ``path``; on any error (or SIGINT/SIGTERM, see ``group.py``) remove it and leave ``path``
    untouched. A destination that exists and is not a regular file (a device such as
    /dev/null, a FIFO, a directory) is refused, never replaced. Disk full, read-only or
    permission errors become one LoihiConvError naming ``path``."""
    path = Path(path)
    check_destination(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        if isinstance(e, RuntimeError) and "writ" not in str(e).lower():
            raise
        _discard(tmp)
        raise write_error(path, e) from None
    finally:
        _discard(tmp)


def _discard(tmp: Path | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def check_destination(path: Path | str) -> None:
    """Refuse an output path that exists and is not a regular file (before anything is written)."""
    from loihi_conv.base.errors import LoihiConvError

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise write_error(Path(path), e) from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise LoihiConvError(f"cannot write {path}: it is {kind}; refusing to replace it with a file",
                             "name a regular file path for the output")


def check_writable(*paths: Path | str | None) -> None:
    """Before the work starts: each output path (None: not asked for) is a regular file or
    absent, in a directory we may create files in (or that can be created)."""
    from loihi_conv.base.errors import LoihiConvError

    for p in paths:
        if p is None:
            continue
        p = Path(p)
        check_destination(p)
        parent = next((d for d in (p.parent, *p.parent.parents) if d.exists()), Path("."))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise LoihiConvError(f"cannot write {p}: {parent} is not writable (read-only or no "
                                 "permission); nothing was done", "choose a writable location for the output")


def write_error(path: Path, e: BaseException):
    """One LoihiConvError for a failed write of ``path``: the OS reason, never a temp path."""
    from loihi_conv.base.errors import LoihiConvError

    errno = getattr(e, "errno", None)
    reason = os.strerror(errno) if errno else str(e).splitlines()[0][:120]
    room = ""
    if errno in (None, ENOSPC, EDQUOT):
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
            room = f" ({free // 1024} KiB free there)"
    return LoihiConvError(f"cannot write {path}: {reason}{room}; nothing was written",
                          "free disk space, or choose a writable location for the output")


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary path (``atomic_path``)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


# ---- data files that must not run code ------------------------------------------------------
# Entries a TorchScript / torch.package archive has and a plain ``torch.save`` zip never has.
# torch 2.3's ``torch.load(weights_only=True)`` hands a zip holding ``constants.pkl`` to
# ``torch.jit.load``, which runs the archive's ``__setstate__`` code: refuse such zips first.
_CODE_ENTRIES = ("constants.pkl", "code/", ".data/extern_modules", "extra/")


def refuse_code_archive(path: Path | str, what: str = "weights file") -> None:
    """Raise LoihiConvError if ``path`` is a zip archive carrying code (TorchScript,
    torch.package) rather than plain tensors. Reads only the zip directory, never an entry."""
    from loihi_conv.base.errors import LoihiConvError

    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy pickle format: torch.load(weights_only=True) runs no code on it
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # unreadable: torch.load's own error names it
    for name in names:
        inner = name.split("/", 1)[1] if "/" in name else name
        if inner.startswith(_CODE_ENTRIES) or inner.endswith(".py"):
            raise LoihiConvError(
                f"{what} {path} is a TorchScript/torch.package archive (it holds {inner!r}), not a "
                "plain state_dict; loading it would run the code inside",
                "save the weights with torch.save(model.state_dict(), path) and pass that file")
