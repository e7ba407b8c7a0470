"""The oracle avatar: an avatar made from a subject's ground truth, which checks the scorer.

Gaussians sampled on the true body carry the true texture's albedo and, as captured colour, that
albedo shaded (without shadows or interreflection) by the capture lighting in the true capture
pose, shown through the subject's view transform as its photos are. It wears no garments: on a
clothed subject it is the body-only avatar, whose scores show what the clothes cost. Scoring it
tests the alignment, cameras, rendering and colour conventions; its scores are the ceiling this
Gaussian layout can reach.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..avatar import GaussianAvatar, Rig
from ..maths.colour import linear_to_srgb, srgb_to_linear
from ..maths.deform import pose_avatar
from ..maths.sh import SH_C0
from ..reconstruct.views import capture_from_json, capture_to_json
from .outfit import sample_texture
from .subjects import Subject


def _triangle_sizes(rig: Rig) -> np.ndarray:
    """[F] sqrt of twice each rest triangle's area (the unit of a Gaussian's log-scale)."""
    corners = rig.vertices[rig.triangles].astype(np.float64)
    twice_areas = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    return np.sqrt(np.maximum(twice_areas, 1e-12))


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


def oracle_avatar(subject: Subject, gaussian_count: int = 150_000, seed: int = 0) -> GaussianAvatar:
    """An avatar made from the ground truth itself (module docstring): Gaussians on the true body
    with the true texture's albedo, captured colour that albedo shaded by the capture lighting in
    the capture pose, provenance["capture"] = the true capture pose."""
    from PIL import Image

    from ..bodies.anny_body import anny_rig
    from ..maths.shading import relight_splats
    from ..reconstruct.sample import sample_avatar

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
    # The captured look is what the photos show: the lit colour through the truth's view transform.
    sh = ((subject.display.encode(lit) - 0.5) / SH_C0)[:, None, :]
    return dataclasses.replace(avatar, sh=sh.astype(np.float32))
