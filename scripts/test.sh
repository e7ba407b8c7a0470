#!/usr/bin/env bash
# The whole test suite: lint, the core and engine tests (.venv), then the Blender tests and the
# core's numpy-only tests on each Blender: bpy 4.5 LTS (.venv-blender, numpy 1.26) and bpy 5.3
# (.venv-blender53, numpy 2). Sets up all three environments first if needed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
bash scripts/setup_engine_env.sh
bash scripts/setup_blender_env.sh
bash scripts/setup_blender53_env.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest tests -q -p no:cacheprovider
# The Blender side in each Blender's own Python and numpy, separately: bpy and the engine's
# packages do not share an environment, and the Blender-loaded core must work with both numpys.
for blender_venv in .venv-blender .venv-blender53; do
    echo "== tests/blender and tests/core in $blender_venv"
    timeout 900 "$blender_venv/bin/python" -m pytest tests/blender -q -p no:cacheprovider
    PYTHONPATH="$repo_root" "$blender_venv/bin/python" -m pytest tests/core -q -p no:cacheprovider
done
