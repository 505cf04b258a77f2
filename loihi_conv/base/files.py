"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one.
And the checks on what a user names as a destination or as a data file, before anything
touches it."""
from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success fsync and rename it over
    ``path``; on any error remove it and leave ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
