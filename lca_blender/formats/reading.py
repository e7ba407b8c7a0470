"""Reading untrusted files: open only regular files, and read no more than a cap, in bounded chunks."""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

READ_CHUNK_BYTES = 16 * 1024**2
"""How much one read asks for: what a stream holds decides the memory used, never what it claims."""


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for binary reading, if it is a regular file; OSError otherwise.

    Opening never waits: a named pipe would block `open()` until a writer came, and a device
    (`/dev/zero`) would never end, so both are refused, as is a folder.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a folder, not a file", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "it is not a regular file but a pipe, socket or device", str(path))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_at_most(stream: BinaryIO, limit: int) -> bytearray:
    """The stream's bytes up to its end, or the first `limit` + 1 when it holds more than `limit`.

    The buffer grows by what each bounded read returns (a resize, not a copy of the whole), so a
    size field that lies costs nothing and the caller tells "too large" by the length.
    """
    data = bytearray()
    while len(data) <= limit:
        chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return data
