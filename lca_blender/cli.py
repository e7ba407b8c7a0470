"""The `lca-avatar` command: make, inspect and export avatars (the engine the Blender add-on runs).

Exit codes: 0 done, 2 bad input (the message says what to do), 1 internal error (a bug: the
traceback is kept), 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import AvatarError
from .maths.tone import TONE_CURVES
from .progress import Cancelled, JsonLinesProgress, Progress, TerminalProgress

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
MAX_GAUSSIANS = 20_000_000
logger = logging.getLogger("lca_blender")


def _key_value(text: str) -> tuple[str, float]:
    name, separator, value = text.partition("=")
    try:
        if not separator or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got '{text}'") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got '{text}'") from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got '{text}'")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'")
    return value


PROGRESS_KINDS = ("bar", "jsonl", "none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lca-avatar",
        description="LCA Avatars engine: rigged, relightable 3D Gaussian avatars. "
        "Each command has its own --help.",
        epilog="Exit codes: 0 done, 2 bad input, 1 internal error, 130 cancelled.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--progress",
        choices=PROGRESS_KINDS,
        default="bar",
        help="how to show progress: a terminal bar (default), JSON lines on stdout (for the "
        "Blender add-on), or nothing",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens in detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_new(commands)
    _add_info(commands)
    _add_export(commands)
    _add_render(commands)
    _add_animate(commands)
    _add_build(commands)
    _add_batch(commands)
    return parser


def _add_new(commands: argparse._SubParsersAction) -> None:
    new = commands.add_parser(
        "new",
        help="make a sample avatar on the default body (no photos needed)",
        description="Make an avatar on the default Anny body (or an SMPL-X body from your own "
        "model file), covered in Gaussians with a procedural outfit (striped shirt, checked "
        "trousers). The first run extracts the body model (about a minute); later runs take seconds.",
    )
    new.add_argument("-o", "--output", required=True, type=Path, help="the .lca file to write")
    new.add_argument(
        "--gaussians",
        type=_positive_int,
        default=100_000,
        help=f"number of Gaussians (default 100000, at most {MAX_GAUSSIANS})",
    )
    new.add_argument(
        "--sh-degree", type=int, choices=(0, 1, 2, 3), default=1, help="spherical-harmonic degree (default 1)"
    )
    new.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    new.add_argument(
        "--phenotype",
        metavar="NAME=VALUE",
        type=_key_value,
        action="append",
        default=[],
        help="an Anny phenotype parameter in [0, 1], repeatable: gender, age, muscle, weight, height, "
        "proportions (default 0.5 each)",
    )
    new.add_argument(
        "--smplx",
        type=Path,
        metavar="MODEL.npz",
        help="use SMPL-X instead of Anny, from the model file you downloaded from its authors "
        "(the .npz release; converted once into the cache)",
    )
    new.add_argument(
        "--betas",
        type=_float_list,
        metavar="B0,B1,...",
        help="SMPL-X shape coefficients, comma-separated (with --smplx; default all 0)",
    )


def _add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser(
        "info", help="describe an .lca avatar or a 3DGS .ply", description="Describe an avatar or splat file."
    )
    info.add_argument("file", type=Path, help="an .lca avatar or a 3DGS .ply")
    info.add_argument("--json", action="store_true", help="print the description as JSON")


def _add_pose_options(command: argparse.ArgumentParser) -> None:
    """--pose and --expression, which export and render read the same way."""
    command.add_argument(
        "--pose",
        default="rest",
        help="a preset (rest, t-pose, fists, point, wave, finger-curl-jaw-open) or a pose .json file",
    )
    command.add_argument(
        "--expression",
        metavar="NAME=WEIGHT",
        type=_key_value,
        action="append",
        default=[],
        help="an ARKit expression weight, repeatable, e.g. --expression jawOpen=0.7",
    )


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export a posed avatar as a 3DGS .ply or a rigged glTF .glb",
        description="Pose an avatar and write its Gaussians as a 3DGS .ply that SuperSplat, "
        "gsplat and other splat viewers read, or as glTF 2.0 with KHR_gaussian_splatting: a rigged "
        "splat avatar (skeleton, skinned splats, body mesh with the expressions as morph targets, "
        "optionally an animation).",
    )
    export.add_argument("file", type=Path, help="the .lca avatar")
    outputs = export.add_mutually_exclusive_group(required=True)
    outputs.add_argument("--ply", type=Path, help="the .ply file to write")
    outputs.add_argument("--gltf", type=Path, metavar="OUT.glb", help="the binary glTF (.glb) to write")
    export.add_argument(
        "--animation",
        type=Path,
        metavar="POSES.json",
        help="with --gltf: an animation file (fps and a list of poses) to include",
    )
    export.add_argument(
        "--splats-only",
        action="store_true",
        help="with --gltf: write only the posed splats (what any KHR_gaussian_splatting viewer shows)",
    )
    _add_pose_options(export)


def _add_render(commands: argparse._SubParsersAction) -> None:
    render = commands.add_parser(
        "render",
        help="render a posed avatar to a PNG, a contact sheet or a turntable",
        description="Render an avatar with the differentiable Gaussian renderer (gsplat on CUDA, "
        "a portable torch rasterizer elsewhere), posed and lit as you ask.",
        epilog="Lights: TYPE:key=value;... e.g. 'sun:direction=0.4,0.8,-0.5;color=1,0.86,0.72;strength=3', "
        "'point:position=1,-2,2;power=400', 'spot:position=...;direction=...;power=...;spot_size_deg=40', "
        "'area:position=...;direction=...;power=...;size=1', 'ambient:color=1,1,1;strength=0.3'. "
        "A direction is the way the light travels (Blender's -Z of the light). Without any light, "
        "the relit look uses a warm key and a cool rim light.",
    )
    render.add_argument("file", type=Path, help="the .lca avatar")
    render.add_argument(
        "-o", "--output", required=True, type=Path, help="the .png (or .gif/.webp/.mp4 turntable)"
    )
    _add_pose_options(render)
    render.add_argument(
        "--camera",
        default="front",
        help="front, side, back or orbit:N, or several with commas; several make a contact sheet",
    )
    render.add_argument("--look", choices=("captured", "relit"), default="captured", help="default: captured")
    lights = render.add_mutually_exclusive_group()
    lights.add_argument("--light", metavar="SPEC", action="append", default=[], help="a light (repeatable)")
    lights.add_argument("--lights", type=Path, metavar="SCENE.json", help="lights from a JSON file")
    render.add_argument("--size", type=_image_size, default=(512, 512), metavar="W[xH]", help="default 512")
    render.add_argument("--background", type=_float_list, default=[0.15, 0.15, 0.15], metavar="R,G,B")
    render.add_argument("--transparent", action="store_true", help="write RGBA PNGs (alpha = coverage)")
    render.add_argument(
        "--turntable", type=_positive_int, metavar="FRAMES", help="render FRAMES views round the avatar"
    )
    render.add_argument("--fps", type=_positive_int, default=24, help="turntable frame rate (default 24)")
    render.add_argument(
        "--backend", choices=("auto", "torch", "gsplat"), default="auto", help="rasterizer (default auto)"
    )


def _add_animate(commands: argparse._SubParsersAction) -> None:
    animate = commands.add_parser(
        "animate",
        help="render an avatar playing motion: face capture, BVH, AMASS or an animation file",
        description="Drive an avatar with motion and render it with the Gaussian renderer: a face "
        "capture (Live Link Face .csv or JSON lines), BVH motion capture or SMPL-X / AMASS motion "
        "(retargeted onto the avatar's rig, whatever the source's rest pose and size), or an "
        "animation file of poses. The camera stays still, framed on the whole clip.",
        epilog="BVH bone names are matched by a bone map: Mixamo's and CMU's are built in and chosen "
        "automatically; save one from Blender (Object > Animation > Save Bone Map) to edit for "
        "another naming. Exit codes: 0 done, 2 bad input, 1 internal error, 130 cancelled.",
    )
    animate.add_argument("file", type=Path, help="the .lca avatar")
    sources = animate.add_mutually_exclusive_group(required=True)
    sources.add_argument("--face", type=Path, metavar="CAPTURE.csv", help="a Live Link Face .csv or .jsonl")
    sources.add_argument("--bvh", type=Path, metavar="MOTION.bvh", help="BVH motion capture")
    sources.add_argument("--amass", type=Path, metavar="MOTION.npz", help="SMPL-X / AMASS motion")
    sources.add_argument("--animation", type=Path, metavar="POSES.json", help="an animation file of poses")
    animate.add_argument(
        "-o", "--output", required=True, type=Path, help="an .mp4, or a folder for frame_0000.png, ..."
    )
    animate.add_argument(
        "--frames", metavar="A:B", help="only the source's frames A to B (from 0, both included; A: or :B)"
    )
    animate.add_argument(
        "--fps", type=float, metavar="RATE", help="output frame rate (default: the source's; resampled)"
    )
    animate.add_argument(
        "--bone-map",
        metavar="NAME|MAP.json",
        help="with --bvh: mixamo, cmu_bvh or a bone map file (default: the built-in map that fits)",
    )
    animate.add_argument(
        "--smplx",
        type=Path,
        metavar="MODEL.npz",
        help="with --amass: the SMPL-X model file, for the subject's own skeleton (default: a generic one)",
    )
    animate.add_argument("--no-root-motion", action="store_true", help="keep the avatar in place")
    animate.add_argument("--no-fingers", action="store_true", help="leave the fingers as they are")
    animate.add_argument("--camera", default="front", choices=("front", "side", "back"), help="default front")
    animate.add_argument(
        "--look", choices=("captured", "relit"), default="captured", help="default: captured"
    )
    animate.add_argument(
        "--light", metavar="SPEC", action="append", default=[], help="a light, as for render"
    )
    animate.add_argument("--size", type=_image_size, default=(512, 512), metavar="W[xH]", help="default 512")
    animate.add_argument("--background", type=_float_list, default=[0.15, 0.15, 0.15], metavar="R,G,B")
    animate.add_argument(
        "--backend", choices=("auto", "torch", "gsplat"), default="auto", help="rasterizer (default auto)"
    )


def _add_build(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser(
        "build",
        help="build an avatar from photos of a person or a turn-around video",
        description="Build a rigged, relightable avatar from photos of one person: a folder of photos, "
        "image files, or a video (frames are sampled evenly). Stages: ingest, perceive (MediaPipe "
        "landmarks and masks), cameras, fit_body (body shape, pose with fingers and jaw, expression), "
        "fit_gaussians. Finished stages are cached, so running the same command again after a "
        "cancel or a crash resumes where it stopped.",
        epilog="Photos that cannot be used (unreadable, no person, several people) are reported by "
        "name and skipped. Body models: Anny (default; Apache-2.0 code, CC0 assets) or SMPL-X from "
        "the model file you download from its authors after registering (--smplx SMPLX_NEUTRAL.npz; "
        "its licence is non-commercial). "
        "Exit codes: 0 done, 2 bad input, 1 internal error, 130 cancelled.",
    )
    build.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="photo folder, images or a video"
    )
    build.add_argument("-o", "--output", required=True, type=Path, help="the .lca file to write")
    _add_build_options(build)
    build.add_argument(
        "--stop-after",
        choices=("ingest", "perceive", "cameras", "fit_body"),
        help="run the stages up to this one (cached for the full build) and write no avatar: a quick "
        "check of which photos are usable",
    )
    build.add_argument(
        "--progress",
        choices=PROGRESS_KINDS,
        default=argparse.SUPPRESS,
        help="as the global --progress (either place works)",
    )


def _add_build_options(build: argparse.ArgumentParser) -> None:
    """The options that shape a build, which `batch` passes on to each subject's build
    (`batch.jobs.BuildOptions` names each of them)."""
    build.add_argument(
        "--quality",
        choices=("preview", "standard", "high"),
        default="standard",
        help="preview (256 px, quick), standard (512 px, default) or high (1024 px, wants a GPU)",
    )
    build.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    build.add_argument(
        "--body",
        choices=("anny", "smplx"),
        help="the body model to fit: anny (default) or smplx (needs --smplx)",
    )
    build.add_argument(
        "--smplx",
        type=Path,
        metavar="MODEL.npz",
        help="fit SMPL-X from the model file you downloaded from its authors (the .npz release, e.g. "
        "SMPLX_NEUTRAL.npz; converted once into the cache); implies --body smplx",
    )
    build.add_argument(
        "--cache",
        type=Path,
        metavar="FOLDER",
        help="where finished stages are kept for resuming (default: the user cache folder)",
    )
    build.add_argument("--no-cache", action="store_true", help="keep no stage results (no resuming)")
    build.add_argument(
        "--matte",
        action="store_true",
        help="refine the person's matte at its edges and take the backdrop's colour out of the person "
        "(green screens, busy backdrops)",
    )
    build.add_argument(
        "--tone-curve",
        choices=tuple(TONE_CURVES),
        default="standard",
        help="the photos' tone curve: standard (sRGB: most cameras' JPEGs) or agx (Blender's default "
        "view transform); the albedo is estimated in scene-linear light through it (default standard)",
    )
    build.add_argument(
        "--skin-only",
        action="store_true",
        help="fit no outer layer: every Gaussian stays within a few cm of the body's skin (for subjects "
        "in skin-tight clothes; skirts, coats and long hair then come out torn)",
    )
    build.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")


def _add_batch(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch",
        help="build one avatar per subject folder, in parallel, with a report and a contact sheet",
        description="Build an avatar for each folder of photos inside SUBJECTS, as OUT/<folder>.lca, "
        "several at once where the machine allows. A subject that fails is reported with its reason "
        "and the batch goes on. Running the same command again builds only what changed (a subject "
        "whose avatar exists and whose photos and options are the same is skipped) and resumes "
        "builds that were stopped. OUT/batch_report.json says what happened to each subject and "
        "why; OUT/cast.png shows every avatar from the front with its name.",
        epilog="Each subject's build is one self-contained `lca-avatar build` command line (it is in "
        "the report), so subjects can also be run elsewhere. Exit codes: 0 every subject built or "
        "up to date, 2 bad input or some subjects failed (see the report), 1 internal error, "
        "130 cancelled (the report says which subjects were done).",
    )
    batch.add_argument("subjects", type=Path, metavar="SUBJECTS", help="a folder of subject folders")
    batch.add_argument("-o", "--output", required=True, type=Path, help="the folder for the avatars")
    batch.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        help="builds at once (default: one per GPU, else as the cores and the memory allow)",
    )
    batch.add_argument("--rebuild", action="store_true", help="build every subject, even those up to date")
    batch.add_argument("--no-cast", action="store_true", help="draw no contact sheet (cast.png)")
    _add_build_options(batch)
    batch.add_argument(
        "--progress",
        choices=PROGRESS_KINDS,
        default=argparse.SUPPRESS,
        help="as the global --progress (either place works)",
    )


def _image_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 512 or 640x480, got '{text}'") from None
    if min(size) < 16 or max(size) > 8192:
        raise argparse.ArgumentTypeError(f"image sides must be between 16 and 8192 pixels, got '{text}'")
    return size


def _progress(kind: str) -> Progress:
    if kind == "jsonl":
        return JsonLinesProgress()
    if kind == "bar" and sys.stderr.isatty():
        return TerminalProgress()
    return Progress()


def command_new(args: argparse.Namespace, progress: Progress) -> None:
    from .formats.lca import write_avatar
    from .reconstruct.sample import sample_avatar

    _check_output_folder(args.output)
    if args.gaussians > MAX_GAUSSIANS:
        raise AvatarError(
            f"--gaussians {args.gaussians} is more than the {MAX_GAUSSIANS} an avatar may hold."
        )
    if args.smplx is not None:
        from .bodies.smplx_body import smplx_rig
        from .paths import cache_dir

        if args.phenotype:
            raise AvatarError("--phenotype sets Anny's parameters; with --smplx use --betas.")
        betas = None if args.betas is None else np.asarray(args.betas, np.float64)
        rig = smplx_rig(args.smplx, cache_dir() / "bodies", betas=betas)
    else:
        from .bodies.anny_body import anny_rig

        if args.betas is not None:
            raise AvatarError(
                "--betas shapes an SMPL-X body; add --smplx MODEL.npz, or use --phenotype for Anny."
            )
        rig = anny_rig(dict(args.phenotype), progress=progress)
    progress.stage("gaussians", f"Covering the body with {args.gaussians} Gaussians")
    avatar = sample_avatar(rig, args.gaussians, sh_degree=args.sh_degree, seed=args.seed)
    write_avatar(args.output, avatar)
    progress.done(f"Wrote {args.output}")
    print(f"Wrote {args.output}: {avatar.gaussian_count} Gaussians on {rig.body_model}")


def _check_output_folder(path: Path) -> None:
    """Fail before the work, not after it, when the output cannot be written where asked."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise AvatarError(f"Cannot write '{path}': the folder '{folder}' does not exist.")


def describe(path: Path) -> dict:
    """A JSON-ready description of an .lca or .ply file."""
    if path.suffix.lower() == ".ply":
        from .formats.ply import read_ply

        splats = read_ply(path)
        low, high = splats.means.min(0), splats.means.max(0)
        return {
            "file": str(path),
            "kind": "splats",
            "splats": splats.count,
            "sh_degree": int(round(np.sqrt(splats.sh.shape[1]))) - 1,
            "bounds_m": [low.astype(np.float64).round(4).tolist(), high.astype(np.float64).round(4).tolist()],
        }
    from .formats.lca import read_avatar

    avatar = read_avatar(path)
    rig = avatar.rig
    fingers = [name for name in rig.joint_names if name.startswith("finger")]
    return {
        "file": str(path),
        "kind": "avatar",
        "gaussians": avatar.gaussian_count,
        "sh_degree": avatar.sh_degree,
        "body_model": rig.body_model,
        "body_parameters": rig.body_parameters,
        "joints": rig.joint_count,
        "finger_joints": len(fingers),
        "vertices": rig.vertex_count,
        "triangles": int(rig.triangles.shape[0]),
        "expressions": len(rig.expression_names),
        "height_m": round(float(np.ptp(rig.vertices[:, 2])), 4),
        "provenance": avatar.provenance,
    }


def command_info(args: argparse.Namespace, progress: Progress) -> None:
    description = describe(args.file)
    if args.json:
        print(json.dumps(description, indent=2))
        return
    for key, value in description.items():
        if isinstance(value, dict) and any(isinstance(item, (dict, list)) for item in value.values()):
            for sub_key, item in value.items():  # e.g. the provenance: one line per part
                print(f"{key + '.' + sub_key:>16}: {_summary(item)}")
        else:
            print(f"{key:>16}: {_summary(value)}")


def _summary(value, limit: int = 160) -> str:
    """`value` on one readable line: dicts as "key value" pairs, long lists by their length, the
    rest cut at `limit` characters (`info --json` has everything)."""
    if isinstance(value, dict):
        text = ", ".join(f"{key} {_brief(item)}" for key, item in value.items())
    else:
        text = _brief(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(value, limit: int = 40) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return f"{{{len(value)} entries}}"
    text = json.dumps(value)
    if isinstance(value, list) and len(text) > limit:
        return f"[{len(value)} items]"
    return text


def command_export(args: argparse.Namespace, progress: Progress) -> None:
    from .formats.lca import read_avatar
    from .formats.ply import write_ply
    from .formats.poses import load_pose
    from .maths.deform import pose_avatar

    if args.gltf is None and (args.animation is not None or args.splats_only):
        raise AvatarError("--animation and --splats-only go with --gltf OUT.glb.")
    if args.gltf is not None and args.gltf.suffix.lower() != ".glb":
        raise AvatarError(f"glTF is written as a binary .glb; got '{args.gltf.name}'.")
    if args.splats_only and args.animation is not None:
        raise AvatarError("--splats-only writes one posed moment; it cannot hold --animation.")
    _check_output_folder(args.ply or args.gltf)
    avatar = read_avatar(args.file)
    pose, expressions = load_pose(avatar.rig, args.pose)
    expressions.update(dict(args.expression))
    if args.gltf is not None:
        _export_gltf(args, avatar, pose, expressions, progress)
        return
    progress.stage("export", f"Posing {avatar.gaussian_count} Gaussians")
    splats = pose_avatar(avatar, pose, expressions)
    write_ply(args.ply, splats)
    progress.done(f"Wrote {args.ply}")
    print(f"Wrote {args.ply}: {splats.count} splats, pose '{args.pose}'")


def _export_gltf(args: argparse.Namespace, avatar, pose, expressions: dict, progress: Progress) -> None:
    from .formats.animation import load_animation
    from .formats.gltf import write_avatar_glb, write_splats_glb
    from .maths.deform import pose_avatar

    progress.stage("export", f"Writing {avatar.gaussian_count} Gaussians as glTF")
    if args.splats_only:
        write_splats_glb(args.gltf, pose_avatar(avatar, pose, expressions), name=args.file.stem)
        what = "posed splats"
    else:
        animation = None if args.animation is None else load_animation(avatar.rig, args.animation)
        write_avatar_glb(args.gltf, avatar, pose, expressions, animation=animation, name=args.file.stem)
        what = "rigged avatar" + ("" if animation is None else f", {animation.frame_count}-frame animation")
    progress.done(f"Wrote {args.gltf}")
    print(f"Wrote {args.gltf}: {avatar.gaussian_count} splats, {what}, pose '{args.pose}'")


def command_render(args: argparse.Namespace, progress: Progress) -> None:
    from .formats.lca import read_avatar
    from .formats.poses import load_pose
    from .maths.deform import pose_avatar
    from .maths.lights import lighting_from_specs, read_lighting_file
    from .render.pictures import (
        contact_sheet,
        framed_cameras,
        render_views,
        save_animation,
        save_png,
        view_azimuths,
    )

    if len(args.background) != 3:
        raise AvatarError("--background needs three numbers: R,G,B in [0, 1].")
    suffix = args.output.suffix.lower()
    if args.turntable and suffix not in (".gif", ".webp", ".mp4"):
        raise AvatarError(f"A turntable is written as .gif, .webp or .mp4; got '{args.output.name}'.")
    if not args.turntable and suffix != ".png":
        raise AvatarError(f"Stills are written as .png; got '{args.output.name}'.")
    _check_output_folder(args.output)
    avatar = read_avatar(args.file)
    pose, expressions = load_pose(avatar.rig, args.pose)
    expressions.update(dict(args.expression))
    splats = pose_avatar(avatar, pose, expressions)
    lighting = None
    if args.lights is not None:
        lighting = read_lighting_file(args.lights)
    elif args.light:
        lighting = lighting_from_specs(args.light)
    views = view_azimuths(f"orbit:{args.turntable}" if args.turntable else args.camera)
    cameras = framed_cameras(splats, views, *args.size)
    progress.stage("render", f"Rendering {len(cameras)} view(s), {args.look} look")
    images = render_views(
        avatar, splats, cameras, args.look, lighting, args.background, args.backend, progress
    )
    if args.turntable:
        save_animation(args.output, images, fps=args.fps)
    else:
        save_png(args.output, contact_sheet(images) if len(images) > 1 else images[0], args.transparent)
    progress.done(f"Wrote {args.output}")
    print(f"Wrote {args.output}: {len(images)} view(s), {args.look} look, pose '{args.pose}'")


def command_animate(args: argparse.Namespace, progress: Progress) -> None:
    from .formats.lca import read_avatar
    from .formats.motion import resample_clip, select_frames
    from .maths.lights import lighting_from_specs
    from .render.animate import check_output, render_animation

    if len(args.background) != 3:
        raise AvatarError("--background needs three numbers: R,G,B in [0, 1].")
    if args.bone_map is not None and args.bvh is None:
        raise AvatarError("--bone-map names the bones of a --bvh file.")
    if args.smplx is not None and args.amass is None:
        raise AvatarError("--smplx gives the skeleton of --amass motion.")
    check_output(args.output)
    avatar = read_avatar(args.file)
    progress.plan({"motion": 0.05, "render": 0.95})
    progress.stage("motion", "Reading and retargeting the motion")
    clip = _animation_clip(args, avatar.rig, progress)
    if args.frames is not None:
        clip = select_frames(clip, args.frames)
    if args.fps is not None:
        clip = resample_clip(clip, args.fps)
    lighting = lighting_from_specs(args.light) if args.light else None
    count = render_animation(
        avatar,
        clip,
        args.output,
        view=args.camera,
        size=args.size,
        look=args.look,
        lighting=lighting,
        background=args.background,
        backend=args.backend,
        progress=progress,
    )
    print(f"Wrote {args.output}: {count} frames at {clip.frame_rate:g} fps, {args.look} look")


def _animation_clip(args: argparse.Namespace, rig, progress: Progress):
    """The animation `animate` plays on `rig`, from whichever source was given."""
    from .formats import motion

    if args.face is not None:
        from .formats.face_capture import read_face_capture

        return motion.clip_from_face_capture(rig, read_face_capture(args.face), args.fps)
    if args.bvh is not None:
        from .formats.bone_map import BUILTIN_BONE_MAPS, builtin_bone_map, read_bone_map
        from .formats.bvh import read_bvh

        bone_map = None
        if args.bone_map in BUILTIN_BONE_MAPS:
            bone_map = builtin_bone_map(args.bone_map)
        elif args.bone_map is not None:
            bone_map = read_bone_map(args.bone_map)
        return motion.clip_from_bvh(
            rig, read_bvh(args.bvh), bone_map, not args.no_fingers, not args.no_root_motion, args.bvh.stem
        )
    if args.amass is not None:
        from .formats.amass import read_amass

        source = read_amass(args.amass)
        rest_joints = sole_height = None
        if args.smplx is not None:
            rest_joints, sole_height = _smplx_rest(args.smplx, source.betas)
        return motion.clip_from_amass(
            rig, source, rest_joints, sole_height, not args.no_root_motion, args.amass.stem
        )
    from .formats.animation import load_animation

    return load_animation(rig, args.animation)


def _smplx_rest(model_path: Path, betas: np.ndarray | None) -> tuple[np.ndarray, float]:
    """SMPL-X's rest joints [55, 3] and soles' height (SMPL-X's frame) for a subject's betas."""
    from .bodies.smplx_body import smplx_arrays
    from .paths import cache_dir

    model, _ = smplx_arrays(model_path, cache_dir() / "bodies")
    shape = model.template.astype(np.float64)
    if betas is not None and betas.size:
        count = min(betas.size, model.shape_directions.shape[2])
        shape = shape + model.shape_directions[:, :, :count].astype(np.float64) @ betas[:count]
    return model.joint_regressor.astype(np.float64) @ shape, float(shape[:, 1].min())


def command_build(args: argparse.Namespace, progress: Progress) -> None:
    from .reconstruct.fit_body import body_choice
    from .reconstruct.pipeline import build_avatar

    if args.output.suffix.lower() != ".lca":
        raise AvatarError(f"The output must be an .lca file, got '{args.output}'.")
    _check_output_folder(args.output)
    _check_body_options(args)
    body_model = body_choice("smplx" if args.smplx is not None else "anny", args.smplx)
    cache = None if args.no_cache else (args.cache or "auto")
    report = build_avatar(
        args.inputs,
        args.output,
        quality=args.quality,
        device=args.device,
        cache=cache,
        progress=progress,
        seed=args.seed,
        stop_after=args.stop_after,
        body_model=body_model,
        matte=args.matte,
        outer_layer=not args.skin_only,
        tone=args.tone_curve,
    )
    for source, reason in report.skipped.items():
        print(f"Skipped {source}: {reason}", file=sys.stderr)
    cached = [name for name, stage in report.stages.items() if stage["cached"]]
    if args.stop_after:
        stopped = {
            "stopped_after": args.stop_after,
            "stages": report.stages,
            "skipped": report.skipped,
            "body": report.body,
        }
        print(json.dumps(stopped, indent=2))
        return
    print(
        f"Wrote {args.output}: {report.gaussians} Gaussians"
        + (f" (stages resumed from the cache: {', '.join(cached)})" if cached else "")
    )


def _check_body_options(args: argparse.Namespace) -> None:
    if args.body == "anny" and args.smplx is not None:
        raise AvatarError(
            "--smplx gives an SMPL-X model file, which an Anny build does not use: "
            "drop --body anny, or drop --smplx."
        )
    if args.body == "smplx" and args.smplx is None:
        raise AvatarError(
            "--body smplx needs the SMPL-X model file: download SMPLX_NEUTRAL.npz from the SMPL-X "
            "website (free registration, non-commercial licence) and add --smplx SMPLX_NEUTRAL.npz."
        )


def command_batch(args: argparse.Namespace, progress: Progress) -> None:
    from .batch.executors import LocalExecutor
    from .batch.jobs import BuildOptions, Machine, default_jobs
    from .batch.report import FAILED, REPORT_NAME
    from .batch.runner import run_batch

    _check_body_options(args)
    options = BuildOptions.from_arguments(args)
    machine = Machine.this_one()
    jobs = args.jobs or default_jobs(machine, options)
    executor = LocalExecutor(jobs, machine.cores, () if options.device == "cpu" else machine.gpus)
    try:
        report = run_batch(
            args.subjects,
            args.output,
            options,
            executor,
            progress,
            rebuild=args.rebuild,
            make_cast=None if args.no_cast else _draw_cast,
        )
    except (KeyboardInterrupt, Cancelled):
        # The avatars built so far stay (each is whole); the report says which they are.
        print(
            f"Batch cancelled: avatars finished before it are kept ({args.output / REPORT_NAME} "
            "names them); the builds under way left nothing.",
            file=sys.stderr,
        )
        raise
    for record in report.subjects:
        reason = f": {record.reason}" if record.reason else ""
        print(f"{record.name}: {record.status}{reason}")
    print(f"Batch: {report.summary()}; report in {args.output / REPORT_NAME}")
    failed = report.with_status(FAILED)
    if failed:
        raise AvatarError(
            f"{len(failed)} of {len(report.subjects)} subjects failed. "
            + " ".join(f"{record.name}: {record.reason}" for record in failed)
            + " Fix their photos and run the same command again: the avatars built are kept."
        )


def _draw_cast(report, folder: Path) -> str | None:
    """The batch's contact sheet; a batch whose avatars are built does not fail for want of it."""
    try:
        from .render.cast import cast_sheet

        return cast_sheet(report, folder)
    except (AvatarError, ImportError) as error:
        logger.warning("No contact sheet: %s", error)
        return None


COMMANDS = {
    "batch": command_batch,
    "build": command_build,
    "new": command_new,
    "info": command_info,
    "export": command_export,
    "render": command_render,
    "animate": command_animate,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    progress = _progress(args.progress)
    try:
        COMMANDS[args.command](args, progress)
    except AvatarError as error:
        print(f"lca-avatar: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Cancelled):
        print("lca-avatar: cancelled; nothing was written.", file=sys.stderr)
        return EXIT_CANCELLED
    return EXIT_OK


def run() -> None:
    """The console entry point."""
    if "build" in sys.argv[1:]:
        from .reconstruct.pipeline import load_signal_taking_libraries

        load_signal_taking_libraries()  # before the engine takes the signals (see there)
    # Cancelling from the add-on (terminate) must clean up as Ctrl-C does: temporary files go.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = main()
    if code == EXIT_CANCELLED:
        # An interrupt that passed through code run by a C extension (pybind11's exec) leaves
        # CPython's "unhandled KeyboardInterrupt" flag set, and it would then end the process by
        # SIGINT instead of this exit code. Everything is cleaned up by now: leave directly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
