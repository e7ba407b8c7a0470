"""Scoring an avatar against a subject: alignment through the avatar's joints, held-out renders,
masked PSNR and SSIM over the frame and over a crop round the head, silhouette IoU, the share of
each garment's true silhouette the avatar covers, joint errors, and the contact sheet of ground
truth beside the avatar.

The avatar's capture pose (provenance["capture"]) poses its rig; its main joints are aligned to
the ground truth's by a similarity (Umeyama), which then moves the posed Gaussians into the
subject's world before they are rendered from the held-out cameras (bench/README.md, "Scoring").
A posed split (the novel pose, a stride, ...) gets the ground truth's joint rotations by name and
is aligned again on that pose's joints. The relit look is linear light: it is shown through the
subject's view transform (`Subject.display`), as Blender showed the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..avatar import GaussianAvatar, Pose, Rig, Splats
from ..errors import AvatarError
from ..maths.alignment import Similarity, umeyama_similarity
from ..maths.cameras import Camera
from ..maths.deform import expression_vector, pose_avatar
from ..maths.rotations import matrix_to_quaternion, quaternion_multiply
from ..maths.shading import relight_splats, skin_normals
from ..reconstruct.views import capture_from_json
from .metrics import masked_psnr, masked_ssim
from .subjects import (
    POSED_SPLITS,
    SPLITS,
    Subject,
    SubjectImage,
    joint_positions,
    pose_of,
    read_gt_image,
    read_mask,
)

SCORED_SPLITS = tuple(split for split in SPLITS if split != "input")
FACE_CROP_HEADS = 2.5  # the face crop's side, in head heights
DEFAULT_HEAD_HEIGHT_M = 0.23  # when the subject's joints do not give one (no eyes)


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

    # JSON-ready: per scored split {"psnr", "ssim", "face_psnr", "silhouette_iou", "coverage":
    # {garment: share}, "images": {name: {the same per image}}}, and "joints": {"capture", and
    # each posed split} joint errors after alignment.
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
        antialiased=splats.antialiased,
    )


def _split_pose(
    avatar: GaussianAvatar, subject: Subject, split: str, capture: Pose
) -> tuple[Pose, np.ndarray]:
    """The ground truth's pose and expressions of a posed split carried over to the avatar's rig by
    joint name (the root's translation is the alignment's business)."""
    rig = avatar.rig
    names = subject.gt["body"]["joint_names"]
    rotations = np.asarray(subject.gt[split]["pose"]["rotations"], np.float32)
    pose = Pose(rotations=Pose.rest(rig.joint_count).rotations, translation=capture.translation.copy())
    for index, name in enumerate(names):
        if name in rig.joint_names:
            pose.rotations[rig.joint_index(name)] = rotations[index]
    known = {
        name: weight
        for name, weight in subject.gt[split].get("expressions", {}).items()
        if name in rig.expression_names
    }
    return pose, expression_vector(rig, known)


def aligned_splats(
    avatar: GaussianAvatar, subject: Subject, log: Callable[[str], None]
) -> tuple[dict[str, Splats], dict[str, Any]]:
    """The avatar posed as captured and in each posed split the subject has, each aligned to the
    ground truth's joints in that pose: {pose: splats} and the joint errors of each alignment."""
    if "capture" not in avatar.provenance:
        raise AvatarError("The avatar has no provenance['capture'] (its capture pose): it cannot be aligned.")
    capture, expressions = capture_from_json(avatar.provenance["capture"], avatar.rig)
    similarity, capture_joints = align_to_ground_truth(
        avatar.rig, capture, subject.joint_positions("capture")
    )
    log(f"capture joints after alignment: median {capture_joints['median_cm']} cm")
    splats = {"capture": transform_splats(pose_avatar(avatar, capture, expressions), similarity)}
    joints = {"capture": capture_joints}
    for split in POSED_SPLITS:
        if not subject.split(split) or split not in subject.gt:
            continue
        pose, pose_expressions = _split_pose(avatar, subject, split, capture)
        pose_similarity, joints[split] = align_to_ground_truth(
            avatar.rig, pose, subject.joint_positions(split)
        )
        splats[split] = transform_splats(pose_avatar(avatar, pose, pose_expressions), pose_similarity)
    return splats, joints


def _relit_through_view(
    avatar: GaussianAvatar, splats: Splats, subject: Subject, cameras: list[Camera]
) -> np.ndarray:
    """[C, H, W, 4] relit renders shown as Blender shows the truth: the shading model's linear
    light blended per pixel, then the subject's view transform, over its background."""
    import torch

    from ..render.rendering import render

    lighting = subject.lighting("relit")
    normals = skin_normals(avatar, splats)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    images = []
    for camera in cameras:
        linear = relight_splats(avatar, splats, lighting, camera.position, normals)
        with torch.no_grad():
            result = render(
                tensor(splats.means),
                tensor(splats.rotations),
                tensor(splats.scales),
                tensor(splats.opacities),
                tensor(linear),
                tensor(camera.viewmat)[None],
                tensor(camera.intrinsics)[None],
                camera.width,
                camera.height,
                antialiased=splats.antialiased,
            )
        alpha = result.alpha[0, ..., 0].clamp(0, 1).cpu().numpy().astype(np.float64)
        straight = result.color[0].cpu().numpy().astype(np.float64) / np.maximum(alpha, 1e-6)[..., None]
        shown = subject.display.encode(straight) * alpha[..., None]
        shown += np.asarray(subject.background) * (1 - alpha[..., None])
        images.append(np.concatenate([shown, alpha[..., None]], axis=-1))
    return np.stack(images)


def render_split(avatar: GaussianAvatar, splats: Splats, subject: Subject, split: str) -> np.ndarray:
    """[C, H, W, 4] renders of the avatar's aligned splats for every image of a split: display
    colour over the subject's background, and coverage."""
    from ..render.pictures import render_views

    cameras = [image.camera for image in subject.split(split)]
    if split == "relit" and subject.display.table is not None:
        return _relit_through_view(avatar, splats, subject, cameras)
    look = "relit" if split == "relit" else "captured"
    lighting = subject.lighting(split) if look == "relit" else None
    rendered = render_views(
        avatar, splats, cameras, look=look, lighting=lighting, background=subject.background
    )
    return rendered.astype(np.float64)


def face_crop(subject: Subject, image: SubjectImage) -> tuple[slice, slice] | None:
    """(rows, columns) of the square round the projected head joint in `image`, FACE_CROP_HEADS
    head heights a side (the head's height: 2.5 x the distance from the head joint to the eyes'
    midpoint, about chin to crown on Anny), clipped to the image; None if the head is not in view."""
    names = subject.gt["body"]["joint_names"]
    if "head" not in names:
        return None
    positions = np.asarray(subject.gt[pose_of(image.split)]["joint_positions"], np.float64)
    head = positions[names.index("head")]
    eyes = [positions[names.index(name)] for name in ("eye.L", "eye.R") if name in names]
    head_height = 2.5 * float(np.linalg.norm(np.mean(eyes, axis=0) - head)) if eyes else DEFAULT_HEAD_HEIGHT_M
    camera = image.camera
    seen = camera.viewmat[:3, :3] @ head + camera.viewmat[:3, 3]
    if seen[2] <= 0:
        return None
    column, row = (camera.intrinsics @ (seen / seen[2]))[:2]
    half = 0.5 * FACE_CROP_HEADS * head_height * camera.intrinsics[0, 0] / seen[2]
    top, bottom = max(int(round(row - half)), 0), min(int(round(row + half)), camera.height)
    left, right = max(int(round(column - half)), 0), min(int(round(column + half)), camera.width)
    if bottom <= top or right <= left:
        return None
    return slice(top, bottom), slice(left, right)


def garment_coverage(avatar_alpha: np.ndarray, garment_mask: np.ndarray) -> tuple[int, int]:
    """(covered, total): how many pixels where the truth shows a garment (`garment_mask` > 0.5,
    [H, W], its mask pass) the avatar covers (`avatar_alpha` > 0.5, [H, W]), and how many there are."""
    silhouette = np.asarray(garment_mask) > 0.5
    return int((silhouette & (np.asarray(avatar_alpha) > 0.5)).sum()), int(silhouette.sum())


def _score_image(
    subject: Subject, image: SubjectImage, rgba: np.ndarray
) -> tuple[dict[str, Any], dict[str, tuple[int, int]], Comparison]:
    """One image's scores, its garments' (covered, total) pixels and its comparison."""
    render, covered = rgba[..., :3], rgba[..., 3] > 0.5
    truth, alpha = read_gt_image(subject, image)
    mask = alpha > 0.5
    psnr, ssim = masked_psnr(truth, render, mask), masked_ssim(truth, render, mask)
    scores: dict[str, Any] = {
        "psnr": round(psnr, 3),
        "ssim": round(ssim, 4),
        "silhouette_iou": round(float((mask & covered).sum() / max((mask | covered).sum(), 1)), 4),
    }
    crop = face_crop(subject, image)
    if crop is not None and mask[crop].any():
        scores["face_psnr"] = round(masked_psnr(truth[crop], render[crop], mask[crop]), 3)
    coverage = {name: garment_coverage(rgba[..., 3], read_mask(subject, image, name)) for name in image.masks}
    if coverage:
        scores["coverage"] = {name: round(hit / total, 4) for name, (hit, total) in coverage.items() if total}
    return scores, coverage, Comparison(image.name, truth, render, psnr)


def _score_split(
    avatar: GaussianAvatar, splats: Splats, subject: Subject, split: str
) -> tuple[dict[str, Any], list[Comparison]]:
    """One split's scores (means, pooled garment coverage, and per image) and its comparisons."""
    per_image, comparisons = {}, []
    pooled: dict[str, list[int]] = {}
    for image, rgba in zip(subject.split(split), render_split(avatar, splats, subject, split), strict=True):
        per_image[image.name], coverage, comparison = _score_image(subject, image, rgba)
        comparisons.append(comparison)
        for name, (hit, total) in coverage.items():
            pooled.setdefault(name, [0, 0])
            pooled[name] = [pooled[name][0] + hit, pooled[name][1] + total]

    def mean(key: str, digits: int) -> float | None:
        values = [item[key] for item in per_image.values() if key in item]
        return round(float(np.mean(values)), digits) if values else None

    report = {
        "psnr": mean("psnr", 3),
        "ssim": mean("ssim", 4),
        "face_psnr": mean("face_psnr", 3),
        "silhouette_iou": mean("silhouette_iou", 4),
    }
    if pooled:
        # All the split's silhouette pixels of a garment together: the share the avatar covers.
        report["coverage"] = {name: round(hit / total, 4) for name, (hit, total) in pooled.items() if total}
    return report | {"images": per_image}, comparisons


def score_avatar(avatar: GaussianAvatar, subject: Subject, log: Callable[[str], None] = print) -> Scores:
    """Scores of an avatar on a subject: every scored split the subject has, and the joint errors."""
    splats, joints = aligned_splats(avatar, subject, log)
    report: dict[str, Any] = {}
    comparisons: list[Comparison] = []
    for split in SCORED_SPLITS:
        images = subject.split(split)
        if not images:
            continue
        log(f"rendering {len(images)} {split} views")
        report[split], split_comparisons = _score_split(avatar, splats[pose_of(split)], subject, split)
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
