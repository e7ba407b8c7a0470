"""Scoring an avatar against a subject folder: alignment through the fitted body, held-out renders,
masked PSNR and SSIM, joint errors, the contact sheet; and the oracle avatar that checks the scorer.

Engine side (torch, through the renderer). The subject folder format is in bench/README.md.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eval_subject import joint_positions, sample_texture, srgb_to_linear

from lca_blender.avatar import GaussianAvatar, Pose, Rig, Splats
from lca_blender.evaluate.metrics import masked_psnr, masked_ssim
from lca_blender.maths.alignment import Similarity, umeyama_similarity
from lca_blender.maths.cameras import Camera
from lca_blender.maths.colour import linear_to_srgb
from lca_blender.maths.deform import expression_vector, pose_avatar
from lca_blender.maths.lights import Lighting, lighting_from_json
from lca_blender.maths.rotations import matrix_to_quaternion, quaternion_multiply
from lca_blender.maths.sh import SH_C0
from lca_blender.reconstruct.views import capture_from_json, capture_to_json

SCORED_SPLITS = ("heldout", "novel", "relit")


@dataclass(frozen=True)
class SubjectImage:
    """One image of a subject: its camera, split and files."""

    name: str
    split: str
    camera: Camera
    photo: str  # path relative to the subject folder ("" for images the build never sees)
    gt: str  # ground-truth RGBA image, relative path


@dataclass(frozen=True)
class Subject:
    folder: Path
    images: list[SubjectImage]
    gt: dict[str, Any]
    background: tuple[float, float, float]  # sRGB

    def split(self, name: str) -> list[SubjectImage]:
        return [image for image in self.images if image.split == name]

    def lighting(self, split: str) -> Lighting:
        return lighting_from_json(self.gt["lights"][split])

    def joint_positions(self, which: str) -> dict[str, np.ndarray]:
        """Ground-truth world positions of the main joints in the "capture" or "novel" pose."""
        names = self.gt["body"]["joint_names"]
        positions = np.asarray(self.gt[which]["joint_positions"], np.float64)
        return {name: positions[names.index(name)] for name in self.gt["body"]["main_joints"]}


def camera_from_json(entry: dict[str, Any]) -> Camera:
    viewmat = np.asarray(entry["viewmat"], np.float64)
    position = -viewmat[:3, :3].T @ viewmat[:3, 3]
    return Camera(
        entry["name"], position, viewmat, np.asarray(entry["K"], np.float64), entry["width"], entry["height"]
    )


def load_subject(folder: Path) -> Subject:
    folder = Path(folder)
    cameras = json.loads((folder / "cameras.json").read_text(encoding="utf-8"))
    gt = json.loads((folder / "gt.json").read_text(encoding="utf-8"))
    images = [
        SubjectImage(
            entry["name"], entry["split"], camera_from_json(entry), entry.get("file", ""), entry["gt"]
        )
        for entry in cameras["images"]
    ]
    background = tuple(cameras.get("background_srgb", (0.82, 0.82, 0.82)))
    return Subject(folder=folder, images=images, gt=gt, background=background)


def read_gt_image(subject: Subject, image: SubjectImage) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth as (sRGB over the subject's background [H, W, 3], alpha [H, W]) in [0, 1]."""
    from PIL import Image

    rgba = np.asarray(Image.open(subject.folder / image.gt).convert("RGBA"), np.float64) / 255
    alpha = rgba[..., 3]
    composite = rgba[..., :3] * alpha[..., None] + np.asarray(subject.background) * (1 - alpha[..., None])
    return composite, alpha


def align_to_ground_truth(
    rig: Rig, pose: Pose, ground_truth: dict[str, np.ndarray]
) -> tuple[Similarity, dict[str, float]]:
    """The similarity taking the avatar's joints in `pose` onto the ground-truth joints (by name),
    and the aligned joints' errors in cm (median, mean, max, and the joints used)."""
    names = [name for name in ground_truth if name in rig.joint_names]
    if len(names) < 4:
        raise ValueError(
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


def render_split(
    avatar: GaussianAvatar,
    splats: Splats,
    subject: Subject,
    split: str,
) -> list[np.ndarray]:
    """[H, W, 4] renders of the avatar's aligned splats for every image of a split: sRGB over the
    subject's background, and coverage."""
    from lca_blender.render.pictures import render_views

    images = subject.split(split)
    look = "relit" if split == "relit" else "captured"
    lighting = subject.lighting(split) if look == "relit" else None
    rendered = []
    for image in images:
        rgba = render_views(
            avatar, splats, [image.camera], look=look, lighting=lighting, background=subject.background
        )
        rendered.append(rgba[0].astype(np.float64))
    return rendered


def score_avatar(avatar: GaussianAvatar, subject: Subject, log=print) -> tuple[dict[str, Any], list]:
    """Scores of an avatar on a subject (JSON-ready) and the (name, ground truth, render, psnr)
    tiles of the contact sheet."""
    if "capture" not in avatar.provenance:
        raise ValueError("The avatar has no provenance['capture'] (its capture pose): it cannot be aligned.")
    capture, expressions = capture_from_json(avatar.provenance["capture"], avatar.rig)
    similarity, joint_report = align_to_ground_truth(avatar.rig, capture, subject.joint_positions("capture"))
    log(f"capture joints after alignment: median {joint_report['median_cm']} cm")
    captured_splats = transform_splats(pose_avatar(avatar, capture, expressions), similarity)
    novel, novel_expressions = _novel_pose(avatar, subject, capture)
    novel_similarity, novel_joint_report = align_to_ground_truth(
        avatar.rig, novel, subject.joint_positions("novel")
    )
    novel_splats = transform_splats(pose_avatar(avatar, novel, novel_expressions), novel_similarity)

    scores: dict[str, Any] = {}
    tiles = []
    for split in SCORED_SPLITS:
        images = subject.split(split)
        if not images:
            continue
        log(f"rendering {len(images)} {split} views")
        renders = render_split(avatar, novel_splats if split == "novel" else captured_splats, subject, split)
        per_image = {}
        for image, rgba in zip(images, renders, strict=True):
            render, covered = rgba[..., :3], rgba[..., 3] > 0.5
            truth, alpha = read_gt_image(subject, image)
            mask = alpha > 0.5
            psnr, ssim = masked_psnr(truth, render, mask), masked_ssim(truth, render, mask)
            iou = float((mask & covered).sum() / max((mask | covered).sum(), 1))
            per_image[image.name] = {"psnr": round(psnr, 3), "ssim": round(ssim, 4)}
            per_image[image.name]["silhouette_iou"] = round(iou, 4)
            tiles.append((image.name, truth, render, psnr))
        scores[split] = {
            "psnr": round(float(np.mean([item["psnr"] for item in per_image.values()])), 3),
            "ssim": round(float(np.mean([item["ssim"] for item in per_image.values()])), 4),
            "images": per_image,
        }
    scores["joints"] = {"capture": joint_report, "novel": novel_joint_report}
    return scores, tiles


def contact_sheet_image(tiles: list, pairs_per_row: int = 2) -> np.ndarray:
    """[H', W', 3] sRGB sheet: ground truth beside the avatar for each image, labelled."""
    from PIL import Image, ImageDraw

    from lca_blender.render.pictures import contact_sheet

    labelled = []
    for name, truth, render, psnr in tiles:
        for picture, label in ((truth, f"{name} truth"), (render, f"{name} avatar {psnr:.1f} dB")):
            canvas = Image.fromarray((np.clip(picture, 0, 1) * 255 + 0.5).astype(np.uint8))
            ImageDraw.Draw(canvas).text((4, 4), label, fill=(0, 0, 0))
            labelled.append(np.asarray(canvas, np.float64) / 255)
    return contact_sheet(np.stack(labelled), columns=2 * pairs_per_row)


def _footprint_filtered(rig: Rig, texture: np.ndarray, layout: GaussianAvatar) -> np.ndarray:
    """The sRGB texture [S, S, 3] uint8 blurred, in linear light, by a Gaussian's footprint: each
    Gaussian then carries the mean colour of the skin it covers rather than one point sample."""
    import cv2

    sizes = _triangle_sizes(rig)
    surface = 0.5 * sizes**2
    uv = rig.uvs[rig.triangle_uvs].astype(np.float64) * texture.shape[0]
    first, second = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    texels = 0.5 * np.abs(first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])
    texels_per_metre = np.sqrt(texels.sum() / surface.sum())
    scales = np.exp(layout.log_scales[:, 0]) * sizes[layout.triangle_ids]
    sigma = float(np.median(scales)) * texels_per_metre
    linear = cv2.GaussianBlur(srgb_to_linear(texture / 255.0), (0, 0), sigma)
    return (np.clip(linear_to_srgb(linear), 0, 1) * 255 + 0.5).astype(np.uint8)


def _triangle_sizes(rig: Rig) -> np.ndarray:
    """[F] sqrt of twice each rest triangle's area (the unit of a Gaussian's log-scale)."""
    corners = rig.vertices[rig.triangles].astype(np.float64)
    twice_areas = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    return np.sqrt(np.maximum(twice_areas, 1e-12))


def oracle_avatar(subject: Subject, gaussian_count: int = 150_000, seed: int = 0) -> GaussianAvatar:
    """An avatar made from the ground truth itself: Gaussians on the true body's surface with the
    true texture's albedo, captured colour = that albedo shaded (without shadows) by the capture
    lighting in the capture pose, provenance["capture"] = the true capture pose. Scoring it tests
    the scorer: alignment, cameras, rendering and colour conventions."""
    from PIL import Image

    from lca_blender.bodies.anny_body import anny_rig
    from lca_blender.maths.shading import relight_splats
    from lca_blender.reconstruct.sample import sample_avatar

    rig = anny_rig(subject.gt["body"]["phenotype"])
    layout = sample_avatar(rig, gaussian_count, sh_degree=0, seed=seed)
    texture = np.asarray(Image.open(subject.folder / subject.gt["texture"]).convert("RGB"))
    albedo = sample_texture(
        rig, _footprint_filtered(rig, texture, layout), layout.triangle_ids, layout.barycentrics
    )
    capture = subject.gt["capture"]
    pose, expressions = capture_from_json(capture, rig)
    count = layout.gaussian_count
    avatar = dataclasses.replace(
        layout,
        albedo=albedo.astype(np.float32),
        specular=np.zeros(count, np.float32),
        roughness=np.ones(count, np.float32),
        # Half-opaque, smaller discs: each pixel then averages several Gaussians instead of taking
        # the one whose centre is nearest the camera, which smears edges in an unfitted layout.
        log_scales=layout.log_scales + np.float32(np.log(0.7)),
        opacities=np.full(count, 0.5, np.float32),
        provenance={
            "source": "oracle",
            "description": "Ground-truth body and texture, for checking the evaluation harness",
            "capture": capture_to_json(pose, expressions, list(rig.expression_names)),
        },
    )
    splats = pose_avatar(avatar, pose, expressions)
    lit = relight_splats(avatar, splats, subject.lighting("input"), np.zeros(3))
    sh = ((linear_to_srgb(lit) - 0.5) / SH_C0)[:, None, :]
    return dataclasses.replace(avatar, sh=sh.astype(np.float32))
