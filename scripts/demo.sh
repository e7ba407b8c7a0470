#!/usr/bin/env bash
# The main job on the built-in default: build an avatar from the example photos shipped in
# examples/clothed (a synthetic person in a flared skirt with a ponytail, photographed all round in
# a grey studio and rendered by Cycles through Blender's default AgX view transform), preview it,
# and score it against the subject's ground truth. Sets up .venv first if needed. Outputs go to out/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
bash scripts/setup_engine_env.sh
lca=(.venv/bin/lca-avatar)
mkdir -p out
# --tone-curve agx: the photos went through Blender's AgX view transform (a camera's JPEGs: standard).
"${lca[@]}" build examples/clothed/photos -o out/example.lca --quality standard --tone-curve agx
"${lca[@]}" render out/example.lca -o out/example_turntable.gif --turntable 24 --size 256
"${lca[@]}" render out/example.lca -o out/example_views.png --camera front,side,back --size 384
"${lca[@]}" render out/example.lca -o out/example_relit.png --camera front,back --size 384 --look relit \
    --pose finger-curl-jaw-open \
    --light "sun:direction=0.45,0.8,-0.55;color=1,0.8,0.6;strength=3.5" \
    --light "sun:direction=-0.5,-0.85,-0.2;color=0.5,0.7,1;strength=3" \
    --light "ambient:color=1,1,1;strength=0.2"
"${lca[@]}" export out/example.lca --ply out/example_wave.ply --pose wave --expression jawOpen=0.4
"${lca[@]}" export out/example.lca --gltf out/example.glb
# Score the avatar against the subject's ground truth (held-out views, a novel pose, new lights).
.venv/bin/python bench/eval_reconstruction.py --subject examples/clothed --avatar out/example.lca --out out/eval
"${lca[@]}" info out/example.lca
echo "Done in out/: example.lca (open it in Blender with the add-on), example_turntable.gif,"
echo "example_views.png, example_relit.png (warm key, cool rim, curled fingers, open jaw),"
echo "example_wave.ply (any 3DGS viewer), example.glb (rigged glTF splats) and"
echo "eval/contact_sheet.png with eval/scores.json."
