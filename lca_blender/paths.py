"""Where the project keeps its caches (body-model assets, converted model files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: $LCA_CACHE_DIR, else $XDG_CACHE_HOME/lca-avatars, else ~/.cache/lca-avatars."""
    if os.environ.get("LCA_CACHE_DIR"):
        return Path(os.environ["LCA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lca-avatars"
