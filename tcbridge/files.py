# -*- test-case-name: tests.unit.test_store -*-
"""
Files written so that a crash never leaves half of one: atomic replacement
with fsync, quiet removal, small checks (size and CRC-32), and whether a
folder can be written to at all.
"""

from __future__ import annotations

import os
import tempfile
import zlib

#: Temporary files of L{write_atomic} and of feed builds start with this.
TEMP_PREFIX = ".tmp-"


def fsync_directory(directory: str) -> None:
    """
    Make a rename in C{directory} durable.
    """
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: str, data: bytes) -> None:
    """
    Replace the file at C{path} with C{data} so that a reader or a crash sees
    the old content or the new, never part of it: temporary file in the same
    directory, fsync, rename, fsync of the directory.

    This blocks; call it from a thread for large data.

    :raises OSError: if the directory is missing or not writable; the old
        file is then untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_directory(directory)


def unlink_quietly(path: str) -> None:
    """
    Remove the file at C{path} if it is there.
    """
    try:
        os.unlink(path)
    except OSError:
        pass


def read_file(path: str) -> bytes:
    """
    The whole content of the file at C{path}.
    """
    with open(path, "rb") as f:
        return f.read()


def file_check(path: str, name: str) -> dict[str, int]:
    """
    The size and CRC-32 of a file, for the meta file, as C{<name>_size}
    and C{<name>_crc32}.
    """
    data = read_file(path)
    return {f"{name}_size": len(data), f"{name}_crc32": zlib.crc32(data)}


def folder_problem(folder: str) -> str | None:
    """
    Why the feed cannot be kept in C{folder} (made if missing, then written
    to for real), or C{None} if it can.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=TEMP_PREFIX, suffix=".json"):
            pass
    except OSError as e:
        return f"{folder!r} cannot be used ({e.strerror or e})"
    return None
