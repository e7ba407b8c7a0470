"""The subjects of a batch: one folder of photos each, and the fingerprint of what shapes its avatar."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import AvatarError

AVATAR_SUFFIX = ".lca"
# Bump when what a fingerprint covers changes meaning: every avatar is then built again.
FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class Subject:
    """One person of the batch: a folder of photos and the avatar it makes."""

    name: str  # the folder's name, and the avatar's
    folder: Path
    output: Path  # <output folder>/<name>.lca

    def inputs(self) -> list[Path]:
        """The files `lca-avatar build FOLDER` reads: the folder's visible regular files, by name."""
        return sorted(
            path for path in self.folder.iterdir() if path.is_file() and not path.name.startswith(".")
        )


def find_subjects(root: Path, output_folder: Path) -> list[Subject]:
    """Each visible folder of `root` that holds a visible file is a subject, in name order.

    Raises AvatarError when `root` is not a folder, or when two subjects would write one avatar
    (names that differ only in case, on a file system that does not tell them apart).
    """
    root, output_folder = Path(root), Path(output_folder)
    if not root.is_dir():
        raise AvatarError(
            f"'{root}' is not a folder. Give a folder holding one folder of photos per subject."
        )
    subjects = [
        Subject(folder.name, folder, output_folder / f"{folder.name}{AVATAR_SUFFIX}")
        for folder in sorted(root.iterdir(), key=lambda path: path.name)
        if folder.is_dir() and not folder.name.startswith(".") and _holds_a_file(folder)
    ]
    by_output: dict[str, str] = {}
    for subject in subjects:
        other = by_output.setdefault(subject.name.casefold(), subject.name)
        if other != subject.name:
            raise AvatarError(
                f"The subject folders '{other}' and '{subject.name}' differ only in case, so their avatars "
                "would overwrite each other on some systems: rename one."
            )
    return subjects


def _holds_a_file(folder: Path) -> bool:
    return any(path.is_file() and not path.name.startswith(".") for path in folder.iterdir())


def fingerprint(subject: Subject, settings: Mapping[str, Any]) -> str:
    """A hash of everything that shapes the subject's avatar: its files' names and bytes, the build
    settings and the engine's version. Equal fingerprints mean an existing avatar is still current."""
    digest = hashlib.sha256(
        json.dumps(
            {"version": FINGERPRINT_VERSION, "engine": __version__, "settings": dict(settings)},
            sort_keys=True,
            default=str,
        ).encode()
    )
    for path in subject.inputs():
        digest.update(path.name.encode() + b"\0")
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as error:
            # The build reports an unreadable file in its own words; here it only changes the hash.
            digest.update(f"unreadable: {error.strerror}".encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]
