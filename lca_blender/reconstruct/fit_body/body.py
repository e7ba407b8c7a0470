"""The body model a build fits, and what the fit asks of a body model and gets back from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ...avatar import Pose, Rig
from ...bodies.anny_body import anny_rig
from ...bodies.smplx_body import smplx_arrays, smplx_rig
from ...errors import AvatarError
from ...paths import cache_dir

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
            return smplx_rig(self.smplx_file, body_cache(), betas=np.asarray(body_parameters["betas"]))
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
    _, sha256 = smplx_arrays(smplx_file, body_cache())
    return BodyChoice("smplx", Path(smplx_file).resolve(), sha256)


def body_cache() -> Path:
    """Where converted body models and cached rigs live."""
    return cache_dir() / "bodies"


@dataclass(frozen=True)
class PosedBody:
    """A body model evaluated during the fit."""

    vertices: torch.Tensor  # [V, 3] the posed mesh in the fit's world
    points: torch.Tensor  # [P, 3] the points the landmarks name, in `targets.LandmarkTargets`' order
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
    """What fit_body needs of a body model: Anny (`anny.AnnyBody`) or SMPL-X (`smplx.SmplxBody`).

    The body owns its shape parameters; fit_body owns a rotation vector per joint (zero: the
    model's rest pose, Anny's A-pose or SMPL-X's T-pose) and the cameras.
    """

    joint_count: int
    rest_vertices: np.ndarray  # [V, 3] the mesh at the starting shape and rest pose
    triangles: np.ndarray  # [F, 3] the mesh's triangles
    free: np.ndarray  # [J, 3] 1 where the fit may move a joint's rotation-vector component, 0 held at rest
    fingers: np.ndarray  # [J] bool: finger joints (a softer pose prior)
    shape: torch.Tensor  # the shape parameters, optimised
    extra: list  # other parameters optimised with the shape (Anny's jawOpen)

    def posed(self, rotvecs: torch.Tensor) -> PosedBody:  # rotvecs [J, 3], frozen joints zeroed
        ...

    def shape_prior(self) -> torch.Tensor: ...

    def face_prior(self) -> torch.Tensor | float: ...

    def result(self, posed: PosedBody) -> FittedRig: ...
