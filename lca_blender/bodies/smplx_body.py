"""SMPL-X -> Rig: a pickle-free conversion of the user's model file, then shaping and rigging.

SMPL-X model files come from its authors after registration (non-commercial licence). Only the
`.npz` release is accepted, opened with `allow_pickle=False`, and only its numeric arrays are read;
the `.pkl` release would need unpickling, which this project never does. The arrays are checked
and copied once into a compact cache file named after the model file's sha256, so later rigs skip
the large source file's parsing.

Frames: SMPL-X works in metres, Y up, facing +Z. The project works in metres, Z up, facing -Y
(Blender's front view looks at the face). Every point and rotation axis goes through the fixed
rotation `SMPLX_TO_BLENDER`, (x, y, z) -> (x, -z, y), a quarter turn about X.

Nothing here needs torch or the `smplx` package: the conversion is plain numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..avatar import Pose, Rig, shape_mismatch
from ..errors import AvatarWriteError, BodyModelError, PoseError
from ..formats.amass import SMPLX_JOINT_NAMES  # the 55 skinned joints, in the model's order
from ..formats.atomic import atomic_output
from ..maths.rotations import axis_angle_to_quaternion, bone_matrix, bone_roll_towards

logger = logging.getLogger(__name__)

SMPLX_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation taking SMPL-X coordinates (Y up, facing +Z) to ours (Z up, facing -Y)."""

MAX_INFLUENCES = 8
"""Most joints kept per vertex; SMPL-X's dense weights have far fewer non-zero entries."""

_JOINT_COUNT = len(SMPLX_JOINT_NAMES)
_BODY_JOINTS = 21
_HAND_JOINTS = 15
# smplx's rule for splitting `shapedirs`: the 400-column releases hold 300 shape then 100
# expression components; older ones hold 10 shape then 10 expression components.
_FULL_SHAPE_SPACE, _FULL_EXPRESSION_SPACE = 300, 100
_SMALL_SHAPE_SPACE, _SMALL_EXPRESSION_SPACE = 10, 10

# Joints with several children whose bone follows one child rather than their mean: the pelvis and
# the chest point up the spine (the hips and collars hang off to the sides), the wrists point at the
# middle finger (the thumb would skew the mean). None: the bone continues from its parent like a
# leaf's; the head's children (jaw, eyes) sit in front of the skull, but its bone points up.
_MAIN_CHILD: dict[str, str | None] = {
    "pelvis": "spine1",
    "spine3": "neck",
    "head": None,
    "left_wrist": "left_middle1",
    "right_wrist": "right_middle1",
}
_MIN_BONE_LENGTH = 0.01  # metres
_LEAF_LENGTH_RATIO = 0.5  # a leaf bone's length, relative to the distance from its parent's head

_CACHE_FORMAT = "lca-smplx-cache"
_CACHE_VERSION = 2  # 2: the facial landmark embedding


@dataclass(frozen=True)
class SmplxArrays:
    """The numbers of an SMPL-X model that the project uses, in SMPL-X's own frame."""

    template: np.ndarray  # [V, 3] float32 mean template vertices
    shape_directions: np.ndarray  # [V, 3, S] float32 shape blendshapes (betas)
    expression_directions: np.ndarray  # [V, 3, E] float32 expression blendshapes (PCA)
    joint_regressor: np.ndarray  # [J, V] float32 joints as weighted sums of vertices
    skin_weights: np.ndarray  # [V, J] float32 dense linear-blend-skinning weights
    parents: np.ndarray  # [J] int32, -1 for the root
    triangles: np.ndarray  # [F, 3] int32
    # The 51 static facial landmarks (the 68-point face layout without its 17 contour points) as
    # points on triangles; [0, 3] when the model file has no landmark embedding.
    landmark_corners: np.ndarray  # [L, 3] int32 vertices of each landmark's triangle
    landmark_barycentrics: np.ndarray  # [L, 3] float32


def convert_smplx_model(model_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Check an SMPL-X `.npz` model file and copy what the project needs into `cache_dir`.

    Returns the converted file: an `.npz` of plain numeric arrays plus a JSON `metadata` entry
    (stored as UTF-8 bytes) recording the source file's sha256, written atomically. A later call
    with the same model file (same sha256) returns the existing conversion without reading the
    model's arrays again; a converted file that is stale or unreadable is rebuilt.

    Raises BodyModelError when the model file is missing, is a `.pkl`, or has missing, misshapen,
    non-numeric or non-finite arrays.
    """
    return _converted_model(Path(model_path), Path(cache_dir))[0]


def smplx_arrays(model_path: str | os.PathLike, cache_dir: str | os.PathLike) -> tuple[SmplxArrays, str]:
    """The model's arrays (in SMPL-X's frame, converted as `convert_smplx_model` does) and the
    model file's sha256. Raises BodyModelError for an unusable model file."""
    _, model, sha256 = _converted_model(Path(model_path), Path(cache_dir))
    return model, sha256


def _converted_model(source: Path, folder: Path) -> tuple[Path, SmplxArrays, str]:
    """The converted file, its arrays and the source's sha256, converting only when needed."""
    _check_source_path(source)
    sha256 = _file_sha256(source)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AvatarWriteError(
            f"Cannot create the body-model cache folder '{folder}': {error.strerror or error}."
        ) from None
    converted = folder / f"smplx-{sha256[:16]}.npz"
    if converted.exists():
        try:
            return converted, _read_converted(converted, sha256), sha256
        except BodyModelError as error:
            logger.info("Rebuilding the SMPL-X cache file: %s", error)
    model = _read_model_file(source)
    metadata = {
        "format": _CACHE_FORMAT,
        "version": _CACHE_VERSION,
        "source_name": source.name,
        "source_sha256": sha256,
    }
    arrays = {name: getattr(model, name) for name in SmplxArrays.__dataclass_fields__}
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    with atomic_output(converted) as temporary, open(temporary, "wb") as handle:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        np.savez(handle, **arrays)
    logger.info("Converted SMPL-X model '%s' into '%s'.", source, converted)
    return converted, model, sha256


def smplx_rig(
    model_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    betas: np.ndarray | None = None,
    expression_count: int = 10,
) -> Rig:
    """The SMPL-X body shaped by `betas`, as a Rig in the project's frame (Z up, facing -Y).

    - vertices: v_template + shapedirs[:, :, :B] @ betas, turned by `SMPLX_TO_BLENDER`;
      joints: J_regressor @ those vertices (before turning, which commutes).
    - betas: [B] shape coefficients, B up to the model's shape components (300 for the 400-column
      releases, 10 for the older ones); None = 10 zeros, the mean shape.
    - joints: the 55 skinned SMPL-X joints (`SMPLX_JOINT_NAMES`), parents from kintree_table.
      Bones run from each joint to the mean of its children's joints, except that the pelvis and
      chest follow the spine, the wrists the middle finger, and leaves and the head continue the
      direction from their parent at half that distance (at least 1 cm). Each bone's X axis is as
      close to world X as it can be; bones that run along X (the arms, hands and fingers of the
      T-pose) take X along +Y on the left and -Y on the right instead, so a positive X rotation
      lowers an arm and curls a finger on both sides.
    - skin weights: the (up to 8) largest non-zero weights per vertex, renormalised to sum 1.
    - expressions: the first `expression_count` expression components, named
      `smplx_expression_00`, ... SMPL-X's expression space is a PCA basis, not ARKit's named
      shapes: weights are the model's `expression` coefficients. SMPL-X regresses its joints from
      the mesh with the expression applied; the Rig's joints stay where the neutral face puts
      them (shape keys never move bones). The two agree exactly while the expression leaves the
      vertices the joint regressor reads alone; otherwise SMPL-X's jaw and eye joints shift with
      the expression and a posed jaw or eye differs slightly.
    - Pose correctives (posedirs) are not part of the Rig, which has no slot for them yet, so a
      posed rig matches SMPL-X with its pose blendshapes switched off.

    Pose it with `smplx_pose_to_pose`. Raises BodyModelError for an unusable model file or
    parameters out of the model's range.
    """
    _, model, sha256 = _converted_model(Path(model_path), Path(cache_dir))
    shape_count = model.shape_directions.shape[2]
    betas = np.zeros(10) if betas is None else np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.shape[0] > shape_count or not np.isfinite(betas).all():
        raise BodyModelError(
            f"betas must be a list of at most {shape_count} finite numbers for this SMPL-X model, "
            f"found shape {betas.shape}."
        )
    expression_space = model.expression_directions.shape[2]
    if not 0 <= expression_count <= expression_space:
        raise BodyModelError(
            f"This SMPL-X model has {expression_space} expression components; "
            f"{expression_count} were asked for."
        )

    shaped = model.template + model.shape_directions[:, :, : betas.shape[0]] @ betas
    joints = model.joint_regressor.astype(np.float64) @ shaped
    heads = joints @ SMPLX_TO_BLENDER.T
    tails = _bone_tails(heads, model.parents)
    rolls = bone_roll_towards(heads, tails, _roll_references(heads, tails))
    rest_transforms = bone_matrix(heads, tails, rolls)
    expression_deltas = np.einsum(
        "vce,dc->evd", model.expression_directions[:, :, :expression_count], SMPLX_TO_BLENDER
    )
    skin_indices, skin_weights = _sparse_skin_weights(model.skin_weights)
    return Rig(
        joint_names=list(SMPLX_JOINT_NAMES),
        joint_parents=model.parents.astype(np.int32),
        rest_transforms=rest_transforms.astype(np.float32),
        bone_tails=tails.astype(np.float32),
        vertices=(shaped @ SMPLX_TO_BLENDER.T).astype(np.float32),
        triangles=model.triangles.astype(np.int32),
        skin_indices=skin_indices,
        skin_weights=skin_weights,
        expression_names=[f"smplx_expression_{index:02d}" for index in range(expression_count)],
        expression_deltas=np.ascontiguousarray(expression_deltas, np.float32),
        body_model="smplx",
        body_parameters={"betas": betas.tolist(), "source_sha256": sha256},
    )


def smplx_pose_to_pose(
    rig: Rig,
    global_orient: np.ndarray,
    body_pose: np.ndarray,
    jaw_pose: np.ndarray | None = None,
    left_hand_pose: np.ndarray | None = None,
    right_hand_pose: np.ndarray | None = None,
    transl: np.ndarray | None = None,
    leye_pose: np.ndarray | None = None,
    reye_pose: np.ndarray | None = None,
) -> Pose:
    """One frame of SMPL-X pose parameters -> a Pose of a rig made by `smplx_rig`.

    Arguments are SMPL-X's axis-angles (radians), as the `smplx` package takes them:
    global_orient [3], body_pose [21, 3] or [63], jaw_pose [3], left/right_hand_pose [15, 3] or
    [45] (full finger rotations, use_pca=False, relative to the flat hand: data made with
    flat_hand_mean=False needs the model's hands_mean added first), transl [3] metres,
    leye/reye_pose [3]. None stands for zeros.

    SMPL-X's rest orientations are all the identity, so each joint's axis-angle R_c turns it
    about SMPL-X's (Y-up) world axes as carried by its parent; a Rig turns each joint in its rest
    bone frame B_c. Both
    give the same skinning when B_c L_c B_c^T = A R_c A^T (A = `SMPLX_TO_BLENDER`), that is
    L_c = B_c^T A R_c A^T B_c. Conjugating a rotation turns its axis, so L_c is the axis-angle
    B_c^T A r_c. The root translation is A transl.
    """
    if rig.joint_names != list(SMPLX_JOINT_NAMES):
        raise PoseError("SMPL-X poses apply only to rigs made from an SMPL-X model.")
    parts = (
        ("global_orient", global_orient, 1),
        ("body_pose", body_pose, _BODY_JOINTS),
        ("jaw_pose", jaw_pose, 1),
        ("leye_pose", leye_pose, 1),
        ("reye_pose", reye_pose, 1),
        ("left_hand_pose", left_hand_pose, _HAND_JOINTS),
        ("right_hand_pose", right_hand_pose, _HAND_JOINTS),
    )  # SMPL-X's full-pose order, which is also its joint order
    axis_angles = np.concatenate([_vectors(name, value, count) for name, value, count in parts])
    bone_rotations = rig.rest_transforms[:, :3, :3].astype(np.float64)
    local_axis_angles = np.einsum("jki,kl,jl->ji", bone_rotations, SMPLX_TO_BLENDER, axis_angles)
    translation = _vectors("transl", transl, 1)[0]
    return Pose(
        rotations=axis_angle_to_quaternion(local_axis_angles).astype(np.float32),
        translation=(SMPLX_TO_BLENDER @ translation).astype(np.float32),
    )


def _vectors(name: str, value: np.ndarray | None, count: int) -> np.ndarray:
    """[count, 3] float64 from an SMPL-X parameter given flat or per joint; None = zeros."""
    if value is None:
        return np.zeros((count, 3))
    array = np.asarray(value, np.float64)
    if array.size != 3 * count or not np.isfinite(array).all():
        raise PoseError(f"SMPL-X '{name}' must hold {3 * count} finite numbers, found shape {array.shape}.")
    return array.reshape(count, 3)


def _check_source_path(source: Path) -> None:
    if source.suffix.lower() == ".pkl":
        raise BodyModelError(
            f"'{source}' is the pickle release of SMPL-X, which this add-on does not open "
            "(loading pickles can run code). Download the .npz version of the same model from "
            "the SMPL-X website and choose that file."
        )
    if source.suffix.lower() != ".npz":
        raise BodyModelError(f"'{source}' is not an SMPL-X model file: expected an .npz file.")
    if not source.is_file():
        raise BodyModelError(f"The SMPL-X model file '{source}' does not exist.")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise BodyModelError(f"Cannot read '{path}': {error.strerror or error}.") from None
    return digest.hexdigest()


def _open_npz(path: Path, what: str) -> np.lib.npyio.NpzFile:
    """np.load without pickles, with every failure turned into a BodyModelError."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise BodyModelError(f"'{path}' is not a readable {what}: {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BodyModelError(f"'{path}' is not a readable {what}: it holds a single array.")
    return archive


def _read_array(archive: np.lib.npyio.NpzFile, path: Path, key: str, kinds: str, shape: tuple) -> np.ndarray:
    """archive[key], checked: dtype kind in `kinds`, `shape` (None = any size), finite."""
    if key not in archive.files:
        raise BodyModelError(f"'{path}' has no '{key}' array: it is not a complete SMPL-X model.")
    try:
        array = archive[key]
    except ValueError:
        raise BodyModelError(
            f"'{path}': '{key}' holds Python objects rather than numbers, which this add-on does "
            "not load. Use the official SMPL-X .npz release."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise BodyModelError(f"'{path}': '{key}' cannot be read ({error}).") from None
    if array.dtype.kind not in kinds:
        raise BodyModelError(f"'{path}': '{key}' must be numeric, found {array.dtype}.")
    wanted = shape_mismatch(array, shape)
    if wanted:
        raise BodyModelError(f"'{path}': '{key}' must have shape {wanted}, found {array.shape}.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BodyModelError(f"'{path}': '{key}' contains NaN or infinite values.")
    return array


def _read_model_file(path: Path) -> SmplxArrays:
    """Read and check the arrays of an SMPL-X .npz release; never unpickles."""
    with _open_npz(path, "SMPL-X .npz model") as archive:
        regressor = _read_array(archive, path, "J_regressor", "f", (None, None))
        if regressor.shape[0] != _JOINT_COUNT:
            raise BodyModelError(
                f"'{path}' has {regressor.shape[0]} joints where SMPL-X has {_JOINT_COUNT}: "
                "it is not an SMPL-X model (SMPL has 24 joints, SMPL+H 52)."
            )
        vertex_count = regressor.shape[1]
        template = _read_array(archive, path, "v_template", "f", (vertex_count, 3))
        shapedirs = _read_array(archive, path, "shapedirs", "f", (vertex_count, 3, None))
        weights = _read_array(archive, path, "weights", "f", (vertex_count, _JOINT_COUNT))
        kintree = _read_array(archive, path, "kintree_table", "iu", (2, _JOINT_COUNT))
        faces = _read_array(archive, path, "f", "iu", (None, 3))
        landmark_faces = np.zeros(0, np.int64)
        landmark_barycentrics = np.zeros((0, 3), np.float32)
        if {"lmk_faces_idx", "lmk_bary_coords"} <= set(archive.files):
            landmark_faces = _read_array(archive, path, "lmk_faces_idx", "iu", (None,))
            landmark_barycentrics = _read_array(
                archive, path, "lmk_bary_coords", "f", (landmark_faces.shape[0], 3)
            )

    if shapedirs.shape[2] >= _FULL_SHAPE_SPACE + _FULL_EXPRESSION_SPACE:
        shape_count, expression_count = _FULL_SHAPE_SPACE, _FULL_EXPRESSION_SPACE
    elif shapedirs.shape[2] >= _SMALL_SHAPE_SPACE + _SMALL_EXPRESSION_SPACE:
        shape_count, expression_count = _SMALL_SHAPE_SPACE, _SMALL_EXPRESSION_SPACE
    else:
        raise BodyModelError(
            f"'{path}': 'shapedirs' has {shapedirs.shape[2]} components; SMPL-X models have "
            "20 (10 shape + 10 expression) or 400 (300 shape + 100 expression)."
        )
    # The root's parent is stored as -1 or as its unsigned wrap-around (4294967295).
    parents = kintree[0].astype(np.int64)
    parents[0] = -1
    if not (parents[1:] < np.arange(1, _JOINT_COUNT)).all() or parents[1:].min() < 0:
        raise BodyModelError(f"'{path}': 'kintree_table' does not describe SMPL-X's joint tree.")
    if faces.size and faces.max() >= vertex_count:
        raise BodyModelError(f"'{path}': 'f' refers to vertices the model does not have.")
    if landmark_faces.size and landmark_faces.max() >= faces.shape[0]:
        raise BodyModelError(f"'{path}': 'lmk_faces_idx' refers to triangles the model does not have.")
    if weights.min() < -1e-4 or (weights.sum(axis=1) <= 1e-6).any():
        raise BodyModelError(
            f"'{path}': 'weights' must be non-negative with every vertex bound to some joint."
        )
    return SmplxArrays(
        template=template.astype(np.float32),
        shape_directions=shapedirs[:, :, :shape_count].astype(np.float32),
        expression_directions=shapedirs[:, :, shape_count : shape_count + expression_count].astype(
            np.float32
        ),
        joint_regressor=regressor.astype(np.float32),
        skin_weights=np.clip(weights, 0.0, None).astype(np.float32),
        parents=parents.astype(np.int32),
        triangles=faces.astype(np.int32),
        landmark_corners=faces[landmark_faces].astype(np.int32).reshape(-1, 3),
        landmark_barycentrics=landmark_barycentrics.astype(np.float32),
    )


def _read_converted(path: Path, expected_sha256: str) -> SmplxArrays:
    """The arrays of a file converted from the model with `expected_sha256`; BodyModelError if
    it is unreadable, stale or from another model."""
    with _open_npz(path, "SMPL-X cache file") as archive:
        metadata_bytes = _read_array(archive, path, "metadata", "u", (None,))
        try:
            metadata = json.loads(metadata_bytes.tobytes().decode("utf-8"))
            current = (
                metadata["format"] == _CACHE_FORMAT
                and metadata["version"] == _CACHE_VERSION
                and metadata["source_sha256"] == expected_sha256
            )
        except (ValueError, KeyError, TypeError):
            raise BodyModelError(f"'{path}' has unreadable metadata.") from None
        if not current:
            raise BodyModelError(f"'{path}' was made from another model or by another version.")
        regressor = _read_array(archive, path, "joint_regressor", "f", (_JOINT_COUNT, None))
        vertex_count = regressor.shape[1]
        corners = _read_array(archive, path, "landmark_corners", "i", (None, 3))
        if corners.size and corners.max() >= vertex_count:
            raise BodyModelError(f"'{path}': 'landmark_corners' refers to vertices the model does not have.")
        return SmplxArrays(
            template=_read_array(archive, path, "template", "f", (vertex_count, 3)),
            shape_directions=_read_array(archive, path, "shape_directions", "f", (vertex_count, 3, None)),
            expression_directions=_read_array(
                archive, path, "expression_directions", "f", (vertex_count, 3, None)
            ),
            joint_regressor=regressor,
            skin_weights=_read_array(archive, path, "skin_weights", "f", (vertex_count, _JOINT_COUNT)),
            parents=_read_array(archive, path, "parents", "i", (_JOINT_COUNT,)),
            triangles=_read_array(archive, path, "triangles", "i", (None, 3)),
            landmark_corners=corners,
            landmark_barycentrics=_read_array(
                archive, path, "landmark_barycentrics", "f", (corners.shape[0], 3)
            ),
        )


def _sparse_skin_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, J] dense weights -> [V, K] joint indices and weights: the K largest, rows summing to 1."""
    influences = int(max(1, min(MAX_INFLUENCES, (weights > 0).sum(axis=1).max())))
    order = np.argsort(-weights, axis=1, kind="stable")[:, :influences]
    kept = np.take_along_axis(weights, order, axis=1).astype(np.float64)
    kept /= kept.sum(axis=1, keepdims=True)
    return order.astype(np.int32), kept.astype(np.float32)


def _bone_tails(heads: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """[J, 3] bone tails from the joints' heads (see `smplx_rig`)."""
    children: list[list[int]] = [[] for _ in parents]
    for joint, parent in enumerate(parents[1:], start=1):
        children[parent].append(joint)
    for name, main_child in _MAIN_CHILD.items():
        index = SMPLX_JOINT_NAMES.index(name)
        children[index] = [] if main_child is None else [SMPLX_JOINT_NAMES.index(main_child)]

    tails = np.empty_like(heads)
    for joint, parent in enumerate(parents):
        if children[joint]:
            tails[joint] = heads[children[joint]].mean(axis=0)
            if np.linalg.norm(tails[joint] - heads[joint]) >= _MIN_BONE_LENGTH:
                continue
        # A leaf (or a joint whose children sit on it) continues the step from its parent.
        step = heads[joint] - heads[parent] if parent >= 0 else np.zeros(3)
        distance = float(np.linalg.norm(step))
        direction = step / distance if distance > 1e-9 else np.array([0.0, 0.0, 1.0])
        length = max(_LEAF_LENGTH_RATIO * distance, _MIN_BONE_LENGTH)
        tails[joint] = heads[joint] + length * direction
    return tails


def _roll_references(heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """[J, 3] the world axis each bone's X should lean towards (see `smplx_rig`)."""
    directions = tails - heads
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    along_x = np.abs(directions[:, 0]) > np.cos(np.pi / 4)
    references = np.tile([1.0, 0.0, 0.0], (len(heads), 1))
    references[along_x] = np.outer(np.sign(directions[along_x, 0]), [0.0, 1.0, 0.0])
    return references
