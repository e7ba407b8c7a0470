#!/usr/bin/env bash
# The whole test suite: lint, the core and engine tests (.venv), and the Blender tests in bpy 4.5
# (.venv-blender). Sets up both environments first if needed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
bash scripts/setup_engine_env.sh
bash scripts/setup_blender_env.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest tests -q -p no:cacheprovider
# The Blender side in Blender's own Python and numpy 1.26, separately: bpy and the engine's
# numpy 2 do not share an environment. The core's numpy-only tests run there too.
timeout 900 .venv-blender/bin/python -m pytest tests/blender -q -p no:cacheprovider
PYTHONPATH="$repo_root" .venv-blender/bin/python -m pytest tests/core -q -p no:cacheprovider
