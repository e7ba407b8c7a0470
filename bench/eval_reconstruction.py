"""Evaluate photo reconstruction against independent ground truth (issue 5): a synthetic subject
rendered by Cycles, `lca-avatar build` on its photos only, held-out views scored after aligning
the avatar through its fitted body.

    .venv/bin/python bench/eval_reconstruction.py --seed 0 --out out/eval          # make, build, score
    .venv/bin/python bench/eval_reconstruction.py --subject examples/subject --out out/eval
    .venv/bin/python bench/eval_reconstruction.py --subject S --avatar A.lca       # score an avatar
    .venv/bin/python bench/eval_reconstruction.py --subject S --oracle             # check the scorer
    .venv/bin/python bench/eval_reconstruction.py --seed 7 --subject S --make-subject-only
    .venv/bin/python bench/eval_reconstruction.py --seed 11 --studio --outfit skirt,ponytail --out O

Prints one JSON object (also written to OUT/scores.json) and writes OUT/contact_sheet.png. Logs go
to stderr. The work is `lca_blender.evaluate` (subjects, scoring, the oracle); Blender's Python
renders subjects with `eval_subject_blender.py`. The folder format is in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lca_blender.avatar import GaussianAvatar
from lca_blender.evaluate.display import VIEW_TRANSFORMS
from lca_blender.evaluate.garments import GARMENTS
from lca_blender.evaluate.oracle import oracle_avatar
from lca_blender.evaluate.scoring import SCORED_SPLITS, contact_sheet_image, score_avatar
from lca_blender.evaluate.subjects import CyclesRenderer, Subject, load_subject, make_subject, write_json
from lca_blender.evaluate.synthetic import BACKDROPS, EXTRA_POSES, MIXED, SubjectSettings
from lca_blender.formats.lca import read_avatar, write_avatar
from lca_blender.render.pictures import save_png

REPO_ROOT = Path(__file__).resolve().parents[1]
CYCLES = CyclesRenderer(
    python=REPO_ROOT / ".venv-blender" / "bin" / "python",
    script=Path(__file__).with_name("eval_subject_blender.py"),
)


def log(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


def run_build(
    photos: Path, output: Path, quality: str, device: str, tone: str = "standard"
) -> dict[str, Any]:
    """Run `lca-avatar build` on the photos (told their tone curve, as a photographer knows their
    camera's or scene's view transform); its wall time, peak memory and exit code."""
    console = Path(sys.executable).with_name("lca-avatar")
    command = [str(console)] if console.is_file() else [sys.executable, "-m", "lca_blender.cli"]
    command += ["build", str(photos), "-o", str(output), "--quality", quality, "--device", device]
    command += ["--tone-curve", tone, "--progress", "jsonl"]
    log("running " + " ".join(command))
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    last_progress = None
    for line in process.stdout:
        try:
            last_progress = json.loads(line)
        except json.JSONDecodeError:
            continue
        log(f"build: {last_progress.get('stage', '?')} {last_progress.get('fraction', 0):.0%} "
            f"{last_progress.get('message', '')}")  # fmt: skip
    # wait4 gives this child's own resource usage (the subject's Blender renders are not mixed in).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": command,
        "exit_code": process.returncode,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "peak_memory_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        "last_progress": last_progress,
    }


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height or width)


def _names(choices: tuple[str, ...]):
    """An argparse type: comma-separated names from `choices` (hyphens read as underscores)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip().replace("-", "_") for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}"
            )
        return names

    return parse


# A photographer's turn-around (--studio): what each option is unless given.
STUDIO = {"photos": 16, "size": (512, 512), "backdrop": "grey", "view_transform": "AgX", "poses": EXTRA_POSES}
PLAIN = {"photos": 12, "size": (384, 512), "backdrop": "none", "view_transform": "Standard", "poses": ()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subject", type=Path, help="subject folder (made from --seed if it has no cameras.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a generated subject")
    parser.add_argument("--photos", type=int, help="input photos of a generated subject (12; --studio 16)")
    parser.add_argument(
        "--size", type=_size, help="WIDTHxHEIGHT or SIDE of generated images (384x512; --studio 512)"
    )
    parser.add_argument(
        "--outfit",
        type=_names((*GARMENTS, MIXED)),
        default=(),
        help="garments as geometry, comma-separated: skirt, dress, coat, trousers, ponytail, long-hair, "
        "glasses, shoes, or mixed (the seed chooses); default: the outfit painted on the skin only",
    )
    parser.add_argument(
        "--backdrop", choices=BACKDROPS, help="studio backdrop in the photos (none; --studio grey)"
    )
    parser.add_argument(
        "--view-transform",
        choices=VIEW_TRANSFORMS,
        help="Blender view transform of every image (Standard; --studio AgX)",
    )
    parser.add_argument(
        "--poses",
        type=_names(EXTRA_POSES),
        help="extra held-out poses, comma-separated: stride, arms_up, sit (none; --studio all)",
    )
    parser.add_argument(
        "--studio", action="store_true", help="a photographer's turn-around: the --studio defaults above"
    )
    parser.add_argument("--mask-samples", type=int, default=16, help="Cycles samples of garment mask passes")
    parser.add_argument(
        "--moves",
        type=float,
        default=0.0,
        help="degrees the person turns head, neck, trunk and arms between input photos (0: still)",
    )
    parser.add_argument("--heldout", type=int, default=4, help="held-out views of a generated subject")
    parser.add_argument("--samples", type=int, default=48, help="Cycles samples per pixel (denoised)")
    parser.add_argument("--texture-size", type=int, default=1024, help="outfit texture size in texels")
    parser.add_argument(
        "--default-body", action="store_true", help="Anny's default phenotype, not a random one"
    )
    parser.add_argument("--make-subject-only", action="store_true", help="generate the subject and stop")
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="output folder")
    parser.add_argument("--avatar", type=Path, help="score this .lca instead of building one")
    parser.add_argument(
        "--skip-build", action="store_true", help="score OUT/avatar.lca from an earlier build"
    )
    parser.add_argument("--oracle", action="store_true", help="score an avatar made from the ground truth")
    parser.add_argument("--oracle-gaussians", type=int, default=150_000)
    parser.add_argument("--quality", default="standard", help="build preset: preview, standard or high")
    parser.add_argument("--device", default="cpu", help="build device: auto, cpu or cuda")
    return parser


def _subject_settings(args: argparse.Namespace) -> SubjectSettings:
    defaults = STUDIO if args.studio else PLAIN
    chosen = {key: defaults[key] if getattr(args, key) is None else getattr(args, key) for key in defaults}
    return SubjectSettings(
        seed=args.seed,
        photos=chosen["photos"],
        width=chosen["size"][0],
        height=chosen["size"][1],
        heldout=args.heldout,
        samples=args.samples,
        texture_size=args.texture_size,
        phenotype={} if args.default_body else None,
        garments=args.outfit,
        backdrop=chosen["backdrop"],
        view_transform=chosen["view_transform"],
        extra_poses=chosen["poses"],
        mask_samples=args.mask_samples,
        moves=args.moves,
    )


def _oracle(args: argparse.Namespace, subject: Subject) -> tuple[GaussianAvatar, Path]:
    log(f"making the oracle avatar ({args.oracle_gaussians} Gaussians)")
    avatar = oracle_avatar(subject, args.oracle_gaussians)
    path = args.out / "oracle.lca"
    write_avatar(path, avatar)
    return avatar, path


def _result(
    args: argparse.Namespace,
    subject: Subject,
    avatar: GaussianAvatar,
    avatar_path: Path,
    build: dict[str, Any] | None,
    scores: dict[str, Any],
    scoring_seconds: float,
) -> dict[str, Any]:
    """The JSON the run prints (bench/README.md)."""
    first = subject.images[0].camera
    return {
        "subject": str(subject.folder),
        "seed": subject.gt.get("seed"),
        "avatar": str(avatar_path),
        "avatar_source": avatar.provenance.get("source", "build"),
        "gaussians": avatar.gaussian_count,
        "splits": {split: scores[split] for split in SCORED_SPLITS if split in scores},
        "joint_error_cm": scores["joints"],
        "build": build,
        "settings": {
            "quality": args.quality,
            "device": args.device,
            "photos": len(subject.split("input")),
            "image_size": [first.width, first.height],
            "subject": subject.gt.get("settings"),
        },
        "render_seconds_per_image": subject.gt.get("render", {}).get("seconds_per_image"),
        "scoring_seconds": round(scoring_seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    subject_folder = args.subject or args.out / f"subject-{args.seed}"
    if not (subject_folder / "cameras.json").is_file():
        log(f"generating the subject in {subject_folder}")
        make_subject(subject_folder, _subject_settings(args), CYCLES, log=log)
    if args.make_subject_only:
        return 0
    subject = load_subject(subject_folder)

    build: dict[str, Any] | None = None
    if args.oracle:
        avatar, avatar_path = _oracle(args, subject)
    else:
        avatar_path = args.avatar or args.out / "avatar.lca"
        if args.avatar is None and not args.skip_build:
            tone = "agx" if subject.display.name == "AgX" else "standard"
            build = run_build(subject_folder / "photos", avatar_path, args.quality, args.device, tone)
            if build["exit_code"] != 0:
                print(json.dumps({"error": "the build failed", "build": build}, indent=1))
                return 1
        avatar = read_avatar(avatar_path)

    started = time.perf_counter()
    scores = score_avatar(avatar, subject, log=log)
    result = _result(args, subject, avatar, avatar_path, build, scores.report, time.perf_counter() - started)
    result["contact_sheet"] = str(args.out / "contact_sheet.png")
    save_png(result["contact_sheet"], contact_sheet_image(scores.comparisons))
    write_json(args.out / "scores.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
