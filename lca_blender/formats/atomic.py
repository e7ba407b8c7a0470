"""Atomic file writing: the output appears whole under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import AvatarWriteError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and an existing
    file at `path` is left untouched.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise AvatarWriteError(f"Cannot write '{target}': the folder '{folder}' does not exist.")
    try:
        # The real extension stays last: some writers (ffmpeg) pick the format from it.
        handle, temporary_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".partial{target.suffix}", dir=folder
        )
    except OSError as error:
        raise AvatarWriteError(f"Cannot write into '{folder}': {error.strerror}.") from None
    os.close(handle)
    temporary = Path(temporary_name)
    # mkstemp makes the file private; give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield temporary
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise AvatarWriteError(f"Cannot write '{target}': {error.strerror or error}.") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
