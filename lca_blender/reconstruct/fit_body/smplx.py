"""SMPL-X as a `FittableBody`: the user's SMPL-X model in torch, in the project's frame.

The forward model is SMPL-X's own maths on the arrays `bodies.smplx_body` converts (the same ones
`smplx_rig` builds the Rig from), turned into the project's frame (Z up, facing -Y):

- shape: v = template + shapedirs[:, :, :B] @ betas (B = 10), joints = J_regressor @ v;
- pose: a rotation vector per joint (55: pelvis = the global orientation, body, jaw, eyes,
  fifteen finger joints per hand), each about the world axes as carried by its parent (SMPL-X's
  rest orientations are all the identity), composed down the kinematic tree;
- linear blend skinning of v with the model's weights. Pose correctives (posedirs) are left out,
  as in the Rig; the expression space is not fitted (the photos' two inner-lip points are what the
  fit sees of the face, and the jaw joint explains them), so the avatar's expressions start at 0.

The landmarks name SMPL-X joints (shoulders, elbows, wrists, hips, knees, ankles, eyes, the
wrists and three joints per finger), vertices of the SMPL-X mesh (nose, ears, heels, big toes,
fingertips: the vertex ids the `smplx` package publishes for its extra keypoints), and, for the
inner lips, two of the 51 facial landmarks embedded in the model file (`lip_top` and
`lip_bottom`, the inner lips' middles of the 68-point face layout).

The result is `smplx_rig` for the fitted betas and `smplx_pose_to_pose` for the fitted rotations,
so the avatar's rig is the one `lca-avatar new --smplx` makes, and nothing downstream changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import roma
import torch

from ...bodies.smplx_body import (
    SMPLX_JOINT_NAMES,
    SMPLX_TO_BLENDER,
    smplx_arrays,
    smplx_pose_to_pose,
    smplx_rig,
)
from ...errors import BodyModelError
from .body import FittedRig, PosedBody
from .targets import BODY_JOINTS, BODY_SURFACE

SHAPE_COUNT = 10  # betas fitted: the first ten, the ones every SMPL-X release has
BETA_PRIOR = 0.005  # weight of sum(betas^2): betas are unit Gaussians in SMPL-X's shape space

# MediaPipe Pose landmarks (targets.BODY_JOINTS' keys) -> SMPL-X joints.
SMPLX_BODY_JOINTS = {
    2: "left_eye_smplhf", 5: "right_eye_smplhf", 11: "left_shoulder", 12: "right_shoulder",
    13: "left_elbow", 14: "right_elbow", 15: "left_wrist", 16: "right_wrist", 23: "left_hip",
    24: "right_hip", 25: "left_knee", 26: "right_knee", 27: "left_ankle", 28: "right_ankle",
}  # fmt: skip
SMPLX_FINGERS = ("thumb", "index", "middle", "ring", "pinky")  # MediaPipe Hands' order
SMPLX_VERTICES = {
    "nose": 9120, "ear.L": 6, "ear.R": 616, "heel.L": 8846, "heel.R": 8635, "toe.L": 5770,
    "toe.R": 8463, "thumb.L": 5361, "index.L": 4933, "middle.L": 5058, "ring.L": 5169,
    "pinky.L": 5286, "thumb.R": 8079, "index.R": 7669, "middle.R": 7794, "ring.R": 7905,
    "pinky.R": 8022,
}  # fmt: skip
"""Vertices of SMPL-X's 10,475-vertex mesh for MediaPipe's surface landmarks and the fingertips
(`smplx.vertex_ids.vertex_ids["smplx"]`: nose, lear/rear, LHeel/RHeel, LBigToe/RBigToe, l/r
fingertips); .L is the person's left."""
LIP_LANDMARKS = (45, 49)
"""MediaPipe Face Mesh's inner lips (13, 14; targets.FACE_LANDMARKS) among the model file's 51
facial landmarks: `lip_top` and `lip_bottom` (smplx.joint_names.JOINT_NAMES[76:127])."""
# Joints the photos cannot show: the eyeballs, and the toes (SMPL-X's "foot" joints).
FROZEN_JOINTS = ("left_eye_smplhf", "right_eye_smplhf", "left_foot", "right_foot")


class SmplxBody:
    """SMPL-X in torch with the fitter's shape parameters (betas) and the points landmarks name.

    `vertices` maps the names of `SMPLX_VERTICES` to vertex ids; a mesh other than SMPL-X's own
    (tests' small synthetic models) passes its own. Raises BodyModelError when the model file is
    unusable, its mesh lacks those vertices or it has no facial landmark embedding (every official
    release has one: the `smplx` package reads it unconditionally).
    """

    def __init__(
        self,
        model_path: str | Path,
        cache_dir: str | Path,
        face_seen: bool,
        vertices: dict[str, int] | None = None,
    ) -> None:
        vertices = SMPLX_VERTICES if vertices is None else vertices
        arrays, _ = smplx_arrays(model_path, cache_dir)
        self.model_path, self.cache_dir = Path(model_path), Path(cache_dir)
        vertex_count = arrays.template.shape[0]
        if set(vertices) != set(SMPLX_VERTICES) or max(vertices.values()) >= vertex_count:
            raise BodyModelError(
                f"'{model_path}' has a {vertex_count}-vertex mesh, not SMPL-X's 10,475-vertex one, so "
                "the fit cannot find its nose, ears, heels, toes and fingertips. Use the official "
                "SMPL-X .npz release."
            )
        if arrays.landmark_corners.shape[0] <= max(LIP_LANDMARKS):
            raise BodyModelError(
                f"'{model_path}' has no facial landmarks (lmk_faces_idx, lmk_bary_coords), which the "
                "fit needs for the lips. Use the official SMPL-X .npz release."
            )
        turn = SMPLX_TO_BLENDER
        shape_count = min(SHAPE_COUNT, arrays.shape_directions.shape[2])
        self.template = torch.as_tensor(arrays.template @ turn.T, dtype=torch.float32)  # [V, 3]
        self.shape_directions = torch.as_tensor(  # [V, 3, B]
            np.einsum("vcb,dc->vdb", arrays.shape_directions[:, :, :shape_count], turn), dtype=torch.float32
        )
        self.joint_regressor = torch.as_tensor(arrays.joint_regressor, dtype=torch.float32)  # [J, V]
        self.skin_weights = torch.as_tensor(arrays.skin_weights, dtype=torch.float32)  # [V, J]
        # Joints grouped by depth in the tree: per level, its joints and their parents' positions
        # within the level above; `_joint_order` puts the concatenated levels back in joint order.
        parents = arrays.parents.astype(np.int64)
        depth = np.zeros(len(parents), np.int64)
        for joint in range(1, len(parents)):
            depth[joint] = depth[parents[joint]] + 1
        by_level = [np.flatnonzero(depth == level) for level in range(depth.max() + 1)]
        self._levels = []
        for above, level in zip(by_level, by_level[1:], strict=False):
            position_above = {joint: index for index, joint in enumerate(above)}
            parent_rows = [position_above[parents[joint]] for joint in level]
            self._levels.append((torch.as_tensor(level), torch.as_tensor(parent_rows)))
        self._parent_index = torch.as_tensor(np.maximum(parents, 0))
        self._joint_order = torch.as_tensor(np.argsort(np.concatenate(by_level)))
        self.joint_count = len(SMPLX_JOINT_NAMES)
        self.rest_vertices = self.template.numpy().copy()
        self.triangles = arrays.triangles.astype(np.int64)

        names = list(SMPLX_JOINT_NAMES)
        free = np.array([name not in FROZEN_JOINTS for name in names])
        free[names.index("jaw")] = face_seen  # only the face's inner lips show the jaw
        self.free = np.repeat(free[:, None], 3, axis=1).astype(np.float32)
        self.fingers = np.array([name.split("_")[-1].rstrip("123") in SMPLX_FINGERS for name in names])

        hands = []
        for side, prefix in (("L", "left"), ("R", "right")):
            hands.append(("joint", names.index(f"{prefix}_wrist")))
            for finger in SMPLX_FINGERS:
                hands += [("joint", names.index(f"{prefix}_{finger}{phalanx}")) for phalanx in (1, 2, 3)]
                hands.append(("vertex", vertices[f"{finger}.{side}"]))
        self._body_joints = torch.as_tensor([names.index(SMPLX_BODY_JOINTS[index]) for index in BODY_JOINTS])
        self._surface = torch.as_tensor([vertices[name] for name in BODY_SURFACE])
        self._hands = hands
        lips = list(LIP_LANDMARKS)
        self._lip_corners = torch.as_tensor(arrays.landmark_corners[lips], dtype=torch.long)  # [2, 3]
        self._lip_weights = torch.as_tensor(arrays.landmark_barycentrics[lips], dtype=torch.float32)
        self.shape = torch.zeros(shape_count, requires_grad=True)  # betas
        self.extra: list = []

    def posed(self, rotvecs: torch.Tensor) -> PosedBody:
        """The body for rotation vectors [J, 3] (frozen joints zeroed) and the current betas."""
        shaped = self.template + self.shape_directions @ self.shape  # [V, 3]
        joints = self.joint_regressor @ shaped  # [J, 3]
        local = roma.rotvec_to_rotmat(rotvecs)  # [J, 3, 3]
        # Down the tree a level at a time: every parent of a level's joints is in the level above.
        rotations, positions = [local[:1]], [joints[:1]]
        for level, parents in self._levels:
            above_rotations, above_positions = rotations[-1][parents], positions[-1][parents]
            steps = joints[level] - joints[self._parent_index[level]]
            rotations.append(above_rotations @ local[level])
            positions.append(torch.einsum("jab,jb->ja", above_rotations, steps) + above_positions)
        world_rotations = torch.cat(rotations)[self._joint_order]
        world_positions = torch.cat(positions)[self._joint_order]
        # Skinning transforms take rest points to posed ones: x -> R_j (x - J_j) + p_j.
        offsets = world_positions - torch.einsum("jab,jb->ja", world_rotations, joints)
        blended = torch.einsum("vj,jab->vab", self.skin_weights, world_rotations)
        vertices = torch.einsum("vab,vb->va", blended, shaped) + self.skin_weights @ offsets
        return PosedBody(vertices, self._points(world_positions, vertices), rotvecs)

    def _points(self, joints: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
        """[P, 3] in the landmarks' order (`targets.LandmarkTargets`): body joints, surface points,
        2 x 21 hand points, inner lips."""
        hand = torch.stack(
            [joints[index] if kind == "joint" else vertices[index] for kind, index in self._hands]
        )
        lips = (vertices[self._lip_corners] * self._lip_weights[:, :, None]).sum(1)
        return torch.cat([joints[self._body_joints], vertices[self._surface], hand, lips])

    def shape_prior(self) -> torch.Tensor:
        return (self.shape**2).sum() * BETA_PRIOR

    def face_prior(self) -> float:
        return 0.0  # the jaw is a joint: the pose prior holds it

    def result(self, posed: PosedBody) -> FittedRig:
        """The rig for the fitted betas and the fitted rotations as a Pose on it."""
        betas = self.shape.detach().double().numpy()
        rig = smplx_rig(self.model_path, self.cache_dir, betas=betas)
        # Rotation vectors about our axes are A r in SMPL-X's (A = SMPLX_TO_BLENDER): back by A^T.
        axis_angles = posed.output.detach().double().numpy() @ SMPLX_TO_BLENDER
        pose = smplx_pose_to_pose(
            rig,
            global_orient=axis_angles[0],
            body_pose=axis_angles[1:22],
            jaw_pose=axis_angles[22],
            leye_pose=axis_angles[23],
            reye_pose=axis_angles[24],
            left_hand_pose=axis_angles[25:40],
            right_hand_pose=axis_angles[40:55],
        )
        report = {
            "betas": [round(float(value), 3) for value in betas],
            "jaw_deg": round(float(np.degrees(np.linalg.norm(axis_angles[22]))), 1),
        }
        expressions = np.zeros(len(rig.expression_names), np.float32)
        return FittedRig(rig, pose, expressions, np.zeros(3), report)
