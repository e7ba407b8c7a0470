#!/usr/bin/env bash
# Creates .venv: the engine's environment (torch CPU 2.13.0, anny, smplx, the lca_blender package
# installed editable with its `lca-avatar` command, pytest and ruff).
# Idempotent: a stamp records the pyproject.toml it was built from; nothing is redone while it matches.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
python_bin="${PYTHON:-python3.11}"
stamp="$venv/.lca-setup-$(sha256sum "$repo_root/pyproject.toml" | cut -c1-16)"

if [[ -f "$stamp" ]] && "$venv/bin/python" -c "import torch, anny, mediapipe, pycolmap, lca_blender" >/dev/null 2>&1; then
    exit 0
fi
if ! command -v "$python_bin" >/dev/null 2>&1; then
    echo "setup_engine_env: $python_bin not found; install CPython 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

echo "setup_engine_env: creating $venv (a few minutes the first time)"
"$python_bin" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: anything that asks for an unpinned torch would pull GBs of CUDA wheels.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e "$repo_root[engine,test]"
# mediapipe 0.10.21 is the last release that bundles its Holistic models (offline landmarks and
# masks). It declares numpy<2 but runs with numpy 2: install it alone; its real needs are in [engine].
"${pip[@]}" --no-deps "mediapipe==0.10.21"
rm -f "$venv"/.lca-setup-*
touch "$stamp"
"$venv/bin/python" -c "import torch, anny, lca_blender; print('setup_engine_env: torch', torch.__version__, '| anny', anny.__version__)"
