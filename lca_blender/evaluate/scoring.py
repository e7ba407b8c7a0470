"""Scoring an avatar against a subject: alignment through the avatar's joints, held-out renders,
masked PSNR and SSIM, joint errors, and the contact sheet of ground truth beside the avatar.

The avatar's capture pose (provenance["capture"]) poses its rig; its main joints are aligned to
the ground truth's by a similarity (Umeyama), which then moves the posed Gaussians into the
subject's world before they are rendered from the held-out cameras (bench/README.md, "Scoring").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..avatar import GaussianAvatar, Pose, Rig, Splats
from ..errors import AvatarError
from ..maths.alignment import Similarity, umeyama_similarity
from ..maths.deform import expression_vector, pose_avatar
from ..maths.rotations import matrix_to_quaternion, quaternion_multiply
from ..reconstruct.views import capture_from_json
from .metrics import masked_psnr, masked_ssim
from .subjects import Subject, joint_positions, read_gt_image

SCORED_SPLITS = ("heldout", "novel", "relit")


@dataclass(frozen=True)
class Comparison:
    """One scored image: the ground truth beside the avatar's render."""

    name: str
    truth: np.ndarray  # [H, W, 3] sRGB over the subject's background
    render: np.ndarray  # [H, W, 3] sRGB over the same background
    psnr: float  # dB, over the ground truth's mask


@dataclass(frozen=True)
class Scores:
    """An avatar's scores on a subject and the images they were measured on."""

    # JSON-ready: per scored split {"psnr", "ssim", "images": {name: {"psnr", "ssim",
    # "silhouette_iou"}}}, and "joints": {"capture", "novel"} joint errors after alignment.
    report: dict[str, Any]
    comparisons: list[Comparison]


def align_to_ground_truth(
    rig: Rig, pose: Pose, ground_truth: dict[str, np.ndarray]
) -> tuple[Similarity, dict[str, float]]:
    """The similarity taking the avatar's joints in `pose` onto the ground-truth joints (by name),
    and the aligned joints' errors in cm (median, mean, max, and the joints used)."""
    names = [name for name in ground_truth if name in rig.joint_names]
    if len(names) < 4:
        raise AvatarError(
            f"The avatar's rig shares only {len(names)} of the main joints with the ground truth; "
            "the scorer needs at least 4 (it expects Anny's joint names)."
        )
    fitted = joint_positions(rig, pose)[[rig.joint_index(name) for name in names]]
    truth = np.array([ground_truth[name] for name in names])
    similarity = umeyama_similarity(fitted, truth)
    errors = np.linalg.norm(similarity.apply(fitted) - truth, axis=1) * 100
    report = {
        "median_cm": round(float(np.median(errors)), 3),
        "mean_cm": round(float(errors.mean()), 3),
        "max_cm": round(float(errors.max()), 3),
        "joints": len(names),
        "scale": round(similarity.scale, 5),
    }
    return similarity, report


def transform_splats(splats: Splats, similarity: Similarity) -> Splats:
    """Splats moved by a similarity: means s R x + t, scales x s, rotations R then q."""
    turn = matrix_to_quaternion(similarity.rotation[None])[0]
    rotations = quaternion_multiply(np.broadcast_to(turn, splats.rotations.shape), splats.rotations)
    return Splats(
        means=similarity.apply(splats.means).astype(np.float32),
        rotations=rotations.astype(np.float32),
        scales=(splats.scales * similarity.scale).astype(np.float32),
        opacities=splats.opacities,
        sh=splats.sh,
    )


def _novel_pose(avatar: GaussianAvatar, subject: Subject, capture: Pose) -> tuple[Pose, np.ndarray]:
    """The ground truth's novel pose and expressions carried over to the avatar's rig by joint name."""
    rig = avatar.rig
    names = subject.gt["body"]["joint_names"]
    rotations = np.asarray(subject.gt["novel"]["pose"]["rotations"], np.float32)
    pose = Pose(rotations=Pose.rest(rig.joint_count).rotations, translation=capture.translation.copy())
    for index, name in enumerate(names):
        if name in rig.joint_names:
            pose.rotations[rig.joint_index(name)] = rotations[index]
    known = {
        name: weight
        for name, weight in subject.gt["novel"].get("expressions", {}).items()
        if name in rig.expression_names
    }
    return pose, expression_vector(rig, known)


def _aligned_splats(
    avatar: GaussianAvatar, subject: Subject, log: Callable[[str], None]
) -> tuple[Splats, Splats, dict[str, Any]]:
    """The avatar posed as captured and in the novel pose, each aligned to the ground truth's
    joints in that pose, and the joint errors of both alignments."""
    if "capture" not in avatar.provenance:
        raise AvatarError("The avatar has no provenance['capture'] (its capture pose): it cannot be aligned.")
    capture, expressions = capture_from_json(avatar.provenance["capture"], avatar.rig)
    similarity, capture_joints = align_to_ground_truth(
        avatar.rig, capture, subject.joint_positions("capture")
    )
    log(f"capture joints after alignment: median {capture_joints['median_cm']} cm")
    captured = transform_splats(pose_avatar(avatar, capture, expressions), similarity)
    novel, novel_expressions = _novel_pose(avatar, subject, capture)
    novel_similarity, novel_joints = align_to_ground_truth(
        avatar.rig, novel, subject.joint_positions("novel")
    )
    novel_splats = transform_splats(pose_avatar(avatar, novel, novel_expressions), novel_similarity)
    return captured, novel_splats, {"capture": capture_joints, "novel": novel_joints}


def render_split(avatar: GaussianAvatar, splats: Splats, subject: Subject, split: str) -> np.ndarray:
    """[C, H, W, 4] renders of the avatar's aligned splats for every image of a split: sRGB over
    the subject's background, and coverage."""
    from ..render.pictures import render_views

    look = "relit" if split == "relit" else "captured"
    lighting = subject.lighting(split) if look == "relit" else None
    cameras = [image.camera for image in subject.split(split)]
    rendered = render_views(
        avatar, splats, cameras, look=look, lighting=lighting, background=subject.background
    )
    return rendered.astype(np.float64)


def _score_split(
    avatar: GaussianAvatar, splats: Splats, subject: Subject, split: str
) -> tuple[dict[str, Any], list[Comparison]]:
    """One split's scores (mean and per image) and its comparisons."""
    images = subject.split(split)
    per_image, comparisons = {}, []
    for image, rgba in zip(images, render_split(avatar, splats, subject, split), strict=True):
        render, covered = rgba[..., :3], rgba[..., 3] > 0.5
        truth, alpha = read_gt_image(subject, image)
        mask = alpha > 0.5
        psnr, ssim = masked_psnr(truth, render, mask), masked_ssim(truth, render, mask)
        iou = float((mask & covered).sum() / max((mask | covered).sum(), 1))
        per_image[image.name] = {
            "psnr": round(psnr, 3),
            "ssim": round(ssim, 4),
            "silhouette_iou": round(iou, 4),
        }
        comparisons.append(Comparison(image.name, truth, render, psnr))
    report = {
        "psnr": round(float(np.mean([item["psnr"] for item in per_image.values()])), 3),
        "ssim": round(float(np.mean([item["ssim"] for item in per_image.values()])), 4),
        "images": per_image,
    }
    return report, comparisons


def score_avatar(avatar: GaussianAvatar, subject: Subject, log: Callable[[str], None] = print) -> Scores:
    """Scores of an avatar on a subject: every scored split the subject has, and the joint errors."""
    captured, novel, joints = _aligned_splats(avatar, subject, log)
    report: dict[str, Any] = {}
    comparisons: list[Comparison] = []
    for split in SCORED_SPLITS:
        images = subject.split(split)
        if not images:
            continue
        log(f"rendering {len(images)} {split} views")
        report[split], split_comparisons = _score_split(
            avatar, novel if split == "novel" else captured, subject, split
        )
        comparisons += split_comparisons
    report["joints"] = joints
    return Scores(report=report, comparisons=comparisons)


def contact_sheet_image(comparisons: list[Comparison], pairs_per_row: int = 2) -> np.ndarray:
    """[H', W', 3] sRGB sheet: ground truth beside the avatar for each image, labelled."""
    from PIL import Image, ImageDraw

    from ..render.pictures import contact_sheet

    labelled = []
    for comparison in comparisons:
        for picture, label in (
            (comparison.truth, f"{comparison.name} truth"),
            (comparison.render, f"{comparison.name} avatar {comparison.psnr:.1f} dB"),
        ):
            canvas = Image.fromarray((np.clip(picture, 0, 1) * 255 + 0.5).astype(np.uint8))
            ImageDraw.Draw(canvas).text((4, 4), label, fill=(0, 0, 0))
            labelled.append(np.asarray(canvas, np.float64) / 255)
    return contact_sheet(np.stack(labelled), columns=2 * pairs_per_row)
