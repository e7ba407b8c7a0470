#!/usr/bin/env bash
# The main job on the built-in default: make a sample avatar on the Anny body, export it posed
# as 3DGS .ply files, and describe it. Sets up .venv first if needed. Outputs go to out/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
bash scripts/setup_engine_env.sh
lca=(.venv/bin/lca-avatar)
mkdir -p out
"${lca[@]}" new -o out/sample.lca
"${lca[@]}" export out/sample.lca --ply out/sample_rest.ply
"${lca[@]}" export out/sample.lca --ply out/sample_wave.ply --pose wave --expression jawOpen=0.4
"${lca[@]}" info out/sample.lca
echo "Done: out/sample.lca (open it in Blender with the add-on), out/sample_rest.ply and out/sample_wave.ply (any 3DGS viewer)"
