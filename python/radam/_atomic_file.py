"""Replacing a file atomically, for radam.checkpoint.

The new file is written to a temporary file in the same folder, flushed and
fsynced, given the old file's mode, and renamed over ``path``; the folder is then
fsynced. The writing process holds an exclusive ``flock`` on its temporary until
it is in place, so a later write to the same ``path`` removes the temporaries of
writes that died (their lock can be taken) and never one a live write holds.
Windows has no ``flock``: there leftovers stay, and are safe to delete.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from typing import BinaryIO, Callable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

TEMP_INFIX = ".radam-"  # in the temporary file's name: ".<name>.radam-<random>.tmp"


def replace(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write the file at ``path`` as ``write(f)`` writes it, whole or not at all."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"path {path!r} is a directory; give a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the folder of path {path!r} does not exist")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    name = os.path.basename(path)
    remove_dead_temporaries(directory, name)
    fd, tmp = _locked_temporary(directory, name)
    # The lock lasts while fd is open: until the file is in place. Windows, which
    # cannot rename an open file, has no flock: there it is closed before.
    hold = fcntl is not None
    try:
        with open(fd, "wb", closefd=not hold) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if hold:
            os.close(fd)  # releases the lock, once the file is in place (or removed)
    _fsync_dir(directory)


def _locked_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new temporary file for a save to ``name`` in ``directory``, and its
    descriptor, which holds an exclusive ``flock`` on it until it is closed: a
    later save removes the temporaries whose lock it can take (their saves
    died) and never one that a live save is writing."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}{TEMP_INFIX}", suffix=".tmp", dir=directory)
        if fcntl is None:
            return fd, tmp
        try:
            try:
                # Blocks only while a cleaner that opened the file in the moment
                # before holds it; it then removes the file, so take another.
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without flock: no lock, and no cleanup either
                return fd, tmp
            if _is_named(fd, tmp):
                return fd, tmp
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)


def remove_dead_temporaries(directory: str, name: str) -> None:
    """Remove the temporary files that saves to ``name`` killed mid-write left in
    ``directory``: those whose lock can be taken. Best effort: one that cannot be
    opened, locked or removed stays, and the save goes on."""
    if fcntl is None:  # Windows has no flock: leftovers stay (safe to delete by hand)
        return
    # The names _locked_temporary gives (mkstemp's random part is [a-z0-9_]).
    pattern = re.compile(rf"\.{re.escape(name)}{re.escape(TEMP_INFIX)}[a-z0-9_]+\.tmp\Z")
    try:
        entries = [e for e in os.listdir(directory) if pattern.match(e)]
    except OSError:
        return
    for entry in entries:
        temp = os.path.join(directory, entry)
        try:
            fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its save lives
            if stat.S_ISREG(os.fstat(fd).st_mode) and _is_named(fd, temp):
                os.unlink(temp)  # while holding the lock, so no live save can be using it
        except OSError:
            pass
        finally:
            os.close(fd)


def _is_named(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened (nor need fsync)
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
