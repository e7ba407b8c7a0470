#!/usr/bin/env bash
# Builds the installable extension, dist/lca_avatars-<version>.zip, with the extension tool of
# Blender 4.5 LTS (sets up .venv-blender first if needed). `--output-dir DIR` puts it elsewhere.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
bash scripts/setup_blender_env.sh >/dev/null

# bpy writes preferences and temporary files on import: keep them in the checkout.
sandbox="$repo_root/.cache/blender-home"
mkdir -p "$sandbox/config" "$sandbox/cache" "$sandbox/tmp"
HOME="$sandbox" XDG_CONFIG_HOME="$sandbox/config" XDG_CACHE_HOME="$sandbox/cache" TMPDIR="$sandbox/tmp" \
    .venv-blender/bin/python scripts/package.py "$@"
