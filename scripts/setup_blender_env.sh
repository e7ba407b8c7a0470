#!/usr/bin/env bash
# Creates .venv-blender: Blender as a Python module (bpy 4.5 LTS, cp311) and pytest, for tests/blender.
# Idempotent: does nothing when the environment already imports bpy.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-blender"
python_bin="${PYTHON:-python3.11}"

# bpy prints a few lines on first import and may write into the user's home: keep it in the checkout.
home_dir="$repo_root/.cache/blender-home"
mkdir -p "$home_dir"

if [[ -x "$venv/bin/python" ]] && HOME="$home_dir" "$venv/bin/python" -c "import bpy, pytest" >/dev/null 2>&1; then
    echo "setup_blender_env: $venv already imports bpy; nothing to do"
    exit 0
fi

if ! command -v "$python_bin" >/dev/null 2>&1; then
    echo "setup_blender_env: $python_bin not found (the bpy 4.5 wheel is built for CPython 3.11 only)" >&2
    exit 1
fi

"$python_bin" -m venv "$venv"
# The bpy wheel is ~370 MB and brings numpy 1.26; --quiet keeps the log short, errors still print.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "bpy==4.5.*" "pytest>=8"

HOME="$home_dir" "$venv/bin/python" -c "import bpy; print('setup_blender_env: bpy', bpy.app.version_string)"
