#!/usr/bin/env bash
# Creates .venv-blender53: Blender 5.3 as a Python module (bpy 5.3, cp313, numpy 2) and pytest, for
# tests/blender on the Blender artists download today (.venv-blender keeps 4.5 LTS).
# Idempotent: does nothing when the environment already imports bpy 5.3.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-blender53"
# The bpy 5.1+ wheels are built for CPython 3.13 only; pyenv has 3.13.0 without it being global.
python_bin="${PYTHON:-python3.13}"
export PYENV_VERSION="${PYENV_VERSION:-3.13.0}"

# bpy prints a few lines on first import and may write into the user's home: keep it in the checkout.
home_dir="$repo_root/.cache/blender-home"
mkdir -p "$home_dir"

imports_bpy_53() {
    HOME="$home_dir" "$venv/bin/python" -c \
        "import bpy, pytest, sys; sys.exit(bpy.app.version[:2] != (5, 3))" >/dev/null 2>&1
}

if [[ -x "$venv/bin/python" ]] && imports_bpy_53; then
    echo "setup_blender53_env: $venv already imports bpy 5.3; nothing to do"
    exit 0
fi

if ! command -v "$python_bin" >/dev/null 2>&1 || ! "$python_bin" --version >/dev/null 2>&1; then
    echo "setup_blender53_env: $python_bin not found (the bpy 5.3 wheel is built for CPython 3.13 only)" >&2
    exit 1
fi

"$python_bin" -m venv "$venv"
# The bpy wheel is ~430 MB and brings numpy 2; --quiet keeps the log short, errors still print.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "bpy==5.3.*" "pytest>=8"

HOME="$home_dir" "$venv/bin/python" -c "import bpy; print('setup_blender53_env: bpy', bpy.app.version_string)"
