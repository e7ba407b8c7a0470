"""fit_body: the person's body shape, pose (fingers and jaw included) and every photo's camera.

The Anny body model is fitted directly in torch (its shape is differentiable in its six phenotype
values, its pose in a rotation vector per bone), to the 2D landmarks MediaPipe found and to the
person masks:

- landmarks: the body's 3D points (bone heads, fingertips, a few surface points such as the nose
  and heels) projected by each photo's camera, against the landmark each photo has, weighted by
  MediaPipe's visibility and with a robust loss; hands and face count only where found;
- silhouettes: every body vertex must project inside the mask (a distance transform sampled at
  the projected vertices), and every point of the mask's outline must have a vertex near it;
- priors: the pose stays near the rest pose (Anny's relaxed A-pose), the shape near the average
  (Anny's phenotype, SMPL-X's betas), and bones no photo can show (toes, metacarpals, eyes) do
  not move.

Cameras: the body defines the world (its root does not move); each photo gets its own camera, as
if the camera went round the person or the person turned in front of it. A camera starts from the
best of several directions round the body, tried in one batch; a photo with a face is taken from
the front half, one without a face and with a hidden nose from the back half. When
structure-from-motion tied the photos together, its cameras (aligned to these by a similarity)
replace the independent guesses and give the focal length.

The body model is either Anny (the default: its phenotype is the shape, jawOpen opens the mouth)
or SMPL-X from the user's own model file (`fit_body_smplx`: betas are the shape, the jaw is a
joint). Both stand behind `FittableBody`, so the landmarks, silhouettes, cameras and priors above
are one code path. The result is converted to the body's rig for the fitted shape (the cached Anny
rig for the phenotype, or `smplx_rig` for the betas) and a `Pose` on it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..avatar import ARKIT_EXPRESSIONS, FINGERS, Pose, Rig
from ..errors import AvatarError
from ..maths.cameras import Camera, look_at
from ..progress import Progress
from .perceive import Perception
from .views import BodyFit, View

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PHENOTYPE = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_FOCAL = 1.4  # focal length in units of the image's longer side (a 50 mm lens on full frame)
HYPOTHESES = 12  # camera directions tried round the body for each photo
SFM_AGREEMENT_DEG = 15.0  # SfM is used when most photos' guesses agree with it this well (median)

# MediaPipe Pose landmarks -> Anny bone heads.
BODY_JOINTS = {
    2: "eye.L", 5: "eye.R", 11: "upperarm01.L", 12: "upperarm01.R", 13: "lowerarm01.L",
    14: "lowerarm01.R", 15: "wrist.L", 16: "wrist.R", 23: "upperleg01.L", 24: "upperleg01.R",
    25: "lowerleg01.L", 26: "lowerleg01.R", 27: "foot.L", 28: "foot.R",
}  # fmt: skip
# MediaPipe Pose landmarks -> surface points, found on the template (see `_surface_points`).
BODY_SURFACE = ("nose", "ear.L", "ear.R", "heel.L", "heel.R", "toe.L", "toe.R")
BODY_SURFACE_INDICES = (0, 7, 8, 29, 30, 31, 32)
# MediaPipe Hands landmarks (0 wrist, then 4 per finger from the base) -> Anny bones (head or tail).
NOSE_VERTEX, UPPER_LIP_VERTEX, LOWER_LIP_VERTEX = 5038, 520, 523  # on Anny's template
FACE_LANDMARKS = {13: UPPER_LIP_VERTEX, 14: LOWER_LIP_VERTEX}  # MediaPipe Face Mesh inner lips
# Bones the photos cannot show: they keep their rest rotation.
FROZEN_PREFIXES = ("root", "toe", "metacarpal", "eye")


@dataclass(frozen=True)
class _Targets:
    """Every photo's 2D landmarks, as one padded batch (normalised by the image's longer side)."""

    points: np.ndarray  # [C, P, 2]
    weights: np.ndarray  # [C, P]


BODY_MODELS = ("anny", "smplx")


@dataclass(frozen=True)
class BodyChoice:
    """The body model a build fits: Anny, or SMPL-X from the user's own model file."""

    model: str = "anny"  # one of BODY_MODELS
    smplx_file: Path | None = None  # the SMPL-X .npz release (model "smplx")
    smplx_sha256: str | None = None  # its sha256: builds on different files never share a fit

    def cache_settings(self) -> dict[str, Any]:
        """What of the choice shapes a build's result, for the build's cache key."""
        return {"body": self.model, "smplx_sha256": self.smplx_sha256}

    def rig(self, body_parameters: dict[str, Any]) -> Rig:
        """The fitted rig again, from the `body_parameters` of the rig a fit returned."""
        if self.model == "smplx":
            from ..bodies.smplx_body import smplx_rig

            return smplx_rig(self.smplx_file, _body_cache(), betas=np.asarray(body_parameters["betas"]))
        from ..bodies.anny_body import anny_rig

        return anny_rig(body_parameters["phenotype"])


def body_choice(model: str = "anny", smplx_file: str | Path | None = None) -> BodyChoice:
    """A checked BodyChoice: SMPL-X needs its model file, which is checked (and converted into the
    body cache) now, before any photo is looked at. Raises AvatarError (BodyModelError for an
    unusable model file)."""
    if model not in BODY_MODELS:
        raise AvatarError(f"Unknown body model '{model}'. Use one of: {', '.join(BODY_MODELS)}.")
    if model == "anny":
        if smplx_file is not None:
            raise AvatarError("An SMPL-X model file was given for an Anny build; choose the SMPL-X body.")
        return BodyChoice()
    if smplx_file is None:
        raise AvatarError(
            "Fitting SMPL-X needs its model file: download SMPLX_NEUTRAL.npz from the SMPL-X website "
            "(registration, non-commercial licence) and pass it with --smplx."
        )
    from ..bodies.smplx_body import smplx_arrays

    _, sha256 = smplx_arrays(smplx_file, _body_cache())
    return BodyChoice("smplx", Path(smplx_file).resolve(), sha256)


def _body_cache() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "bodies"


@dataclass(frozen=True)
class PosedBody:
    """A body model evaluated during the fit."""

    vertices: torch.Tensor  # [V, 3] the posed mesh in the fit's world
    points: torch.Tensor  # [P, 3] the points the landmarks name, in `_landmark_targets`' order
    output: Any  # the model's own result, for `FittableBody.result`


@dataclass(frozen=True)
class FittedRig:
    """The fit's outcome on the body model's rig."""

    rig: Rig
    pose: Pose
    expressions: np.ndarray  # [E] float32, E = len(rig.expression_names)
    lift: np.ndarray  # [3] the rig's world minus the fit's world (Anny's rig stands on z = 0)
    report: dict[str, Any]  # the shape and face figures worth reporting


class FittableBody(Protocol):
    """What fit_body needs of a body model: Anny (`_AnnyBody`) or SMPL-X (`fit_body_smplx`).

    The body owns its shape parameters; fit_body owns a rotation vector per joint (zero: the
    model's rest pose, Anny's A-pose or SMPL-X's T-pose) and the cameras.
    """

    joint_count: int
    rest_vertices: np.ndarray  # [V, 3] the mesh at the starting shape and rest pose
    free: np.ndarray  # [J] bool: joints the photos can show (the others keep their rest rotation)
    fingers: np.ndarray  # [J] bool: finger joints (a softer pose prior)
    shape: torch.Tensor  # the shape parameters, optimised
    extra: list  # other parameters optimised with the shape (Anny's jawOpen)

    def posed(self, rotvecs: torch.Tensor) -> PosedBody:  # rotvecs [J, 3], frozen joints zeroed
        ...

    def shape_prior(self) -> torch.Tensor: ...

    def face_prior(self) -> torch.Tensor | float: ...

    def result(self, posed: PosedBody) -> FittedRig: ...


class _AnnyBody:
    """Anny's torch model with the fitter's parameters and the 3D points the landmarks name."""

    def __init__(self, model, face_seen: bool) -> None:
        import torch

        self.model = model
        self.labels = list(model.bone_labels)
        self.joint_count = len(self.labels)
        with torch.no_grad():
            rest = model(pose_parameterization="local-bone-world")
        vertices = rest["rest_vertices"][0].numpy()
        frames = rest["rest_bone_poses"][0].numpy()
        self.floor = float(vertices[:, 2].min())
        self.rest_vertices = vertices
        self.rest_heads = frames[:, :3, 3]
        self.free = np.array([not name.startswith(FROZEN_PREFIXES) for name in self.labels])
        self.fingers = np.array([name.startswith("finger") for name in self.labels])
        # Fingertips: the last phalanx's tail, a fixed offset in its bone frame.
        self.tip_offsets = {}
        for finger in FINGERS:
            for side in ("L", "R"):
                last = self.labels.index(f"{finger}-3.{side}")
                middle = self.labels.index(f"{finger}-2.{side}")
                length = np.linalg.norm(frames[last, :3, 3] - frames[middle, :3, 3])
                direction = frames[last, :3, 3] - frames[middle, :3, 3]
                local = np.linalg.inv(frames[last, :3, :3]) @ (direction / max(length, 1e-6))
                self.tip_offsets[(finger, side)] = (last, local * 0.8 * length)
        self.surface = _surface_points(vertices, self.labels, frames, model)
        self.shape = torch.zeros(len(PHENOTYPE), requires_grad=True)  # phenotype logits
        self.jaw_logit = torch.full((1,), -4.0, requires_grad=face_seen)
        self.extra = [self.jaw_logit]

    def index(self, name: str) -> int:
        return self.labels.index(name)

    def posed(self, rotvecs: torch.Tensor) -> PosedBody:
        import roma
        import torch

        phenotype = torch.sigmoid(self.shape)
        deltas = torch.eye(4).repeat(1, self.joint_count, 1, 1)
        rotations = roma.rotvec_to_rotmat(rotvecs)
        deltas = torch.cat([torch.cat([rotations, torch.zeros(self.joint_count, 3, 1)], 2),
                            deltas[0, :, 3:, :]], 1)[None]  # fmt: skip
        output = self.model(
            pose_parameters=deltas,
            phenotype_kwargs={name: phenotype[i : i + 1] for i, name in enumerate(PHENOTYPE)},
            facial_actions={"jawOpen": torch.sigmoid(self.jaw_logit)},
            pose_parameterization="local-bone-world",
        )
        return PosedBody(output["vertices"][0].float(), _model_points(self, output), output)

    def shape_prior(self) -> torch.Tensor:
        import torch

        return ((torch.sigmoid(self.shape) - 0.5) ** 2).sum() * 0.02

    def face_prior(self) -> torch.Tensor:
        import torch

        return 0.02 * torch.sigmoid(self.jaw_logit).sum() ** 2

    def result(self, posed: PosedBody) -> FittedRig:
        import torch

        from ..bodies.anny_body import anny_rig

        with torch.no_grad():
            phenotype = {
                name: float(value) for name, value in zip(PHENOTYPE, torch.sigmoid(self.shape), strict=True)
            }
            jaw = float(torch.sigmoid(self.jaw_logit))
        rig = anny_rig(phenotype)
        pose = _pose_on_rig(rig, posed.output)
        expressions = np.zeros(len(ARKIT_EXPRESSIONS), np.float32)
        expressions[list(ARKIT_EXPRESSIONS).index("jawOpen")] = jaw if jaw > 0.05 else 0.0
        lift = np.asarray(rig.body_parameters["lift"], np.float64)
        report = {
            "phenotype": {name: round(value, 3) for name, value in phenotype.items()},
            "jawOpen": round(jaw, 3),
        }
        return FittedRig(rig, pose, expressions, lift, report)


def _surface_points(vertices: np.ndarray, labels: list[str], frames: np.ndarray, model) -> dict[str, int]:
    """Template vertices standing for MediaPipe's surface landmarks (nose, ears, heels, toes)."""
    dominant = model.vertex_bone_indices.numpy()[
        np.arange(vertices.shape[0]), model.vertex_bone_weights.numpy().argmax(1)
    ]
    points = {"nose": NOSE_VERTEX}
    eye_height = frames[labels.index("eye.L"), 2, 3]
    head = np.flatnonzero(dominant == labels.index("head"))
    level = head[np.abs(vertices[head, 2] - eye_height) < 0.025]
    points["ear.L"] = int(level[vertices[level, 0].argmax()])
    points["ear.R"] = int(level[vertices[level, 0].argmin()])
    floor = vertices[:, 2].min()
    for side, sign in (("L", 1.0), ("R", -1.0)):
        foot = np.flatnonzero(
            (vertices[:, 2] < floor + 0.05) & (sign * vertices[:, 0] > 0.03) & (np.abs(vertices[:, 0]) < 0.3)
        )
        points[f"heel.{side}"] = int(foot[vertices[foot, 1].argmax()])
        points[f"toe.{side}"] = int(foot[vertices[foot, 1].argmin()])
    return points


def _landmark_targets(perceptions: Sequence[Perception], longest: Sequence[float]) -> _Targets:
    """Per photo: body landmarks, then 2 x 21 hand landmarks, then the face's inner lips."""
    count = len(BODY_JOINTS) + len(BODY_SURFACE) + 42 + len(FACE_LANDMARKS)
    points = np.zeros((len(perceptions), count, 2), np.float32)
    weights = np.zeros((len(perceptions), count), np.float32)
    for view, (seen, scale) in enumerate(zip(perceptions, longest, strict=True)):
        body = list(BODY_JOINTS) + list(BODY_SURFACE_INDICES)
        visibility = np.clip(seen.pose[body, 3], 0.0, 1.0)
        points[view, : len(body)] = seen.pose[body, :2] / scale
        weights[view, : len(body)] = np.where(visibility > 0.3, visibility, 0.0)
        start = len(body)
        for hand in (seen.left_hand, seen.right_hand):
            if hand is not None:
                points[view, start : start + 21] = hand[:, :2] / scale
                weights[view, start : start + 21] = 0.5
            start += 21
        if seen.face is not None:
            points[view, start:] = seen.face[list(FACE_LANDMARKS), :2] / scale
            weights[view, start:] = 1.0
    return _Targets(points, weights)


def _model_points(body: _AnnyBody, output) -> torch.Tensor:
    """[P, 3] the body's points in the landmarks' order (see `_landmark_targets`)."""
    import torch

    frames = output["bone_poses"][0].float()
    vertices = output["vertices"][0].float()
    heads = frames[:, :3, 3]
    parts = [heads[[body.index(name) for name in BODY_JOINTS.values()]]]
    parts.append(vertices[[body.surface[name] for name in BODY_SURFACE]])
    for side in ("L", "R"):
        hand = [heads[body.index(f"wrist.{side}")]]
        for finger in FINGERS:
            hand += [heads[body.index(f"{finger}-{phalanx}.{side}")] for phalanx in (1, 2, 3)]
            last, offset = body.tip_offsets[(finger, side)]
            hand.append(frames[last, :3, :3] @ torch.as_tensor(offset, dtype=frames.dtype) + heads[last])
        parts.append(torch.stack(hand))
    parts.append(vertices[list(FACE_LANDMARKS.values())])
    return torch.cat(parts)


def _project(points, rotations, translations, focal):
    """[C, P, 2] normalised image coordinates of world points [P, 3] (or [C, P, 3]) in C cameras."""
    import torch

    camera = torch.einsum("cij,...pj->cpi", rotations, points) + translations[:, None]
    depth = camera[..., 2:].clamp_min(0.05)
    return focal[:, None, None] * camera[..., :2] / depth, camera[..., 2]


def _robust(residual, sigma: float):
    """Geman-McClure on squared residual norms: quadratic near 0, bounded for outliers."""
    squared = (residual**2).sum(-1) / sigma**2
    return squared / (1.0 + squared)


class _Silhouettes:
    """Per photo, at a working resolution: the distance outside the mask and the mask's outline."""

    def __init__(self, masks: Sequence[np.ndarray], longest: Sequence[float], side: int = 256) -> None:
        import cv2
        import torch

        fields, outlines = [], []
        self.sizes = []
        for mask in masks:
            height, width = mask.shape
            scale = side / max(height, width)
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
            small = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
            outside = cv2.distanceTransform((~small).astype(np.uint8), cv2.DIST_L2, 5) / max(size)
            fields.append(torch.as_tensor(outside, dtype=torch.float32))
            contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            outline = np.concatenate([c[:, 0, :] for c in contours]) if contours else np.zeros((1, 2))
            step = max(1, len(outline) // 300)
            outline = (outline[::step].astype(np.float32) + 0.5) / max(size)
            outlines.append(torch.as_tensor(outline))
            self.sizes.append(size)
        self.fields = fields
        self.outlines = outlines
        self.closest: list = [None] * len(fields)
        self.calls = 0

    def loss(self, projected: list, sigma: float = 0.01):
        """Mean over photos of: vertices outside the mask, and outline points far from any vertex."""
        import torch

        total = 0.0
        refresh = self.calls % 5 == 0  # nearest vertices change slowly: look them up every 5 steps
        self.calls += 1
        for view, (field, outline, points, (width, height)) in enumerate(
            zip(self.fields, self.outlines, projected, self.sizes, strict=True)
        ):
            longest = max(width, height)
            grid = torch.stack([points[:, 0] * longest / width, points[:, 1] * longest / height], -1) * 2 - 1
            outside = torch.nn.functional.grid_sample(
                field[None, None], grid[None, :, None], align_corners=False, padding_mode="border"
            )[0, 0, :, 0]
            if refresh or self.closest[view] is None:
                with torch.no_grad():  # which vertex is nearest; the distance itself is differentiated
                    squared = (points**2).sum(1)[None] - 2 * outline @ points.T  # + |outline|^2 per row
                    self.closest[view] = squared.argmin(1)
            nearest = (outline - points[self.closest[view]]).norm(dim=-1)
            total = total + _robust(outside[:, None], sigma).mean() + _robust(nearest[:, None], sigma).mean()
        return total / len(self.fields)


def fit_body(
    perceptions: Sequence[Perception],
    steps: int = 400,
    sfm=None,
    progress: Progress | None = None,
    photos: Sequence | None = None,
    seed: int = 0,
    body: BodyChoice | None = None,
) -> BodyFit:
    """Fit the body model (`body`, Anny by default) to the perceived photos; `photos` (ingest's
    Photo, same order) gives the views' pixels.

    `sfm` is the cameras stage's result (or None).
    """
    import torch

    progress = progress or Progress()
    if not perceptions:
        raise AvatarError("No photo shows a person to fit a body to.")
    torch.manual_seed(seed)
    model = _fittable_body(body or BodyChoice(), any(seen.face is not None for seen in perceptions))
    shapes = [seen.mask.shape for seen in perceptions]
    longest = [float(max(shape)) for shape in shapes]
    centres = torch.tensor(
        [[shape[1] / 2 / scale, shape[0] / 2 / scale] for shape, scale in zip(shapes, longest, strict=True)]
    )
    targets = _landmark_targets(perceptions, longest)
    target_points = torch.as_tensor(targets.points) - centres[:, None]
    target_weights = torch.as_tensor(targets.weights)
    silhouettes = _Silhouettes([seen.mask for seen in perceptions], longest)
    view_count = len(perceptions)

    # Parameters (the body's shape parameters are its own).
    rotvecs = torch.zeros(model.joint_count, 3, requires_grad=True)
    log_focal = torch.full((view_count,), math.log(DEFAULT_FOCAL))
    free = torch.as_tensor(model.free, dtype=torch.float32)[:, None]

    with torch.no_grad():
        rest_points = model.posed(rotvecs * free).points
    progress.update(0.02, "choosing each photo's camera direction")
    camera_rotations, camera_translations = _initial_cameras(
        perceptions, rest_points, target_points, target_weights, torch.exp(log_focal), model
    )
    sfm_photos = 0
    if sfm is not None:
        camera_rotations, camera_translations, log_focal, sfm_photos = _use_sfm(
            sfm, perceptions, camera_rotations, camera_translations, log_focal, longest
        )
    camera_rotvecs = torch.zeros(view_count, 3, requires_grad=True)
    camera_translations = camera_translations.detach().clone().requires_grad_(True)
    base_rotations = camera_rotations.detach()

    vertex_count = model.rest_vertices.shape[0]
    vertex_subset = torch.as_tensor(
        np.random.default_rng(seed).choice(vertex_count, min(3000, vertex_count), replace=False)
    )
    groups = [
        {"params": [camera_rotvecs], "lr": 0.01},
        {"params": [camera_translations], "lr": 0.01},
        {"params": [rotvecs], "lr": 0.01},
        {"params": [model.shape, *model.extra], "lr": 0.03},
    ]
    optimizer = torch.optim.Adam(groups)
    body_weights = torch.ones(model.joint_count, 1)
    body_weights[torch.as_tensor(model.fingers)] = 0.2
    report: dict = {}
    for step in range(steps):
        import roma

        fraction = step / max(steps - 1, 1)
        optimizer.zero_grad()
        posed = model.posed(rotvecs * free)
        rotations = roma.rotvec_to_rotmat(camera_rotvecs) @ base_rotations
        focal = torch.exp(log_focal)
        projected, depth = _project(posed.points, rotations, camera_translations, focal)
        residual = projected - target_points
        landmark_loss = (target_weights * _robust(residual, 0.03)).sum() / target_weights.sum().clamp_min(1)
        loss = landmark_loss
        silhouette_weight = 0.0 if fraction < 0.25 else 1.0
        if silhouette_weight:
            vertices = posed.vertices[vertex_subset]
            vertex_projected, _ = _project(vertices, rotations, camera_translations, focal)
            vertex_projected = vertex_projected + centres[:, None]
            loss = loss + silhouette_weight * silhouettes.loss(list(vertex_projected))
        pose_prior = ((rotvecs * free) ** 2 * body_weights).sum() * 0.002
        shape_prior = model.shape_prior()
        pose_prior = pose_prior + model.face_prior()
        loss = loss + pose_prior + shape_prior + 1e-4 * (camera_rotvecs**2).sum()
        loss.backward()
        # Early on only the cameras and the big joints move: a fair start for the rest.
        if fraction < 0.1:
            rotvecs.grad.zero_()
            model.shape.grad.zero_()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            pixels = (residual.detach().norm(dim=-1) * torch.tensor(longest)[:, None])[target_weights > 0]
            report = {
                "landmark_error_px_median": round(float(pixels.median()), 2) if pixels.numel() else None,
                "loss": round(loss.item(), 5),
            }
            progress.update(
                0.05 + 0.9 * fraction,
                f"fitting the body: landmark error {report['landmark_error_px_median']} px",
            )

    with torch.no_grad():
        posed = model.posed(rotvecs * free)
        rotations = roma.rotvec_to_rotmat(camera_rotvecs) @ base_rotations
    progress.update(0.96, "building the fitted body's rig")
    fitted = model.result(posed)
    views = _views(perceptions, photos, rotations.numpy(), camera_translations.detach().numpy(),
                   torch.exp(log_focal).numpy(), longest, fitted.lift)  # fmt: skip
    report.update(fitted.report)
    report["cameras"] = f"structure-from-motion for {sfm_photos} photo(s)" if sfm_photos else "body-relative"
    progress.update(1.0, f"body fitted: landmark error {report['landmark_error_px_median']} px")
    return BodyFit(
        rig=fitted.rig, pose=fitted.pose, expressions=fitted.expressions, views=views, report=report
    )


def _fittable_body(choice: BodyChoice, face_seen: bool) -> FittableBody:
    """The chosen body model, ready to fit (`face_seen`: some photo shows the face)."""
    if choice.model == "smplx":
        from .fit_body_smplx import SmplxBody

        return SmplxBody(choice.smplx_file, _body_cache(), face_seen)
    from ..bodies.anny_body import load_anny_model

    return _AnnyBody(load_anny_model(), face_seen)


def _initial_cameras(perceptions, rest_points, target_points, target_weights, focal, body):
    """Per photo, the best of HYPOTHESES camera directions round the resting body."""
    import roma
    import torch

    view_count = len(perceptions)
    centre = torch.as_tensor(
        0.5 * (body.rest_vertices.min(0) + body.rest_vertices.max(0)), dtype=torch.float32
    )
    height = float(np.ptp(body.rest_vertices[:, 2]))
    azimuths = np.arange(HYPOTHESES) * 2 * math.pi / HYPOTHESES
    rotations, translations = [], []
    for view in range(view_count):
        mask = perceptions[view].mask > 0.5
        rows = np.flatnonzero(mask.any(1))
        extent = (rows[-1] - rows[0] + 1) / max(mask.shape) if rows.size else 0.8
        distance = float(focal[view]) * height / max(extent, 0.05)
        for azimuth in azimuths:
            position = centre.numpy() + distance * np.array([math.sin(azimuth), -math.cos(azimuth), 0.0])
            viewmat = look_at(position, centre.numpy())
            rotations.append(viewmat[:3, :3])
            translations.append(viewmat[:3, 3])
    base = torch.as_tensor(np.array(rotations), dtype=torch.float32)
    translation = torch.as_tensor(np.array(translations), dtype=torch.float32).requires_grad_(True)
    rotvec = torch.zeros(len(base), 3, requires_grad=True)
    expand = lambda tensor: tensor.repeat_interleave(HYPOTHESES, 0)  # noqa: E731
    targets, weights, focals = expand(target_points), expand(target_weights), expand(focal)
    body_count = len(BODY_JOINTS) + len(BODY_SURFACE)
    weights = weights.clone()
    weights[:, body_count:] = 0.0  # the body alone decides the direction
    optimizer = torch.optim.Adam([{"params": [rotvec], "lr": 0.02}, {"params": [translation], "lr": 0.02}])
    for _ in range(150):
        optimizer.zero_grad()
        projected, _ = _project(rest_points, roma.rotvec_to_rotmat(rotvec) @ base, translation, focals)
        per_view = (weights * _robust(projected - targets, 0.05)).sum(1) / weights.sum(1).clamp_min(1)
        per_view.sum().backward()
        optimizer.step()
    with torch.no_grad():
        projected, _ = _project(rest_points, roma.rotvec_to_rotmat(rotvec) @ base, translation, focals)
        per_view = (weights * _robust(projected - targets, 0.05)).sum(1) / weights.sum(1).clamp_min(1)
        costs = per_view.reshape(view_count, HYPOTHESES).clone()
        final_rotations = (roma.rotvec_to_rotmat(rotvec) @ base).reshape(view_count, HYPOTHESES, 3, 3)
        final_translations = translation.reshape(view_count, HYPOTHESES, 3)
    front = np.cos(azimuths) > 0  # the camera on the face's side
    chosen_r, chosen_t = [], []
    for view, seen in enumerate(perceptions):
        allowed = np.ones(HYPOTHESES, bool)
        if seen.face is not None:
            allowed = front
        elif seen.pose[0, 3] < 0.3:
            allowed = ~front
        cost = costs[view].numpy().copy()
        cost[~allowed] = np.inf
        best = int(cost.argmin())
        logger.info("%s: camera from azimuth %.0f deg", seen.source, math.degrees(azimuths[best]))
        chosen_r.append(final_rotations[view, best])
        chosen_t.append(final_translations[view, best])
    return torch.stack(chosen_r), torch.stack(chosen_t)


def _use_sfm(sfm, perceptions, rotations, translations, log_focal, longest):
    """Cameras from structure-from-motion, carried onto the body-relative guesses by a similarity.

    SfM cameras are consistent with each other, the guesses independent but each roughly right.
    SfM is trusted only when most photos agree with it (a wrong SfM model, e.g. back views folded
    onto front ones by a repeating pattern, disagrees with many guesses); then its cameras and focal
    length replace the guesses of the photos that agree, and the others keep their guess.
    """
    import torch

    from .cameras import align_cameras, in_reference_frame

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
    if agreement > SFM_AGREEMENT_DEG or len(alignment.inliers) < max(
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


def _pose_on_rig(rig: Rig, output):
    """The fitted Anny pose as a Pose on the cached rig (the same conversion the rig test checks)."""
    from ..maths.deform import pose_from_world

    anny_world = output["bone_poses"][0].double().numpy()
    anny_rest = output["rest_bone_poses"][0].double().numpy()
    lift = np.eye(4)
    lift[:3, 3] = rig.body_parameters["lift"]
    skinning = lift @ anny_world @ np.linalg.inv(anny_rest) @ np.linalg.inv(lift)
    return pose_from_world(rig, skinning @ rig.rest_transforms.astype(np.float64))


def _views(perceptions, photos, rotations, translations, focals, longest, lift) -> list[View]:
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
