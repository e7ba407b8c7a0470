"""Screenshots of an avatar in a real Blender window: the viewport preview as an artist sees it.

Run in a Blender 4.2 or newer that has a display (an X server, or Xvfb on a headless machine):

    blender --factory-startup --python scripts/viewport_snapshot.py -- AVATAR.lca OUT_DIR [--x11-grab]

It builds the extension from this checkout, installs and enables it the way an artist does (into a
throw-away user folder), imports the avatar, and saves four screenshots of the 3D view to OUT_DIR:
`viewport_captured.png` (front, as captured), `viewport_relit.png` (a sun and a warm point light),
`viewport_posed.png` (arm raised, fist, jaw open, through the armature and the shape keys) and
`viewport_occluded.png` (a cube in front of the chest hides the splats behind it). Then it quits,
with exit code 0 on success. The tests' bpy module has no windows, so this is the check of the
draw handler in a real viewport, its event loop and its redraws. `--x11-grab` takes the pictures
from the X server with `xwd` and netpbm instead of Blender's screenshot operator, which reads back
black images under Xvfb; for example, on a machine with no display:

    xvfb-run -s "-screen 0 1600x1000x24" blender --factory-startup \
        --python scripts/viewport_snapshot.py -- out/example.lca out/viewport --x11-grab
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import bpy

REPO_ROOT = Path(__file__).resolve().parents[1]
REDRAW_S = 0.5  # the pause between steps: the window redraws in between


def _arguments() -> tuple[Path, Path, bool]:
    arguments = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    x11_grab = "--x11-grab" in arguments
    arguments = [argument for argument in arguments if argument != "--x11-grab"]
    if len(arguments) != 2 or not Path(arguments[0]).is_file():
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    return Path(arguments[0]).resolve(), Path(arguments[1]).resolve(), x11_grab


def _install_extension() -> None:
    """Build the extension zip from the checkout and install it into the user repository, enabled."""
    package = Path(tempfile.mkdtemp(prefix="lca-snapshot-")) / "lca_avatars.zip"
    subprocess.run(
        [
            bpy.app.binary_path,
            "--factory-startup",
            "--command",
            "extension",
            "build",
            "--source-dir",
            str(REPO_ROOT),
            "--output-filepath",
            str(package),
        ],
        check=True,
        capture_output=True,
    )
    result = bpy.ops.extensions.package_install_files(
        filepath=str(package), repo="user_default", enable_on_install=True
    )
    if result != {"FINISHED"}:
        raise RuntimeError(f"installing the extension returned {result}")


def _view_3d(window: bpy.types.Window) -> tuple[bpy.types.Area, bpy.types.Region]:
    area = max((a for a in window.screen.areas if a.type == "VIEW_3D"), key=lambda a: a.width * a.height)
    return area, next(region for region in area.regions if region.type == "WINDOW")


def _screenshot(window: bpy.types.Window, area: bpy.types.Area, path: Path, x11_grab: bool) -> None:
    if not x11_grab:
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.screen.screenshot_area(filepath=str(path))
    else:
        # The X server's copy of the screen, cut to the 3D view (Blender's own screenshot reads
        # back a black image under Xvfb with Mesa's llvmpipe). The window sits at the screen's
        # top left, as Xvfb without a window manager places it; Blender's y runs upwards.
        top = window.height - area.y - area.height
        screen = subprocess.run(["xwd", "-root", "-silent"], check=True, capture_output=True).stdout
        pixels = subprocess.run(["xwdtopnm"], input=screen, check=True, capture_output=True).stdout
        cut = [
            "pnmcut",
            "-left",
            str(area.x),
            "-top",
            str(top),
            "-width",
            str(area.width),
            "-height",
            str(area.height),
        ]
        pixels = subprocess.run(cut, input=pixels, check=True, capture_output=True).stdout
        path.write_bytes(subprocess.run(["pnmtopng"], input=pixels, check=True, capture_output=True).stdout)
    print(f"wrote {path}")


def _steps(avatar_path: Path, out_dir: Path, x11_grab: bool):
    """The session, one step per timer tick (each `yield` lets the window redraw)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # An empty scene (no factory cube, camera, light); loading a file also closes the splash.
    bpy.ops.wm.read_homefile(use_empty=True)
    yield
    window = bpy.context.window_manager.windows[0]
    area, region = _view_3d(window)
    space = area.spaces.active

    _install_extension()
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.lca.import_avatar(filepath=str(avatar_path))
    name = avatar_path.stem
    rig, body, splats = (bpy.data.objects[f"{name}_{part}"] for part in ("rig", "body", "splats"))
    rig.hide_set(True)  # the bones would cover the face; the armature still drives the body
    space.overlay.show_overlays = False
    space.shading.type = "SOLID"
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == splats)
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.view3d.view_axis(type="FRONT")
        bpy.ops.view3d.view_selected()
    splats.select_set(False)
    area.tag_redraw()
    yield
    yield
    _screenshot(window, area, out_dir / "viewport_captured.png", x11_grab)

    splats.lca.look = "RELIT"
    sun = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(-30))
    warm = bpy.data.objects.new("Warm", bpy.data.lights.new("Warm", "POINT"))
    warm.data.energy, warm.data.color = 300.0, (1.0, 0.55, 0.3)
    warm.location = (1.2, -1.0, 1.4)
    for light in (sun, warm):
        bpy.context.scene.collection.objects.link(light)
    area.tag_redraw()
    yield
    _screenshot(window, area, out_dir / "viewport_relit.png", x11_grab)

    splats.lca.look = "CAPTURED"
    bones = rig.pose.bones
    for bone_name, degrees in (("upperarm01.L", 70.0), ("lowerarm01.L", 40.0)):
        bones[bone_name].rotation_mode = "XYZ"
        bones[bone_name].rotation_euler = (0.0, 0.0, math.radians(degrees))
    body.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    bpy.context.view_layer.objects.active = rig
    bpy.ops.lca.hand_pose(side="L", curl=1.0)
    area.tag_redraw()
    yield
    _screenshot(window, area, out_dir / "viewport_posed.png", x11_grab)

    cube = bpy.data.objects.new("Occluder", bpy.data.meshes.new("Occluder"))
    cube.data.from_pydata(
        [(x, y, z) for x in (-0.15, 0.15) for y in (-0.45, -0.35) for z in (1.05, 1.35)],
        [],
        [(0, 1, 3, 2), (4, 6, 7, 5), (0, 2, 6, 4), (1, 5, 7, 3), (0, 4, 5, 1), (2, 3, 7, 6)],
    )
    bpy.context.scene.collection.objects.link(cube)
    area.tag_redraw()
    yield
    _screenshot(window, area, out_dir / "viewport_occluded.png", x11_grab)


def main() -> None:
    steps = _steps(*_arguments())

    def tick() -> float | None:
        try:
            next(steps)
        except StopIteration:
            bpy.ops.wm.quit_blender()
            return None
        except Exception:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        return REDRAW_S

    bpy.app.timers.register(tick, first_interval=1.0, persistent=True)  # survives the file load


main()
