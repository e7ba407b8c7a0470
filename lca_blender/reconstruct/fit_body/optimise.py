"""The fit: each photo's starting camera, then the body and the cameras optimised together."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import roma
import torch

from ...bodies.anny_body import load_anny_model
from ...errors import AvatarError
from ...maths.cameras import Camera, look_at
from ...progress import Progress
from ..cameras import SfmCameras, align_cameras, in_reference_frame
from ..ingest import Photo
from ..perceive import Perception
from ..views import BodyFit, View
from .anny import AnnyBody
from .body import BodyChoice, FittableBody, FittedRig, body_cache
from .photo_arms import arm_joints, arm_turns
from .photo_heads import head_joints, head_turns, turn_joints
from .smplx import SmplxBody
from .targets import (
    BODY_JOINTS,
    BODY_SURFACE,
    VISIBLE,
    MeshEdges,
    Silhouettes,
    in_cameras,
    landmark_targets,
    perspective,
    project,
    robust,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BodyFitSettings:
    """How the fit weighs and steps. Lengths are in units of the photo's longer side (the
    landmarks' coordinates); fractions are of the fit's steps."""

    start_focal: float = 1.4  # focal length in units of the image's longer side (a 50 mm lens on full frame)
    directions: int = 12  # camera directions tried round the body for each photo
    direction_steps: int = 150  # steps settling every direction tried, in one batch
    direction_lr: float = 0.02
    direction_sigma: float = 0.05  # the direction search's robust scale for the landmarks
    sfm_agreement_deg: float = 15.0  # SfM is used when most photos' guesses agree with it this well (median)
    camera_lr: float = 0.01  # the cameras' turns and translations
    pose_lr: float = 0.01  # the joints' rotation vectors
    shape_lr: float = 0.03  # the body's shape parameters and extras (Anny's jawOpen)
    landmark_sigma: float = 0.03  # the landmarks' robust scale
    silhouette_sigma: float = 0.01  # the silhouettes' robust scale
    silhouettes_from: float = 0.25  # the silhouettes count from this fraction of the steps on
    body_still_until: float = 0.1  # until this fraction of the steps the pose and shape keep their start
    pose_prior: float = 0.002  # weight of the joints' squared rotation vectors
    finger_prior: float = 0.2  # a finger joint's share of that weight: fingers bend more freely
    camera_turn_prior: float = 1e-4  # weight of the cameras' squared turn from their start
    report_every: int = 10  # steps between progress reports
    # Each photo's own turn of head and neck from its face (`photo_heads`), of the arms from their
    # landmarks (`photo_arms`). Off: on a harness subject who moved 5 degrees between shots the
    # face's points landed 1.6 px from the truth's with it against 4.0 without, yet held-out views
    # scored 0.2-0.3 dB lower (face crop 0.3-0.4), relit 0.2-0.5 lower, in three measurements
    # (`build_avatar`'s `photo_poses` turns both on, for measuring).
    photo_heads: bool = False
    photo_arms: bool = False


@dataclass(frozen=True)
class _PhotoTargets:
    """The photos as the loop sees them."""

    longest: list[float]  # [C] each photo's longer side in pixels: its unit of length
    centres: torch.Tensor  # [C, 2] image centres
    points: torch.Tensor  # [C, P, 2] landmark targets about the image centre (`LandmarkTargets`)
    weights: torch.Tensor  # [C, P]
    silhouettes: Silhouettes


@dataclass(frozen=True)
class _Unknowns:
    """What the fit finds besides the body's own shape parameters."""

    rotvecs: torch.Tensor  # [J, 3] each joint's rotation from its rest pose, optimised
    free: torch.Tensor  # [J, 3] the body's `free`: 1 where a rotation-vector component may move
    camera_turns: torch.Tensor  # [C, 3] rotation vectors from the starting cameras, optimised
    camera_translations: torch.Tensor  # [C, 3] optimised
    start_rotations: torch.Tensor  # [C, 3, 3] the starting cameras' world-to-camera rotations
    log_focal: torch.Tensor  # [C] held: the starting focal length, or structure-from-motion's
    sfm_photos: int  # photos whose starting camera came from structure-from-motion

    def camera_rotations(self) -> torch.Tensor:
        """[C, 3, 3] the cameras' world-to-camera rotations now."""
        return roma.rotvec_to_rotmat(self.camera_turns) @ self.start_rotations


def fit_body(
    perceptions: Sequence[Perception],
    steps: int = 400,
    sfm: SfmCameras | None = None,
    progress: Progress | None = None,
    photos: Sequence[Photo] | None = None,
    seed: int = 0,
    body: BodyChoice | None = None,
    settings: BodyFitSettings | None = None,
) -> BodyFit:
    """Fit the body model (`body`, Anny by default) and every photo's camera to the perceived photos.

    `sfm` is the cameras stage's result (or None); `photos` (ingest's, same sources) gives the
    views' pixels; `settings` tunes the fit. With `steps` 0 the result is the starting fit: the
    body at rest with its starting shape, seen by the starting cameras. Raises AvatarError when no
    photo shows a person.
    """
    progress = progress or Progress()
    settings = settings or BodyFitSettings()
    if not perceptions:
        raise AvatarError("No photo shows a person to fit a body to.")
    torch.manual_seed(seed)
    model = _fittable_body(body or BodyChoice(), any(seen.face is not None for seen in perceptions))
    targets = _photo_targets(perceptions)
    unknowns = _start(model, perceptions, targets, sfm, settings, progress)
    report = _optimise(model, unknowns, targets, steps, settings, progress)

    with torch.no_grad():
        posed = model.posed(unknowns.rotvecs * unknowns.free)
        rotations = unknowns.camera_rotations()
    progress.update(0.96, "building the fitted body's rig")
    fitted = model.result(posed)
    translations = unknowns.camera_translations.detach().numpy()
    focals = torch.exp(unknowns.log_focal).numpy()
    views = _views(perceptions, photos, rotations.numpy(), translations, focals, targets.longest, fitted.lift)
    progress.update(0.98, "finding how the person stood in each photo")
    views, turns = _photo_poses(perceptions, views, fitted, settings)
    report.update(fitted.report)
    report["photo_turns_deg"] = turns
    sfm_photos = unknowns.sfm_photos
    report["cameras"] = f"structure-from-motion for {sfm_photos} photo(s)" if sfm_photos else "body-relative"
    progress.update(1.0, f"body fitted: landmark error {report['landmark_error_px_median']} px")
    return BodyFit(
        rig=fitted.rig, pose=fitted.pose, expressions=fitted.expressions, views=views, report=report
    )


def _photo_poses(
    perceptions: Sequence[Perception], views: list[View], fitted: FittedRig, settings: BodyFitSettings
) -> tuple[list[View], dict[str, list[list[float]]]]:
    """The views with each photo's own pose where the person moved (`photo_heads`, `photo_arms`),
    and the turns' sizes in degrees per photo, for the report."""
    rig, pose = fitted.rig, fitted.pose
    parts = []
    if settings.photo_heads and (joints := head_joints(rig)) is not None:
        parts.append(("head_neck", joints, head_turns(perceptions, views, rig, pose, fitted.expressions)))
    if settings.photo_arms and (joints := arm_joints(rig)) is not None:
        parts.append(("arms", joints, arm_turns(perceptions, views, rig, pose)))
    report = {
        name: [
            [round(math.degrees(float(angle)), 2) for angle in np.linalg.norm(turn, axis=1)] for turn in turns
        ]
        for name, _, turns in parts
    }
    if not parts:
        return views, report
    joints = [joint for _, part, _ in parts for joint in part]
    posed = []
    for index, view in enumerate(views):
        turns = np.concatenate([part_turns[index] for _, _, part_turns in parts])
        posed.append(replace(view, pose=turn_joints(rig, pose, joints, turns)) if turns.any() else view)
    return posed, report


def _fittable_body(choice: BodyChoice, face_seen: bool) -> FittableBody:
    """The chosen body model, ready to fit (`face_seen`: some photo shows the face)."""
    if choice.model == "smplx":
        return SmplxBody(choice.smplx_file, body_cache(), face_seen)
    return AnnyBody(load_anny_model(), face_seen)


def _photo_targets(perceptions: Sequence[Perception]) -> _PhotoTargets:
    """The photos' landmarks and masks, in the units the loop works in."""
    shapes = [seen.mask.shape for seen in perceptions]
    longest = [float(max(shape)) for shape in shapes]
    centres = torch.tensor(
        [[shape[1] / 2 / scale, shape[0] / 2 / scale] for shape, scale in zip(shapes, longest, strict=True)]
    )
    landmarks = landmark_targets(perceptions, longest)
    return _PhotoTargets(
        longest=longest,
        centres=centres,
        points=torch.as_tensor(landmarks.points) - centres[:, None],
        weights=torch.as_tensor(landmarks.weights),
        silhouettes=Silhouettes([seen.mask for seen in perceptions]),
    )


def _start(
    model: FittableBody,
    perceptions: Sequence[Perception],
    targets: _PhotoTargets,
    sfm: SfmCameras | None,
    settings: BodyFitSettings,
    progress: Progress,
) -> _Unknowns:
    """The fit's start: the body at rest, and each photo's camera (`initial_cameras`, then SfM's)."""
    rotvecs = torch.zeros(model.joint_count, 3, requires_grad=True)
    log_focal = torch.full((len(perceptions),), math.log(settings.start_focal))
    free = torch.as_tensor(model.free, dtype=torch.float32)
    with torch.no_grad():
        rest_points = model.posed(rotvecs * free).points
    progress.update(0.02, "choosing each photo's camera direction")
    rotations, translations = initial_cameras(
        perceptions, rest_points, targets.points, targets.weights, torch.exp(log_focal), model, settings
    )
    sfm_photos = 0
    if sfm is not None:
        rotations, translations, log_focal, sfm_photos = use_sfm(
            sfm, perceptions, rotations, translations, log_focal, targets.longest, settings.sfm_agreement_deg
        )
    return _Unknowns(
        rotvecs=rotvecs,
        free=free,
        camera_turns=torch.zeros(len(perceptions), 3, requires_grad=True),
        camera_translations=translations.detach().clone().requires_grad_(True),
        start_rotations=rotations.detach(),
        log_focal=log_focal,
        sfm_photos=sfm_photos,
    )


def _optimise(
    model: FittableBody,
    unknowns: _Unknowns,
    targets: _PhotoTargets,
    steps: int,
    settings: BodyFitSettings,
    progress: Progress,
) -> dict[str, Any]:
    """Optimise the unknowns and the body's shape for `steps` steps; returns the last landmark
    report (the start's when `steps` is 0)."""
    edges = MeshEdges.of(model.triangles)
    joint_weights = torch.ones(model.joint_count, 1)
    joint_weights[torch.as_tensor(model.fingers)] = settings.finger_prior
    if steps == 0:
        with torch.no_grad():
            loss, residual = _loss(
                model, unknowns, targets, joint_weights, edges, settings, with_silhouettes=False
            )
        return _landmark_report(loss, residual, targets)
    optimizer = torch.optim.Adam(
        [
            {"params": [unknowns.camera_turns], "lr": settings.camera_lr},
            {"params": [unknowns.camera_translations], "lr": settings.camera_lr},
            {"params": [unknowns.rotvecs], "lr": settings.pose_lr},
            {"params": [model.shape, *model.extra], "lr": settings.shape_lr},
        ]
    )
    report: dict[str, Any] = {}
    for step in range(steps):
        fraction = step / max(steps - 1, 1)
        optimizer.zero_grad()
        silhouettes = fraction >= settings.silhouettes_from
        loss, residual = _loss(
            model, unknowns, targets, joint_weights, edges, settings, with_silhouettes=silhouettes
        )
        loss.backward()
        # Early on the pose and shape hold their start while the cameras settle: a fair start for both.
        if fraction < settings.body_still_until:
            unknowns.rotvecs.grad.zero_()
            model.shape.grad.zero_()
        optimizer.step()
        if step % settings.report_every == 0 or step == steps - 1:
            report = _landmark_report(loss, residual, targets)
            progress.update(
                0.05 + 0.9 * fraction,
                f"fitting the body: landmark error {report['landmark_error_px_median']} px",
            )
    return report


def _loss(
    model: FittableBody,
    unknowns: _Unknowns,
    targets: _PhotoTargets,
    joint_weights: torch.Tensor,  # [J, 1] the pose prior's weight per joint
    edges: MeshEdges,  # the body's mesh, for its outline in each photo
    settings: BodyFitSettings,
    with_silhouettes: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fit's loss now, and the landmarks' residuals [C, P, 2]."""
    posed = model.posed(unknowns.rotvecs * unknowns.free)
    rotations = unknowns.camera_rotations()
    focal = torch.exp(unknowns.log_focal)
    projected = project(posed.points, rotations, unknowns.camera_translations, focal)
    residual = projected - targets.points
    weights = targets.weights
    loss = (weights * robust(residual, settings.landmark_sigma)).sum() / weights.sum().clamp_min(1)
    if with_silhouettes:
        camera = in_cameras(posed.vertices, rotations, unknowns.camera_translations)
        vertex_projected = perspective(camera, focal) + targets.centres[:, None]
        contours = edges.contours(camera.detach())
        loss = loss + targets.silhouettes.loss(list(vertex_projected), contours, settings.silhouette_sigma)
    pose_prior = ((unknowns.rotvecs * unknowns.free) ** 2 * joint_weights).sum() * settings.pose_prior
    shape_prior = model.shape_prior()
    pose_prior = pose_prior + model.face_prior()
    loss = loss + pose_prior + shape_prior + settings.camera_turn_prior * (unknowns.camera_turns**2).sum()
    return loss, residual


def _landmark_report(loss: torch.Tensor, residual: torch.Tensor, targets: _PhotoTargets) -> dict[str, Any]:
    """The landmarks' median error in pixels over what the photos show, and the loss."""
    pixels = (residual.detach().norm(dim=-1) * torch.tensor(targets.longest)[:, None])[targets.weights > 0]
    return {
        "landmark_error_px_median": round(float(pixels.median()), 2) if pixels.numel() else None,
        "loss": round(loss.item(), 5),
    }


def initial_cameras(
    perceptions: Sequence[Perception],
    rest_points: torch.Tensor,  # [P, 3] the body's landmark points at rest
    target_points: torch.Tensor,  # [C, P, 2]
    target_weights: torch.Tensor,  # [C, P]
    focal: torch.Tensor,  # [C]
    body: FittableBody,
    settings: BodyFitSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per photo, the best of `settings.directions` camera directions round the resting body:
    world-to-camera rotations [C, 3, 3] and translations [C, 3].

    A photo with a face is taken from the front half, one without a face and with a hidden nose
    from the back half.
    """
    count = settings.directions
    rotations, translations, costs, azimuths = _directions_tried(
        perceptions, rest_points, target_points, target_weights, focal, body, settings
    )
    front = np.cos(azimuths) > 0  # the camera on the face's side
    chosen_r, chosen_t = [], []
    for view, seen in enumerate(perceptions):
        allowed = np.ones(count, bool)
        if seen.face is not None:
            allowed = front
        elif seen.pose[0, 3] < VISIBLE:
            allowed = ~front
        cost = costs[view].numpy().copy()
        cost[~allowed] = np.inf
        best = int(cost.argmin())
        logger.info("%s: camera from azimuth %.0f deg", seen.source, math.degrees(azimuths[best]))
        chosen_r.append(rotations[view, best])
        chosen_t.append(translations[view, best])
    return torch.stack(chosen_r), torch.stack(chosen_t)


def _directions_tried(
    perceptions: Sequence[Perception],
    rest_points: torch.Tensor,
    target_points: torch.Tensor,
    target_weights: torch.Tensor,
    focal: torch.Tensor,
    body: FittableBody,
    settings: BodyFitSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Every photo's camera from each direction round the body, settled on the body's landmarks in
    one batch: rotations [C, D, 3, 3], translations [C, D, 3], their costs [C, D] and the
    directions' azimuths [D] (0: in front of the body)."""
    count = settings.directions
    view_count = len(perceptions)
    centre = torch.as_tensor(
        0.5 * (body.rest_vertices.min(0) + body.rest_vertices.max(0)), dtype=torch.float32
    )
    height = float(np.ptp(body.rest_vertices[:, 2]))
    azimuths = np.arange(count) * 2 * math.pi / count
    rotations, translations = [], []
    for view in range(view_count):
        mask = perceptions[view].mask > 0.5
        rows = np.flatnonzero(mask.any(1))
        extent = (rows[-1] - rows[0] + 1) / max(mask.shape) if rows.size else 0.8
        distance = float(focal[view]) * height / max(extent, 0.05)  # the body fills the mask's height
        for azimuth in azimuths:
            position = centre.numpy() + distance * np.array([math.sin(azimuth), -math.cos(azimuth), 0.0])
            viewmat = look_at(position, centre.numpy())
            rotations.append(viewmat[:3, :3])
            translations.append(viewmat[:3, 3])
    base = torch.as_tensor(np.array(rotations), dtype=torch.float32)
    translation = torch.as_tensor(np.array(translations), dtype=torch.float32).requires_grad_(True)
    rotvec = torch.zeros(len(base), 3, requires_grad=True)
    targets = target_points.repeat_interleave(count, 0)
    weights = target_weights.repeat_interleave(count, 0)
    focals = focal.repeat_interleave(count, 0)
    body_count = len(BODY_JOINTS) + len(BODY_SURFACE)
    weights[:, body_count:] = 0.0  # the body alone decides the direction

    def costs() -> torch.Tensor:  # [C * D] each camera's mean robust landmark error
        projected = project(rest_points, roma.rotvec_to_rotmat(rotvec) @ base, translation, focals)
        errors = robust(projected - targets, settings.direction_sigma)
        return (weights * errors).sum(1) / weights.sum(1).clamp_min(1)

    optimizer = torch.optim.Adam(
        [
            {"params": [rotvec], "lr": settings.direction_lr},
            {"params": [translation], "lr": settings.direction_lr},
        ]
    )
    for _ in range(settings.direction_steps):
        optimizer.zero_grad()
        costs().sum().backward()
        optimizer.step()
    with torch.no_grad():
        final_costs = costs().reshape(view_count, count)
        final_rotations = (roma.rotvec_to_rotmat(rotvec) @ base).reshape(view_count, count, 3, 3)
        final_translations = translation.detach().reshape(view_count, count, 3)
    return final_rotations, final_translations, final_costs, azimuths


def use_sfm(
    sfm: SfmCameras,
    perceptions: Sequence[Perception],
    rotations: torch.Tensor,  # [C, 3, 3] the starting guesses
    translations: torch.Tensor,  # [C, 3]
    log_focal: torch.Tensor,  # [C]
    longest: Sequence[float],
    agreement_deg: float = BodyFitSettings.sfm_agreement_deg,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Cameras from structure-from-motion, carried onto the body-relative guesses by a similarity;
    returns the rotations, translations and log focal lengths, and how many photos took SfM's.

    SfM cameras are consistent with each other, the guesses independent but each roughly right.
    SfM is trusted only when most photos agree with it (a wrong SfM model, e.g. back views folded
    onto front ones by a repeating pattern, disagrees with many guesses); then its cameras and focal
    length replace the guesses of the photos that agree, and the others keep their guess.
    """
    reference = {}
    for view, seen in enumerate(perceptions):
        viewmat = np.eye(4)
        viewmat[:3, :3] = rotations[view].numpy()
        viewmat[:3, 3] = translations[view].numpy()
        reference[seen.source] = viewmat
    try:
        alignment = align_cameras(sfm, reference)
    except ValueError as error:
        logger.warning("Structure-from-motion cameras not used: %s", error)
        return rotations, translations, log_focal, 0
    agreement = np.median([alignment.rotation_errors_deg[source] for source in alignment.inliers])
    if agreement > agreement_deg or len(alignment.inliers) < max(
        3, math.ceil(2 * len(alignment.rotation_errors_deg) / 3)
    ):
        logger.warning("Structure-from-motion cameras not used: they disagree with the body's.")
        return rotations, translations, log_focal, 0
    aligned = in_reference_frame(sfm, alignment.similarity)
    new_r, new_t, new_f = rotations.clone(), translations.clone(), log_focal.clone()
    for view, seen in enumerate(perceptions):
        if seen.source not in alignment.inliers:
            continue
        viewmat = aligned.cameras[seen.source].viewmat
        new_r[view] = torch.as_tensor(viewmat[:3, :3], dtype=torch.float32)
        new_t[view] = torch.as_tensor(viewmat[:3, 3], dtype=torch.float32)
        new_f[view] = math.log(sfm.focal_px / longest[view])
    logger.info("Cameras from structure-from-motion for %d photo(s)", len(alignment.inliers))
    return new_r, new_t, new_f, len(alignment.inliers)


def _views(
    perceptions: Sequence[Perception],
    photos: Sequence[Photo] | None,
    rotations: np.ndarray,  # [C, 3, 3] in the fit's world
    translations: np.ndarray,  # [C, 3]
    focals: np.ndarray,  # [C] in units of the longer side
    longest: Sequence[float],
    lift: np.ndarray,  # [3] the rig's world minus the fit's
) -> list[View]:
    """Views with cameras in the rig's world (lifted so the rest soles are at z = 0)."""
    views = []
    for view, seen in enumerate(perceptions):
        height, width = seen.mask.shape
        viewmat = np.eye(4)
        viewmat[:3, :3] = rotations[view]
        viewmat[:3, 3] = translations[view] - rotations[view] @ lift  # world point x + lift
        focal = float(focals[view]) * longest[view]
        intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
        position = -viewmat[:3, :3].T @ viewmat[:3, 3]
        pixels = None
        if photos is not None:
            pixels = next(photo.pixels for photo in photos if photo.source == seen.source)
        camera = Camera(seen.source, position, viewmat, intrinsics, width, height)
        views.append(View(source=seen.source, pixels=pixels, mask=seen.mask, camera=camera))
    return views
