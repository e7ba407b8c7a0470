"""Anny as a `FittableBody`: its torch model, the fit's shape parameters and the points landmarks name."""

from __future__ import annotations

from typing import Any

import numpy as np
import roma
import torch

from ...avatar import ARKIT_EXPRESSIONS, FINGERS, Pose, Rig
from ...bodies.anny_body import anny_rig
from ...maths.deform import pose_from_world
from .body import FittedRig, PosedBody
from .targets import BODY_JOINTS, BODY_SURFACE, FACE_LANDMARKS

PHENOTYPE = ("gender", "age", "muscle", "weight", "height", "proportions")
NOSE_VERTEX = 5038  # on Anny's template
# Bones the photos cannot show, or that a person cannot turn on their own (the pelvis is one
# bone: its sides only place the hip joints, which the shape sets): they keep their rest rotation.
FROZEN_PREFIXES = ("root", "toe", "metacarpal", "eye", "pelvis")
# The axes the other bones turn about, in each bone's own frame (Y along the bone, X the hinge of
# knees, elbows, ankles and fingers; measured on the model). A person's leg is two bones and a foot,
# but Anny splits each long bone in two segments whose second only spreads a twist along it: a leg
# turns at the hip, bends at the knee (a straight knee cannot turn) and at the ankle, and the foot
# turns out or in, but a bend mid-thigh or mid-shin, a knee bent sideways or a foot rolled onto its
# edge is not how people stand. The forearm turns along its length (the hand's palm up or down).
# The fingers' middle and end joints only bend. Left free, the fit used those turns to follow
# noise in the landmarks and outlines that clothes make (a knee bent 11 degrees sideways and the
# shin 22 back below it, which moves no joint; or, the shin held straight, the feet rolled 40
# degrees to fill a shoe's outline): invisible on a skin-tight body, but loose trousers and skirts
# fitted on such legs were carried 2-4 cm off in every other pose.
TWIST, HINGE, HINGE_AND_TWIST = (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)
FOOT = (1.0, 0.0, 1.0)  # flexed at the ankle (X), turned in or out (Z), not rolled along its length
FIXED, FREE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
JOINT_AXES = (
    {
        "upperleg02": FIXED,
        "lowerleg01": HINGE,
        "lowerleg02": FIXED,
        "foot": FOOT,
        "upperarm02": TWIST,
        "lowerarm01": HINGE_AND_TWIST,
        "lowerarm02": TWIST,
    }
    | {f"finger{finger}-{phalanx}": HINGE for finger in range(2, 6) for phalanx in (2, 3)}
    | {"finger1-3": HINGE}
)
PHENOTYPE_PRIOR = 0.02  # weight of the phenotype's squared distance from the average body (0.5 each)
JAW_PRIOR = 0.02  # weight of jawOpen squared: the mouth stays shut unless the lips pull it open


class AnnyBody:
    """Anny's torch model with the fitter's parameters and the 3D points the landmarks name.

    The shape parameters are the phenotype's logits; jawOpen is fitted (as a logit) only when
    some photo shows the face (`face_seen`).
    """

    def __init__(self, model: Any, face_seen: bool) -> None:
        # The rotations are taken from the rest pose, the rig's, so that a bone held at zero stands
        # as on the rig (this changes `model` itself: give the fit a model of its own). Anny's own
        # zero is its reference pose, a few degrees off the rest (5.7 at the shoulders, up to 6
        # mid-thigh on some bodies: it depends on the phenotype).
        model.reference_bone_orientations = None
        self.model = model
        self.labels = list(model.bone_labels)
        self.joint_count = len(self.labels)
        with torch.no_grad():
            rest = model(pose_parameterization="local-bone-world")
        vertices = rest["rest_vertices"][0].numpy()
        frames = rest["rest_bone_poses"][0].numpy()
        self.rest_vertices = vertices
        self.triangles = model.faces.numpy().astype(np.int64)
        self.free = np.array([joint_axes(name) for name in self.labels], np.float32)
        self.fingers = np.array([name.startswith("finger") for name in self.labels])
        # Fingertips: the last phalanx's tail, a fixed offset in its bone frame (the last phalanx
        # taken as 0.8 of the middle one's length, along the middle one's direction).
        self.tip_offsets = {}
        for finger in FINGERS:
            for side in ("L", "R"):
                last = self.labels.index(f"{finger}-3.{side}")
                middle = self.labels.index(f"{finger}-2.{side}")
                length = np.linalg.norm(frames[last, :3, 3] - frames[middle, :3, 3])
                direction = frames[last, :3, 3] - frames[middle, :3, 3]
                local = np.linalg.inv(frames[last, :3, :3]) @ (direction / max(length, 1e-6))
                self.tip_offsets[(finger, side)] = (last, local * 0.8 * length)
        self.surface = surface_points(vertices, self.labels, frames, model)
        self.shape = torch.zeros(len(PHENOTYPE), requires_grad=True)  # phenotype logits
        # jawOpen starts at sigmoid(-4), about 0.02: the mouth shut.
        self.jaw_logit = torch.full((1,), -4.0, requires_grad=face_seen)
        self.extra = [self.jaw_logit]

    def index(self, name: str) -> int:
        return self.labels.index(name)

    def posed(self, rotvecs: torch.Tensor) -> PosedBody:
        """The body for rotation vectors [J, 3] (frozen bones zeroed) and the current phenotype."""
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
        return PosedBody(output["vertices"][0].float(), self._points(output), output)

    def _points(self, output: dict[str, torch.Tensor]) -> torch.Tensor:
        """[P, 3] the body's points in the landmarks' order (see `targets.LandmarkTargets`)."""
        frames = output["bone_poses"][0].float()
        vertices = output["vertices"][0].float()
        heads = frames[:, :3, 3]
        parts = [heads[[self.index(name) for name in BODY_JOINTS.values()]]]
        parts.append(vertices[[self.surface[name] for name in BODY_SURFACE]])
        for side in ("L", "R"):
            hand = [heads[self.index(f"wrist.{side}")]]
            for finger in FINGERS:
                hand += [heads[self.index(f"{finger}-{phalanx}.{side}")] for phalanx in (1, 2, 3)]
                last, offset = self.tip_offsets[(finger, side)]
                hand.append(frames[last, :3, :3] @ torch.as_tensor(offset, dtype=frames.dtype) + heads[last])
            parts.append(torch.stack(hand))
        parts.append(vertices[list(FACE_LANDMARKS.values())])
        return torch.cat(parts)

    def shape_prior(self) -> torch.Tensor:
        return ((torch.sigmoid(self.shape) - 0.5) ** 2).sum() * PHENOTYPE_PRIOR

    def face_prior(self) -> torch.Tensor:
        return JAW_PRIOR * torch.sigmoid(self.jaw_logit).sum() ** 2

    def result(self, posed: PosedBody) -> FittedRig:
        """The cached Anny rig for the fitted phenotype, the fitted pose on it and jawOpen."""
        with torch.no_grad():
            phenotype = {
                name: float(value) for name, value in zip(PHENOTYPE, torch.sigmoid(self.shape), strict=True)
            }
            jaw = float(torch.sigmoid(self.jaw_logit))
        rig = anny_rig(phenotype)
        pose = pose_on_rig(rig, posed.output)
        expressions = np.zeros(len(ARKIT_EXPRESSIONS), np.float32)
        # jawOpen under 0.05, near its shut start, is no evidence of an open mouth.
        expressions[list(ARKIT_EXPRESSIONS).index("jawOpen")] = jaw if jaw > 0.05 else 0.0
        lift = np.asarray(rig.body_parameters["lift"], np.float64)
        report = {
            "phenotype": {name: round(value, 3) for name, value in phenotype.items()},
            "jawOpen": round(jaw, 3),
        }
        return FittedRig(rig, pose, expressions, lift, report)


def joint_axes(label: str) -> tuple[float, float, float]:
    """Which of an Anny bone's rotation-vector components the fit may move (1) or holds at rest (0)."""
    if label.startswith(FROZEN_PREFIXES):
        return FIXED
    return JOINT_AXES.get(label.split(".")[0], FREE)


def surface_points(vertices: np.ndarray, labels: list[str], frames: np.ndarray, model: Any) -> dict[str, int]:
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


def pose_on_rig(rig: Rig, output: dict[str, torch.Tensor]) -> Pose:
    """The fitted Anny pose as a Pose on the cached rig (the same conversion the rig test checks)."""
    anny_world = output["bone_poses"][0].double().numpy()
    anny_rest = output["rest_bone_poses"][0].double().numpy()
    lift = np.eye(4)
    lift[:3, 3] = rig.body_parameters["lift"]
    skinning = lift @ anny_world @ np.linalg.inv(anny_rest) @ np.linalg.inv(lift)
    return pose_from_world(rig, skinning @ rig.rest_transforms.astype(np.float64))
