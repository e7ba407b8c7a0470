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
"${lca[@]}" render out/sample.lca -o out/sample_views.png --camera front,side,back --size 384
"${lca[@]}" render out/sample.lca -o out/sample_relit.png --camera front,back --size 384 --look relit \
    --pose finger-curl-jaw-open \
    --light "sun:direction=0.45,0.8,-0.55;color=1,0.8,0.6;strength=3.5" \
    --light "sun:direction=-0.5,-0.85,-0.2;color=0.5,0.7,1;strength=3" \
    --light "ambient:color=1,1,1;strength=0.2"
"${lca[@]}" render out/sample.lca -o out/sample_turntable.gif --turntable 24 --size 256
"${lca[@]}" info out/sample.lca
echo "Done in out/: sample.lca (open it in Blender with the add-on), sample_rest.ply and sample_wave.ply"
echo "(any 3DGS viewer), sample_views.png, sample_relit.png (warm key, cool rim) and sample_turntable.gif"
