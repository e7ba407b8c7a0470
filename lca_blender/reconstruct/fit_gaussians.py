"""fit_gaussians: Gaussians on the fitted body with albedo and photo lighting that explain the photos.

Engine only (torch). The stages, in order:

1. **Surface**: Gaussians are drawn on the fitted body's template (area-weighted; with the outer
   layer of clothes and hair that `outer_layer.py` appends to it, when there is one), posed at the
   capture pose with `deform_torch`. Each is a thin disc whose thin axis is the mesh's smooth
   (vertex-interpolated) normal, expressed in its triangle's frame so that it follows the skin.
2. **Observation**: each Gaussian and each mesh vertex is projected into every photo, with a depth
   test against a depth image rendered from the initial Gaussians and a facing test; its colour is
   the facing-weighted mean of the photos' linear pixels where it is seen.
3. **Capture lighting** (on the mesh vertices, a few hundred cheap steps): the photos' lighting
   as L2 spherical-harmonic ambient plus one sun, estimated jointly with albedo under a Retinex
   prior: white-ish light changes a surface's brightness, not its chromaticity, so the seen
   vertices are clustered by chromaticity into connected patches of one albedo each, and the
   shading model must explain the brightness changes that follow the normal within a patch.
   Exposure: photos are taken to be well exposed, so the lighting is scaled, per channel, until a
   white Lambertian surface facing the brightest direction of the estimated lighting has radiance
   exactly 1.0 (which also white-balances the photos to that direction). Albedo starts as the
   observed colour over the shading.
4. **Optimisation** with the differentiable renderer against the masked photos, one photo per
   step, at half size first and then full size: L1 + SSIM on display-encoded colour plus alpha
   against the mask. A Gaussian's linear colour is the shading model of `shading.py` (albedo under
   the capture lighting, with fixed roughness and specular) with a per-Gaussian sun visibility in
   [0, 1] for cast shadows, pulled towards 1. Each photo's camera is refined along the way by a
   small, regularised turn and shift, and the learning rates decay towards the end. Regularisers
   keep the avatar clean to animate: normal offsets small (bounded by `MAX_NORMAL_OFFSET`, or
   `MAX_OUTER_NORMAL_OFFSET` on the outer layer of clothes and hair),
   tangent scales within a band around the sampling spacing and at most `MAX_ANISOTROPY` to 1,
   opacities pushed to 0 or 1. The lighting stays fixed here: with a free albedo per Gaussian the
   photos cannot tell them apart.
5. **Fill**: Gaussians no photo saw take the albedo of the nearest seen surface (a grass-fire fill
   over the mesh edges), so an avatar built from one front photo still has a plausible back.
   The inside of the mouth (its own mesh, what jawOpen uncovers, and the head's skin that no
   direction sees: `enclosed`) is left out of the optimisation and takes a shadowed cavity's
   dark albedo instead.

The "as captured" look (SH, display-encoded) is the fitted shading model at the capture pose; the
relit look uses the albedo alone, which is what makes the avatar relightable.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..avatar import OUTER_LAYER, GaussianAvatar, Pose
from ..errors import AvatarError
from ..maths.cameras import look_at
from ..maths.colour import linear_to_srgb
from ..maths.deform_torch import RigTensors, pose_gaussians, pose_vertices
from ..maths.lights import AmbientSH, Lighting, SunLight, lighting_to_json
from ..maths.rotations_torch import quaternion_multiply, quaternion_to_matrix
from ..maths.sh import SH_C0
from ..maths.shading_torch import LightingTensors, ambient_irradiance, direct_lighting, specular_brdf
from ..maths.tone import STANDARD, ToneCurve
from ..maths.tone_torch import encode as tone_encode
from ..progress import Progress
from ..render import render
from .losses import psnr, ssim
from .outer_layer import connected_components
from .sample import sample_surface
from .views import BodyFit, Preset, View, capture_to_json

logger = logging.getLogger(__name__)

FLATNESS = 0.15  # a disc's thickness over its tangent size
# The face is a few per cent of the skin but what people look at, and in full-body photos it is a
# few dozen pixels tall: its triangles are sampled this many times as densely as the rest.
FACE_DENSITY = 3.0
FACE_JOINTS = ("head", "eye.L", "eye.R", "jaw")
# The splats are fitted, and so rendered everywhere, antialiased (`maths/projection.py`): classic
# splats' low-pass filter made every outline stand out by about a pixel. Measured on the skin-tight
# example against classic: held-out +0.3 dB, novel pose +0.3, relit +0.45.
ANTIALIASED = True
MAX_NORMAL_OFFSET = 0.02  # metres: Gaussians stay within 2 cm of the fitted skin
# ... and within 4 cm of the outer layer (`outer_layer.py`), which is a visual hull: larger than
# the person by up to a voxel and a pixel or two of mask, and blunt where no photo's outline cuts.
MAX_OUTER_NORMAL_OFFSET = 0.04
MAX_ANISOTROPY = 4.0  # longest over shortest tangent scale
SCALE_BAND = (0.35, 1.5)  # tangent scales relative to the sampling spacing
INITIAL_SCALE = 0.65  # of the spacing: neighbouring discs overlap, so the skin is covered
INITIAL_LOGIT = 4.0  # of opacity and sun visibility: sigmoid(4) = 0.98, opaque and sunlit
# Where the smooth normal's component along its triangle's normal is at most this (folds and
# creases), the tilt onto it is unreliable, and undefined when they are opposite: the disc lies
# flat on its triangle instead.
MIN_SMOOTH_NORMAL_COSINE = 0.2
ROUGHNESS = 0.6  # not estimated: few photos cannot separate it from albedo
SPECULAR = 0.3
COARSE_SIDE = 256  # longest image side of the first, coarse part of the optimisation
COARSE_FRACTION = 0.6  # of the steps run at the coarse size
SSIM_WEIGHT = 0.2
# Observation (stage 2): a point counts as seen by a photo where it is in front of the depth image
# by less than DEPTH_SLACK plus DEPTH_SLACK_PER_METRE of the depth (the depth image is rendered
# small), faces the camera by more than MIN_FACING (a cosine; grazing views smear texture), and
# lies where the mask is above MIN_MASK (the anti-aliased outline mixes in the background).
DEPTH_SLACK = 0.02  # metres
DEPTH_SLACK_PER_METRE = 0.01
MIN_FACING = 0.15
MIN_MASK = 0.9
# The initial albedo is the observed colour over the capture shading, with the shading floored
# (points the lighting barely reaches would get an absurd albedo) and the result kept inside
# (0, 1), where the albedo's logit is finite.
MIN_INITIAL_SHADING = 0.02
INITIAL_ALBEDO_RANGE = (0.01, 0.99)


@dataclass(frozen=True)
class LightingEstimate:
    """Settings of the capture-lighting estimate (module docstring, stage 3)."""

    steps: int  # Adam steps; the first third fits the ambient alone, the rest adds the sun
    clusters: int  # chromaticity clusters, split further into connected patches of one albedo
    min_seen_vertices: int  # fewer seen vertices cannot tell the lighting from the albedo
    learning_rate: float
    initial_log_sun: float  # the sun's log irradiance before it is placed: off
    ambient_kept: float  # of the ambient's directional part, when the sun takes the rest over
    directional_prior: float  # weight of the ambient's directional bands over its constant one
    below_horizon_prior: float  # weight against a sun from below
    colour_floor: float  # added to observed colours before the log (black would be -inf)
    shading_floor: float  # added to the shading before the log
    robust_epsilon: float  # the residual r counts as sqrt(r^2 + epsilon): L1, smooth at 0


LIGHTING_ESTIMATE = LightingEstimate(
    steps=450,
    clusters=10,
    min_seen_vertices=50,
    learning_rate=0.03,
    initial_log_sun=-8.0,
    ambient_kept=0.5,
    directional_prior=0.3,
    below_horizon_prior=0.1,
    colour_floor=1e-3,
    shading_floor=1e-2,
    robust_epsilon=1e-4,
)
# A white uniform world of radiance 1 (E / pi = 1) as the constant L2 SH coefficient of radiance:
# where the ambient starts, and where the exposure prior keeps it.
WHITE_WORLD_SH0 = 2 * math.sqrt(math.pi)


@dataclass(frozen=True)
class LearningRates:
    """Adam's starting rate for each optimised tensor, by name (they decay to FINAL_RATE of it).

    The fields other than camera_* are named as `_Gaussians.named_parameters()` names its tensors:
    each tensor takes the rate of its own name, so reordering the parameters cannot swap rates.
    """

    spin: float  # radians: each disc's turn about its thin axis
    tangent_log_scales: float
    offset_code: float  # the normal offset's tanh code
    opacity_logit: float
    albedo_logit: float
    visibility_logit: float  # the sun visibility's logit
    camera_turns: float  # radians: each photo's camera turn
    camera_shifts: float  # metres: each photo's camera shift


LEARNING_RATES = LearningRates(
    spin=0.02,
    tangent_log_scales=0.01,
    offset_code=0.02,
    opacity_logit=0.05,
    albedo_logit=0.03,
    visibility_logit=0.05,
    camera_turns=4e-4,
    camera_shifts=1e-3,
)
# Each photo's camera is refined by a small turn (radians) and shift (metres) in its own frame:
# cameras posed from a body fit can be a pixel or two out, which blurs the texture where photos
# overlap. The prior (per squared radian / metre) keeps the corrections to the few pixels that the
# photos agree on (1-3 px on the example subject), so the body still places the avatar.
CAMERA_TURN_PRIOR = 25.0
CAMERA_SHIFT_PRIOR = 2.5
# The learning rates decay exponentially to this fraction of their start by the last step: with
# one photo per step, full-rate steps keep pulling each Gaussian towards the latest photo's view.
FINAL_RATE = 0.1


@dataclass(frozen=True)
class RegulariserWeights:
    """Weights of the optimisation's terms beside the photometric one (module docstring, stage 4)."""

    coverage: float  # rendered alpha against the mask
    scale_band: float  # tangent scales outside SCALE_BAND, and anisotropy beyond MAX_ANISOTROPY
    normal_offsets: float  # squared normal offset in units of OFFSET_SCALE
    binary_opacity: float  # o (1 - o): opacities pushed to 0 or 1
    shadows: float  # 1 - sun visibility: cast shadows only where the photos ask for them


REGULARISER_WEIGHTS = RegulariserWeights(
    coverage=1.0, scale_band=1.0, normal_offsets=1e-3, binary_opacity=0.002, shadows=0.01
)
OFFSET_SCALE = 0.01  # metres
# A step's render leaves out the discs whose normal makes a cosine below this with the direction
# to the camera (the reason is in `_step_loss`).
MIN_RENDERED_FACING = -0.3
# Gaussians whose blending weight summed over all photos' pixels stays below this count as unseen
# (a visible splat on the example weighs tens of pixels; one under the skin about nothing).
MIN_PHOTO_WEIGHT = 0.5
# The mouth's inside is never in photos of a closed mouth, and the shading model has no occlusion:
# its Gaussians (unseen, on vertices jawOpen moves by more than MOUTH_MOVES metres) get the dark
# albedo of a shadowed cavity, so an opened jaw shows a dark mouth rather than skin.
MOUTH_MOVES = 0.002
MOUTH_ALBEDO = (0.06, 0.025, 0.025)
# The head's skin also lines cavities no photo shows: the palate and the throat behind closed lips,
# the nostrils' insides. Their discs are found by rendering the head's skin, opaque, from
# ENCLOSURE_VIEWS directions all round at ENCLOSURE_SIZE pixels: those that lie more than
# ENCLOSURE_SLACK behind the depth image in every view are inside, and treated as the mouth's
# inside (left out of the fit, given MOUTH_ALBEDO): fitted, they poked through cheeks and lips as
# blue-grey blotches in views between the photos'.
ENCLOSURE_VIEWS = 64
ENCLOSURE_SIZE = 128
ENCLOSURE_SLACK = 0.005  # metres
_LUMINANCE = (0.2126, 0.7152, 0.0722)


@dataclass(frozen=True)
class _Photo:
    """One view as tensors at one size."""

    linear: torch.Tensor  # [H, W, 3]
    target: torch.Tensor  # [1, H, W, 3] display-encoded, masked onto black
    mask: torch.Tensor  # [1, H, W, 1]
    inside: torch.Tensor  # [1, H, W, 1] where colour counts: the mask, binarised
    viewmat: torch.Tensor  # [1, 4, 4]
    intrinsics: torch.Tensor  # [1, 3, 3]
    position: torch.Tensor  # [3]
    width: int
    height: int


def _photo(view: View, longest_side: int, device: str, tone: ToneCurve = STANDARD) -> _Photo:
    """The view resized (area filter) so its longer side is at most `longest_side`; its pixels in
    scene-linear light through the photos' tone curve (`View.pixels` are sRGB-decoded)."""
    camera = view.camera
    height, width = view.mask.shape
    factor = min(1.0, longest_side / max(height, width))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    pixels, mask = view.pixels.astype(np.float32), view.mask.astype(np.float32)
    if size != (width, height):
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
    # Pixel edges map to pixel edges: x' = x * (new / old) per axis, so K scales the same way.
    intrinsics = np.asarray(camera.intrinsics, np.float64).copy()
    intrinsics[0] *= size[0] / width
    intrinsics[1] *= size[1] / height

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    display = linear_to_srgb(np.clip(pixels, 0.0, 1.0))  # the photo's own values
    linear, mask_tensor = tensor(tone.decode(display)), tensor(np.clip(mask, 0.0, 1.0))
    inside = (mask > 0.5).astype(np.uint8)
    return _Photo(
        linear=linear,
        target=(tensor(display) * mask_tensor[..., None])[None],
        mask=mask_tensor[None, ..., None],
        inside=tensor(inside)[None, ..., None],
        viewmat=tensor(camera.viewmat)[None],
        intrinsics=tensor(intrinsics)[None],
        position=tensor(camera.position),
        width=size[0],
        height=size[1],
    )


def _vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """[V, 3] unit area-weighted vertex normals."""
    corners = vertices[triangles]
    face = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = torch.zeros_like(vertices).index_add_(0, triangles.reshape(-1), face.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(normals, dim=1)


def _mesh_adjacency(triangles: torch.Tensor, vertex_count: int) -> torch.Tensor:
    """[V, V] sparse symmetric 0/1 adjacency of the mesh's edges."""
    edges = torch.cat([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = torch.unique(torch.sort(edges, dim=1).values, dim=0)
    both = torch.cat([edges, edges.flip(1)]).T
    values = torch.ones(both.shape[1], dtype=torch.float32, device=triangles.device)
    return torch.sparse_coo_tensor(
        both, values, (vertex_count, vertex_count), check_invariants=False
    ).coalesce()


def _fibonacci_sphere(count: int, device: str) -> torch.Tensor:
    index = torch.arange(count, dtype=torch.float32, device=device) + 0.5
    z = 1 - 2 * index / count
    angle = index * math.pi * (3 - math.sqrt(5))
    radius = (1 - z * z).clamp_min(0).sqrt()
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), z], dim=1)


@dataclass
class _CaptureLighting:
    """The estimated photo lighting: L2 SH ambient radiance and one sun."""

    ambient_sh: torch.Tensor  # [9, 3]
    sun_towards: torch.Tensor  # [3] unit, from the body towards the sun
    sun_irradiance: torch.Tensor  # [3]

    def irradiance(self, normals: torch.Tensor) -> torch.Tensor:
        """[N, 3] E(n) (ambient plus sun, no shadows) at unit normals [N, 3]."""
        cosine = (normals @ self.sun_towards).clamp_min(0.0)
        return ambient_irradiance(normals, self.ambient_sh) + cosine[:, None] * self.sun_irradiance

    def brightest_direction(self) -> torch.Tensor:
        directions = _fibonacci_sphere(4096, self.ambient_sh.device)
        luminance = self.irradiance(directions) @ torch.tensor(_LUMINANCE, device=directions.device)
        return directions[torch.argmax(luminance)]

    def normalised(self) -> tuple[_CaptureLighting, torch.Tensor]:
        """The lighting exposed so that white facing its brightest direction has radiance 1, and the
        per-channel factor [3] it was multiplied by (albedo divides by it)."""
        peak = self.irradiance(self.brightest_direction()[None])[0] / math.pi
        factor = 1.0 / peak.clamp_min(1e-6)
        scaled = _CaptureLighting(self.ambient_sh * factor, self.sun_towards, self.sun_irradiance * factor)
        return scaled, factor

    def tensors(self) -> LightingTensors:
        return LightingTensors.from_lighting(self.lighting(), device=self.ambient_sh.device)

    def lighting(self) -> Lighting:
        irradiance = self.sun_irradiance.detach().cpu().double().numpy()
        strength = float(irradiance.max())
        color = irradiance / strength if strength > 0 else np.ones(3)
        direction = (-self.sun_towards.detach().cpu().double()).numpy()
        return Lighting(
            ambient=AmbientSH(self.ambient_sh.detach().cpu().double().numpy().tolist()),
            lights=(SunLight(tuple(direction), tuple(color), strength),),
        )


def _chromaticity_clusters(colors: torch.Tensor, weights: torch.Tensor, count: int) -> torch.Tensor:
    """[V] cluster of each colour [V, 3] by chromaticity (k-means, farthest-point start, weighted)."""
    chroma = colors / colors.sum(1, keepdim=True).clamp_min(1e-4)
    centres = [chroma[torch.argmax(weights)]]
    for _ in range(count - 1):
        distance = torch.cdist(chroma, torch.stack(centres)).min(1).values * (weights > 0)
        centres.append(chroma[torch.argmax(distance)])
    centres_tensor = torch.stack(centres)
    for _ in range(20):
        labels = torch.cdist(chroma, centres_tensor).argmin(1)
        totals = torch.zeros(count, device=colors.device).index_add_(0, labels, weights)
        sums = torch.zeros(count, 3, device=colors.device).index_add_(0, labels, weights[:, None] * chroma)
        centres_tensor = torch.where(
            totals[:, None] > 0, sums / totals.clamp_min(1e-12)[:, None], centres_tensor
        )
    return torch.cdist(chroma, centres_tensor).argmin(1)


def _connected_parts(adjacency: torch.Tensor, labels: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """[V] the id of each seen vertex's connected patch of one label (-1 where unseen)."""
    ends = adjacency.indices()
    ends = ends[:, seen[ends[0]] & seen[ends[1]] & (labels[ends[0]] == labels[ends[1]])]
    part = torch.arange(labels.shape[0], device=labels.device)
    while True:  # each vertex takes the smallest id among its patch neighbours, until nothing changes
        spread = part.scatter_reduce(0, ends[0], part[ends[1]], reduce="amin")
        if torch.equal(spread, part):
            break
        part = spread
    part = torch.where(seen, part, -1)
    return torch.unique(part, return_inverse=True)[1] - int((~seen).any())


@dataclass(frozen=True)
class _AlbedoPatches:
    """The seen vertices the lighting is estimated on, in connected patches of one albedo each."""

    log_colors: torch.Tensor  # [S, 3] log of the observed linear colour
    weights: torch.Tensor  # [S] observation weights, summing to 1
    normals: torch.Tensor  # [S, 3] unit
    parts: torch.Tensor  # [S] each vertex's patch
    mean_log_colors: torch.Tensor  # [P, 3] each patch's weighted mean log colour


def _albedo_patches(
    colors: torch.Tensor,  # [V, 3] observed linear colour per vertex
    weights: torch.Tensor,  # [V] observation weight (0 = unseen)
    normals: torch.Tensor,  # [V, 3] unit
    adjacency: torch.Tensor,  # [V, V] sparse
    settings: LightingEstimate,
) -> _AlbedoPatches:
    """The seen vertices clustered by chromaticity and split into connected patches."""
    seen = weights > 0
    if int(seen.sum()) < settings.min_seen_vertices:
        raise AvatarError("Too little of the body is visible in the photos to estimate their lighting.")
    labels = _chromaticity_clusters(colors, weights, settings.clusters)
    parts = _connected_parts(adjacency, labels, seen)
    colors, weights, normals, parts = colors[seen], weights[seen], normals[seen], parts[seen]
    log_colors = torch.log(colors + settings.colour_floor)
    weights = weights / weights.sum()
    part_count = int(parts.max()) + 1
    device = colors.device
    totals = torch.zeros(part_count, device=device).index_add_(0, parts, weights)
    sums = torch.zeros(part_count, 3, device=device).index_add_(0, parts, weights[:, None] * log_colors)
    return _AlbedoPatches(log_colors, weights, normals, parts, sums / totals.clamp_min(1e-12)[:, None])


class _LightingUnknowns:
    """What the lighting estimate solves for: each patch's log albedo, the L2 SH ambient and a sun."""

    def __init__(self, patches: _AlbedoPatches, settings: LightingEstimate) -> None:
        device = patches.log_colors.device
        self.settings = settings
        self.log_albedo = patches.mean_log_colors.clone().requires_grad_(True)  # [P, 3]
        self.ambient = torch.zeros(9, 3, device=device)
        self.ambient[0] = WHITE_WORLD_SH0
        self.ambient.requires_grad_(True)
        self.sun_towards = torch.tensor([0.0, -1.0, 0.0], device=device, requires_grad=True)
        self.log_sun = torch.full((3,), settings.initial_log_sun, device=device, requires_grad=True)

    def loss(self, patches: _AlbedoPatches, with_sun: bool) -> torch.Tensor:
        """Robust (nearly L1) log-colour residual of patch albedo times shading, plus the priors."""
        settings, ambient = self.settings, self.ambient
        lighting = _CaptureLighting(
            ambient,
            torch.nn.functional.normalize(self.sun_towards, dim=0),
            self.log_sun.exp() if with_sun else torch.zeros(3, device=ambient.device),
        )
        log_shading = torch.log(lighting.irradiance(patches.normals) / math.pi + settings.shading_floor)
        residual = (self.log_albedo[patches.parts] + log_shading - patches.log_colors).abs().sum(1)
        robust = torch.sqrt(residual**2 + settings.robust_epsilon)
        # Priors for what the photos barely see: keep the exposure where it started (albedo and
        # light trade it freely); let the sun, not the ambient, carry the light's direction; and
        # keep the sun above the horizon (with cameras near eye level, a light from above and its
        # mirror image from below shade the mostly upright body almost alike).
        gauge = (ambient[0].mean() - WHITE_WORLD_SH0) ** 2
        directional = settings.directional_prior * (ambient[1:] ** 2).sum() / (ambient[0] ** 2).mean()
        below = torch.relu(-torch.nn.functional.normalize(self.sun_towards, dim=0)[2]) if with_sun else 0.0
        return (patches.weights * robust).sum() + gauge + directional + settings.below_horizon_prior * below

    def place_sun(self) -> None:
        """The ambient found so far points at the light: put a sun there worth the ambient's
        directional part, and keep `ambient_kept` of that part in the ambient."""
        with torch.no_grad():
            zero = torch.zeros(3, device=self.ambient.device)
            lighting = _CaptureLighting(self.ambient, self.sun_towards.detach(), zero)
            brightest = lighting.brightest_direction()
            self.sun_towards.copy_(brightest)
            spread = lighting.irradiance(torch.stack([brightest, -brightest]))
            self.log_sun.copy_(torch.log((spread[0] - spread[1]).clamp_min(1e-2)))
            self.ambient[1:] *= self.settings.ambient_kept

    def estimate(self) -> _CaptureLighting:
        return _CaptureLighting(
            self.ambient.detach().clone(),
            torch.nn.functional.normalize(self.sun_towards.detach(), dim=0),
            self.log_sun.detach().exp(),
        )


def _estimate_lighting(
    colors: torch.Tensor,  # [V, 3] observed linear colour per vertex
    weights: torch.Tensor,  # [V] observation weight (0 = unseen)
    normals: torch.Tensor,  # [V, 3] unit
    adjacency: torch.Tensor,  # [V, V] sparse
    progress: Progress,
    span: tuple[float, float],
    settings: LightingEstimate = LIGHTING_ESTIMATE,
) -> tuple[_CaptureLighting, float]:
    """Capture lighting (up to exposure) and its robust log-colour residual.

    The Retinex prior made concrete: white-ish light changes a surface's brightness, not its
    chromaticity, so the seen vertices are clustered by chromaticity and split into connected
    patches; each patch has one albedo. The fit explains the log colours by patch albedo plus log
    shading, robustly (nearly L1), so texture within a patch does not pull the light around.
    """
    patches = _albedo_patches(colors, weights, normals, adjacency, settings)
    unknowns = _LightingUnknowns(patches, settings)
    steps = settings.steps
    ambient_only_steps = steps // 3
    optimiser = torch.optim.Adam([unknowns.ambient, unknowns.log_albedo], lr=settings.learning_rate)
    for step in range(steps):
        if step == ambient_only_steps:  # from here the sun and the ambient are fitted together
            unknowns.place_sun()
            everything = [unknowns.ambient, unknowns.log_albedo, unknowns.sun_towards, unknowns.log_sun]
            optimiser = torch.optim.Adam(everything, lr=settings.learning_rate)
        optimiser.zero_grad()
        loss = unknowns.loss(patches, with_sun=step >= ambient_only_steps)
        loss.backward()
        optimiser.step()
        if step % 25 == 0:
            progress.update(span[0] + (span[1] - span[0]) * step / steps, "Estimating the photos' lighting")
    with torch.no_grad():
        return unknowns.estimate(), float(unknowns.loss(patches, with_sun=True))


def _grassfire_fill(
    values: torch.Tensor,  # [V, D]
    known: torch.Tensor,  # [V] bool
    adjacency: torch.Tensor,  # [V, V] sparse
) -> torch.Tensor:
    """Unknown vertices take the mean of their known neighbours, front by front, until all are known
    (the nearest seen surface's value); components with nothing known take the overall mean."""
    values, known = values.clone(), known.clone()
    if not known.any():
        return values
    while not known.all():
        mask = known.float()[:, None]
        sums = torch.sparse.mm(adjacency, torch.cat([values * mask, mask], dim=1))
        reached = ~known & (sums[:, -1] > 0)
        if not reached.any():
            values[~known] = values[known].mean(0)
            break
        values[reached] = sums[reached, :-1] / sums[reached, -1:]
        known |= reached
    return values


class _Gaussians:
    """The Gaussians being fitted: fixed bindings and the optimised parameters."""

    def __init__(self, body: BodyFit, count: int, rng: np.random.Generator, device: str) -> None:
        rig = body.rig
        self.device = device
        self.rig_tensors = RigTensors.from_rig(rig, device=device)
        triangle_ids, barycentrics = sample_surface(rig, count, rng, _sampling_density(rig))
        self.triangle_ids = torch.as_tensor(triangle_ids, device=device).long()
        self.barycentrics = torch.as_tensor(barycentrics, device=device)
        triangles = self.rig_tensors.triangles
        with torch.no_grad():
            expressions = torch.as_tensor(np.asarray(body.expressions, np.float32), device=device)

            def posed_mesh(pose: Pose) -> torch.Tensor:
                rotations = torch.as_tensor(pose.rotations, device=device)
                translation = torch.as_tensor(pose.translation, device=device)
                return pose_vertices(self.rig_tensors, rotations, translation, expressions)

            self.posed_vertices = posed_mesh(body.pose)
            # Each photo's own mesh where the person's pose in it differs (`View.pose`, its head's turn).
            self.photo_vertices = [posed_mesh(view.pose) if view.pose else None for view in body.views]
            self.tilts, self.base_log_scale = self._rest_binding(rig.vertices, triangles)
        self.corner_vertices = triangles[self.triangle_ids]  # [N, 3]
        # On the mouth's own mesh (teeth, tongue), or skin inside the head (palate, throat): hidden
        # behind closed lips in every photo.
        self.in_mouth = torch.as_tensor(mouth_vertices(rig), device=device)[self.corner_vertices].any(dim=1)
        self.max_offsets = torch.full((count,), MAX_NORMAL_OFFSET, device=device)
        if rig.vertex_layers is not None:
            outer = torch.as_tensor(rig.vertex_layers == OUTER_LAYER, device=device)
            self.max_offsets[outer[self.corner_vertices[:, 0]]] = MAX_OUTER_NORMAL_OFFSET
        self.spin = torch.as_tensor(rng.uniform(0, math.pi, count), dtype=torch.float32, device=device)
        self.tangent_log_scales = torch.full((count, 2), math.log(INITIAL_SCALE), device=device)
        self.offset_code = torch.zeros(count, device=device)  # offset = MAX tanh(code)
        self.opacity_logit = torch.full((count,), INITIAL_LOGIT, device=device)
        self.albedo_logit = torch.zeros(count, 3, device=device)
        self.visibility_logit = torch.full((count,), INITIAL_LOGIT, device=device)  # sun visibility
        self.in_mouth |= _inside_head(self, rig)

    def _rest_binding(
        self, vertices: np.ndarray, triangles: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per Gaussian: the tilt [N, 4] turning its triangle's normal onto the smooth normal (in the
        triangle's frame) and the log of the sampling spacing over the triangle size [N]."""
        rest = torch.as_tensor(vertices, device=self.device)
        corners = rest[triangles]
        edge1, edge2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
        cross = torch.linalg.cross(edge1, edge2)
        twice_area = cross.norm(dim=1).clamp_min(1e-12)
        normal = cross / twice_area[:, None]
        tangent = torch.nn.functional.normalize(edge1, dim=1)
        frame = torch.stack([tangent, torch.linalg.cross(normal, tangent), normal], dim=2)  # columns
        smooth = _vertex_normals(rest, triangles)[triangles[self.triangle_ids]]
        smooth = torch.nn.functional.normalize((self.barycentrics[:, :, None] * smooth).sum(1), dim=1)
        local = torch.einsum("nji,nj->ni", frame[self.triangle_ids], smooth)  # frame^T smooth
        flat = torch.tensor([0.0, 0.0, 1.0], device=self.device)
        local = torch.where(local[:, 2:] > MIN_SMOOTH_NORMAL_COSINE, local, flat)
        tilts = torch.nn.functional.normalize(
            torch.stack([1 + local[:, 2], -local[:, 1], local[:, 0], torch.zeros_like(local[:, 0])], 1), dim=1
        )
        spacing = math.sqrt(0.5 * float(twice_area.sum()) / self.triangle_ids.shape[0])
        return tilts, math.log(spacing) - 0.5 * torch.log(twice_area[self.triangle_ids])

    def named_parameters(self) -> dict[str, torch.Tensor]:
        """The optimised tensors by name (the names of `LearningRates`' fields)."""
        return {
            "spin": self.spin,
            "tangent_log_scales": self.tangent_log_scales,
            "offset_code": self.offset_code,
            "opacity_logit": self.opacity_logit,
            "albedo_logit": self.albedo_logit,
            "visibility_logit": self.visibility_logit,
        }

    def parameters(self) -> list[torch.Tensor]:
        return list(self.named_parameters().values())

    def local_rotations(self) -> torch.Tensor:
        half = 0.5 * self.spin
        zeros = torch.zeros_like(half)
        return quaternion_multiply(
            self.tilts, torch.stack([torch.cos(half), zeros, zeros, torch.sin(half)], 1)
        )

    def log_scales(self) -> torch.Tensor:
        """[N, 3] log scale over triangle size; the thin (normal) axis follows the smaller tangent."""
        tangent = self.tangent_log_scales
        thin = tangent.min(dim=1, keepdim=True).values + math.log(FLATNESS)
        return torch.cat([tangent, thin], dim=1) + self.base_log_scale[:, None]

    def normal_offsets(self) -> torch.Tensor:
        return self.max_offsets * torch.tanh(self.offset_code)

    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logit)

    def albedo(self) -> torch.Tensor:
        return torch.sigmoid(self.albedo_logit)

    def vertices(self, photo: int | None = None) -> torch.Tensor:
        """[V, 3] the mesh at the capture pose, or as the person stood in photo `photo`."""
        own = None if photo is None else self.photo_vertices[photo]
        return self.posed_vertices if own is None else own

    def posed_in(
        self, photo: int, capture: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`posed(photo)` with the parameters held, given `capture` (`posed()`): posed anew only
        for a photo where the person stood otherwise."""
        return capture if self.photo_vertices[photo] is None else self.posed(photo)

    def posed(self, photo: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Means [N, 3], rotations [N, 4] and scales [N, 3] at the capture pose, or as the person
        stood in photo `photo` (`vertices`)."""
        return pose_gaussians(
            self.vertices(photo),
            self.rig_tensors.triangles,
            self.triangle_ids,
            self.barycentrics,
            self.normal_offsets(),
            self.local_rotations(),
            self.log_scales(),
        )


def _sampling_density(rig) -> np.ndarray:
    """[F] how densely each triangle is sampled, relative to its area: FACE_DENSITY on the face
    (the skin the head joints carry, facing forwards at rest), 1 elsewhere."""
    density = np.ones(len(rig.triangles))
    head_weight = _head_weight(rig)
    corners = rig.vertices[rig.triangles].astype(np.float64)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    facing_front = normals[:, 1] < 0  # the body faces -Y at rest
    face = (head_weight[rig.triangles].mean(axis=1) > 0.5) & facing_front
    density[face] = FACE_DENSITY
    return density


def _head_weight(rig) -> np.ndarray:
    """[V] the skin weight the head joints (FACE_JOINTS) carry at each vertex of the body's own
    skin (0 on the outer layer: hair is not face)."""
    heads = [index for index, name in enumerate(rig.joint_names) if name in FACE_JOINTS]
    head_weight = np.zeros(rig.vertex_count)
    for joint in heads:
        head_weight += (rig.skin_weights * (rig.skin_indices == joint)).sum(axis=1)
    if rig.vertex_layers is not None:
        head_weight[rig.vertex_layers == OUTER_LAYER] = 0.0
    return head_weight


def _inside_head(gaussians: _Gaussians, rig) -> torch.Tensor:
    """[N] bool: the discs on the head's skin that no direction sees (`enclosed`, among the skin's
    discs within the head's reach): the palate, the throat, the nostrils' insides."""
    head = torch.as_tensor(_head_weight(rig) > 0.5, device=gaussians.device)[gaussians.corner_vertices].all(1)
    inside = torch.zeros_like(head)
    if not head.any():
        return inside
    skin = torch.ones_like(head)
    if rig.vertex_layers is not None:
        outer = torch.as_tensor(rig.vertex_layers == OUTER_LAYER, device=gaussians.device)
        skin = ~outer[gaussians.corner_vertices].any(1)
    with torch.no_grad():
        means, rotations, scales = gaussians.posed()
    centre = means[head].mean(0)
    reach = (means[head] - centre).norm(dim=1).max()
    pool = skin & ((means - centre).norm(dim=1) <= reach)
    inside[pool] = enclosed(means[pool], rotations[pool], scales[pool])
    return inside & head


def enclosed(
    means: torch.Tensor,  # [N, 3]
    rotations: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    views: int = ENCLOSURE_VIEWS,
    size: int = ENCLOSURE_SIZE,
) -> torch.Tensor:
    """[N] bool: the Gaussians that no camera on a sphere of `views` directions around them sees
    when all of them are opaque: in every view they lie more than ENCLOSURE_SLACK behind the
    depth image (the inside of a closed surface)."""
    centre = means.mean(0)
    radius = float((means - centre).norm(dim=1).max() + 3 * scales.max()) + 1e-3
    distance = 3 * radius
    focal = 0.5 * size * math.sqrt(distance**2 - radius**2) / radius  # the bounding sphere fills the view
    intrinsics = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]], device=means.device)
    opaque = torch.ones(means.shape[0], device=means.device)
    seen = torch.zeros(means.shape[0], dtype=torch.bool, device=means.device)
    with torch.no_grad():
        for direction in _fibonacci_sphere(views, means.device):
            position = (centre + distance * direction).cpu().numpy()
            viewmat = torch.as_tensor(look_at(position, centre.cpu().numpy()), dtype=torch.float32)
            viewmat = viewmat.to(means.device)
            depth = render(
                means,
                rotations,
                scales,
                opaque,
                opaque[:, None],
                viewmat[None],
                intrinsics[None],
                size,
                size,
                antialiased=ANTIALIASED,
            ).depth[0, ..., 0]
            camera = means @ viewmat[:3, :3].T + viewmat[:3, 3]
            pixel = (camera[:, :2] / camera[:, 2:] * focal + size / 2).long().clamp(0, size - 1)
            surface = depth[pixel[:, 1], pixel[:, 0]]
            seen |= (surface > 0) & (camera[:, 2] <= surface + ENCLOSURE_SLACK)
    return ~seen


def _outward_normals(rotations: torch.Tensor) -> torch.Tensor:
    """[N, 3] the posed thin axes (local Z, which the tilt keeps out of the skin)."""
    return quaternion_to_matrix(rotations)[:, :, 2]


def _capture_colors(
    means: torch.Tensor,
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    albedo: torch.Tensor,
    sun_visibility: torch.Tensor,
    lighting: LightingTensors,
) -> torch.Tensor:
    """[N, 3] linear colour in the photos: `shading_torch.relight`'s model with the direct light
    scaled by each Gaussian's visibility of it (cast shadows, which the relit look leaves out)."""
    direct = direct_lighting(means, normals, lighting)
    direct_irradiance = direct.irradiance * sun_visibility[:, None, None]
    irradiance = ambient_irradiance(normals, lighting.ambient_sh) + direct_irradiance.sum(1)
    roughness = torch.full_like(sun_visibility, ROUGHNESS)[:, None]
    f0 = torch.full_like(sun_visibility, 0.08 * SPECULAR)[:, None]
    lobe = specular_brdf(normals[:, None], direct.directions, view_dirs[:, None], roughness, f0)
    return albedo * irradiance / math.pi + torch.einsum("nk,nkc->nc", lobe, direct_irradiance)


def _observe(
    gaussians: _Gaussians,
    photos: list[_Photo],
    depth_photos: list[_Photo],
    vertex_normals: torch.Tensor,
    progress: Progress,
) -> dict[str, torch.Tensor]:
    """Facing-weighted mean linear colours of the Gaussians [N, 3] and vertices [V, 3] where the
    photos see them (each as the person stood in it), with their weights (0 = never seen)."""
    counts = {"gaussian": gaussians.triangle_ids.shape[0], "vertex": gaussians.posed_vertices.shape[0]}
    with torch.no_grad():
        capture = gaussians.posed()
        ones = torch.ones(counts["gaussian"], device=gaussians.device)
        sums = {name: torch.zeros(count, 3, device=gaussians.device) for name, count in counts.items()}
        weights = {name: torch.zeros(count, device=gaussians.device) for name, count in counts.items()}
        for index, (photo, small) in enumerate(zip(photos, depth_photos, strict=True)):
            progress.update(
                0.02 + 0.03 * index / len(photos), "Looking up the Gaussians' colours in the photos"
            )
            means, rotations, scales = gaussians.posed_in(index, capture)
            vertices = gaussians.vertices(index)
            normals = vertex_normals
            if vertices is not gaussians.posed_vertices:
                normals = _vertex_normals(vertices, gaussians.rig_tensors.triangles)
            points = {"gaussian": (means, _outward_normals(rotations)), "vertex": (vertices, normals)}
            depth = render(
                means,
                rotations,
                scales,
                ones,
                ones[:, None],
                small.viewmat,
                small.intrinsics,
                small.width,
                small.height,
                antialiased=ANTIALIASED,
            ).depth[0, ..., 0]
            for name, (positions, point_normals) in points.items():
                camera = positions @ photo.viewmat[0, :3, :3].T + photo.viewmat[0, :3, 3]
                z = camera[:, 2].clamp_min(1e-6)
                pixel = camera[:, :2] / z[:, None] * photo.intrinsics[0, [0, 1], [0, 1]]
                pixel = pixel + photo.intrinsics[0, :2, 2]
                inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < photo.width) & (pixel[:, 1] >= 0)
                inside &= (pixel[:, 1] < photo.height) & (camera[:, 2] > 1e-3)
                scale = torch.tensor([small.width / photo.width, small.height / photo.height])
                column_row = (pixel * scale.to(pixel)).long()
                column = column_row[:, 0].clamp(0, small.width - 1)
                row = column_row[:, 1].clamp(0, small.height - 1)
                surface = depth[row, column]
                limit = surface + DEPTH_SLACK + DEPTH_SLACK_PER_METRE * surface
                unoccluded = (surface > 0) & (camera[:, 2] < limit)
                towards = torch.nn.functional.normalize(photo.position - positions, dim=1)
                facing = (point_normals * towards).sum(1)
                grid = (pixel / torch.tensor([photo.width, photo.height]).to(pixel)) * 2 - 1
                sampled = torch.nn.functional.grid_sample(
                    torch.cat([photo.linear, photo.mask[0]], dim=-1).permute(2, 0, 1)[None],
                    grid[None, None],
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=False,
                )[0, :, 0].T
                weight = facing.clamp_min(0.0) ** 2 * (inside & unoccluded & (facing > MIN_FACING)).float()
                weight = weight * (sampled[:, 3] > MIN_MASK).float()
                sums[name] += weight[:, None] * sampled[:, :3]
                weights[name] += weight
    colors = {name: sums[name] / weights[name].clamp_min(1e-8)[:, None] for name in sums}
    return {
        "gaussian_colors": colors["gaussian"],
        "gaussian_weights": weights["gaussian"],
        "vertex_colors": colors["vertex"],
        "vertex_weights": weights["vertex"],
    }


def _fill_from_seen(
    gaussians: _Gaussians, values: torch.Tensor, seen: torch.Tensor, adjacency: torch.Tensor
) -> torch.Tensor:
    """[N, D] `values` [N, D] with unseen Gaussians' rows replaced from the nearest seen surface."""
    vertex_count = gaussians.posed_vertices.shape[0]
    weights = gaussians.barycentrics * seen.float()[:, None]
    corners = gaussians.corner_vertices.reshape(-1)
    sums = torch.zeros(vertex_count, values.shape[1], device=values.device)
    sums.index_add_(0, corners, (weights[:, :, None] * values[:, None, :]).reshape(-1, values.shape[1]))
    totals = torch.zeros(vertex_count, device=values.device).index_add_(0, corners, weights.reshape(-1))
    known = totals > 1e-3
    vertex_values = _grassfire_fill(sums / totals.clamp_min(1e-8)[:, None], known, adjacency)
    interpolated = (gaussians.barycentrics[:, :, None] * vertex_values[gaussians.corner_vertices]).sum(1)
    return torch.where(seen[:, None], values, interpolated)


def fit_gaussians(
    body: BodyFit,
    preset: Preset,
    device: str = "cpu",
    progress: Progress | None = None,
    seed: int = 0,
    tone: ToneCurve = STANDARD,
) -> GaussianAvatar:
    """Gaussians on `body`'s surface fitted to its photos, with albedo and the photos' lighting.

    body: the fitted rig, capture pose, expressions and photos with cameras (`views.BodyFit`);
    preset: `gaussians` Gaussians, `gaussian_steps` optimisation steps (one photo each), photos at
    most `max_side` pixels; progress: reports the fraction done and raises `Cancelled` when asked.
    tone: the photos' tone curve (`maths/tone.py`): the photos are taken back through it to
    scene-linear light, so that the albedo is the surface's and not the curve's, and the fit's
    renders go through it before they are compared with the photos (and the captured look in the
    SH is the photos' look). Deterministic for a seed on one device with one number of torch threads
    (on CPU, torch splits elementwise maths and sums over more than 32k elements between its
    threads, and a split moves elements between SIMD and scalar code: 1 and 2 threads differ by
    about 1e-6 after ten steps; scripts/torture_cancel.py checks the bit-for-bit case). The
    avatar's provenance holds the capture pose ("capture"), the estimated lighting
    ("capture_lighting", `lights.lighting_to_json`) and the fit's figures ("fit").
    """
    started = time.monotonic()
    progress = progress or Progress()
    if not body.views:
        raise AvatarError("fit_gaussians needs at least one photo.")
    if preset.gaussians < 1 or preset.gaussian_steps < 0:
        raise AvatarError(f"Preset '{preset.name}' needs at least one Gaussian and no negative step count.")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    progress.update(0.0, "Placing Gaussians on the body")

    gaussians = _Gaussians(body, preset.gaussians, rng, device)
    triangles = gaussians.rig_tensors.triangles
    adjacency = _mesh_adjacency(triangles, gaussians.posed_vertices.shape[0])
    full = [_photo(view, preset.max_side, device, tone) for view in body.views]
    coarse = [_photo(view, min(COARSE_SIDE, preset.max_side), device, tone) for view in body.views]

    progress.update(0.02, "Looking up the Gaussians' colours in the photos")
    vertex_normals = _vertex_normals(gaussians.posed_vertices, triangles)
    observed = _observe(gaussians, full, coarse, vertex_normals, progress)
    seen = observed["gaussian_weights"] > 0
    if not seen.any():
        raise AvatarError("No photo shows the fitted body: check the cameras and the body fit.")

    raw_lighting, lighting_residual = _estimate_lighting(
        observed["vertex_colors"],
        observed["vertex_weights"],
        vertex_normals,
        adjacency,
        progress=progress,
        span=(0.05, 0.12),
    )
    capture, exposure = raw_lighting.normalised()
    lighting_tensors = capture.tensors()
    _start_albedo(gaussians, observed["gaussian_colors"], seen, capture, adjacency)

    corrections = _optimise(
        gaussians, full, coarse, lighting_tensors, preset.gaussian_steps, generator, progress, tone
    )

    progress.update(0.95, "Finding what the photos show")
    # Gaussians the depth test called seen but that ended up under others (inner layers, the
    # mouth's inside behind closed lips) got no say in any photo: their colours drifted freely,
    # and they show when the body moves (an open jaw). They take the seen surface's colour too.
    seen &= _photo_weights(gaussians, full, corrections) >= MIN_PHOTO_WEIGHT
    progress.update(0.96, "Filling what no photo saw")
    avatar = _finish(gaussians, seen, adjacency, capture, lighting_tensors, full, body, progress, tone)
    avatar.provenance["fit"] |= {
        "tone_curve": tone.name,
        "seconds": round(time.monotonic() - started, 1),
        "steps": preset.gaussian_steps,
        "seen_fraction": round(float(seen.float().mean()), 4),
        "lighting_residual": round(lighting_residual, 4),
        "exposure": [round(float(value), 4) for value in exposure],
        "camera_corrections_px": [
            round(correction.pixels(photo), 2) for correction, photo in zip(corrections, full, strict=True)
        ],
    }
    progress.update(1.0, "Gaussians fitted")
    return avatar


def _start_albedo(
    gaussians: _Gaussians,
    colors: torch.Tensor,  # [N, 3] observed linear colour per Gaussian
    seen: torch.Tensor,  # [N] bool
    capture: _CaptureLighting,
    adjacency: torch.Tensor,  # [V, V] sparse
) -> None:
    """The Gaussians' albedo before optimising: the observed colour over the capture shading, and
    the nearest seen surface's where no photo saw them."""
    with torch.no_grad():
        _, rotations, _ = gaussians.posed()
        shading = capture.irradiance(_outward_normals(rotations)) / math.pi
        albedo = (colors / shading.clamp_min(MIN_INITIAL_SHADING)).clamp(*INITIAL_ALBEDO_RANGE)
        albedo = _fill_from_seen(gaussians, albedo, seen, adjacency)
        gaussians.albedo_logit = torch.logit(albedo)


def _parameter_groups(
    gaussians: _Gaussians, corrections: list[_CameraCorrection], rates: LearningRates
) -> list[dict]:
    """Adam's parameter groups: each Gaussian tensor with the rate of its name, then every photo's
    camera turn and shift."""
    groups = []
    for name, parameter in gaussians.named_parameters().items():
        parameter.requires_grad_(True)
        groups.append({"params": [parameter], "lr": getattr(rates, name)})
    groups.append({"params": [correction.turns for correction in corrections], "lr": rates.camera_turns})
    groups.append({"params": [correction.shifts for correction in corrections], "lr": rates.camera_shifts})
    return groups


def _optimise(
    gaussians: _Gaussians,
    full: list[_Photo],
    coarse: list[_Photo],
    lighting: LightingTensors,
    steps: int,
    generator: torch.Generator,
    progress: Progress,
    tone: ToneCurve,
) -> list[_CameraCorrection]:
    """Stage 4: `steps` Adam steps, one photo each in shuffled rounds, on the coarse photos first;
    returns each photo's fitted camera correction."""
    corrections = [_CameraCorrection(gaussians.device) for _ in full]
    # A photo's correction only has a gradient on its own steps; Adam leaves the others alone.
    optimiser = torch.optim.Adam(_parameter_groups(gaussians, corrections, LEARNING_RATES))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: FINAL_RATE ** (step / max(steps, 1)))
    order: list[int] = []
    for step in range(steps):
        if not order:
            order = torch.randperm(len(full), generator=generator).tolist()
        index = order.pop()
        photo = (coarse if step < COARSE_FRACTION * steps else full)[index]
        optimiser.zero_grad(set_to_none=True)
        loss = _step_loss(gaussians, photo, lighting, corrections[index], tone, index)
        loss.backward()
        optimiser.step()
        schedule.step()
        progress.update(
            0.15 + 0.8 * (step + 1) / max(steps, 1), f"Fitting Gaussians: step {step + 1}/{steps}"
        )
    return corrections


class _CameraCorrection:
    """A photo's camera refinement: a turn [3] (rotation vector, radians) and a shift [3] (metres),
    both in the camera's frame, applied after its world-to-camera transform."""

    def __init__(self, device: str) -> None:
        self.turns = torch.zeros(3, device=device, requires_grad=True)
        self.shifts = torch.zeros(3, device=device, requires_grad=True)

    def move(
        self, photo: _Photo, means: torch.Tensor, rotations: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means [N, 3] and rotations [N, 4] moved so that the photo's uncorrected camera sees them
        as the corrected camera sees the originals."""
        to_camera = photo.viewmat[0, :3, :3]
        turn = to_camera.T @ self.turns  # the same turn about the camera centre, in world axes
        angle = turn.norm()
        half = 0.5 * angle
        # sin(x/2)/x, written so its gradient stays finite at 0 (every fit starts there).
        factor = torch.where(angle > 1e-6, torch.sin(half) / angle.clamp_min(1e-6), 0.5 - angle**2 / 48)
        quaternion = torch.cat([torch.cos(half)[None], factor * turn])
        centre = photo.position
        moved = (means - centre) @ quaternion_to_matrix(quaternion).T + centre + to_camera.T @ self.shifts
        return moved, quaternion_multiply(quaternion.expand_as(rotations), rotations)

    def prior(self) -> torch.Tensor:
        return CAMERA_TURN_PRIOR * self.turns.square().sum() + CAMERA_SHIFT_PRIOR * self.shifts.square().sum()

    def pixels(self, photo: _Photo) -> float:
        """The correction's rough size in pixels, taking the person to be 2.5 m away (for the log)."""
        focal = float(photo.intrinsics[0, 0, 0])
        with torch.no_grad():
            return focal * (float(self.turns.norm()) + float(self.shifts.norm()) / 2.5)


def _step_loss(
    gaussians: _Gaussians,
    photo: _Photo,
    lighting: LightingTensors,
    correction: _CameraCorrection,
    tone: ToneCurve = STANDARD,
    index: int | None = None,
) -> torch.Tensor:
    """The photometric loss of one photo (through its camera correction; `index`: which of the
    body's views it is, posed as the person stood in it) plus the regularisers (module docstring,
    stage 4)."""
    means, rotations, scales = gaussians.posed(index)
    normals = _outward_normals(rotations)
    view_dirs = torch.nn.functional.normalize(photo.position - means, dim=1)
    visibility = torch.sigmoid(gaussians.visibility_logit)
    linear = _capture_colors(means, normals, view_dirs, gaussians.albedo(), visibility, lighting)
    opacities = gaussians.opacities()
    means, rotations = correction.move(photo, means, rotations)
    # Discs facing away from the camera lie behind the body's near side: leaving them out halves
    # the rasterizer's work and changes no pixel (the margin keeps grazing discs at silhouettes).
    # The mouth's mesh is left out too: behind closed lips it has nothing to explain, and its
    # discs poking through thin lips took colours (blue-grey) that showed in other views.
    front = (((normals * view_dirs).sum(1) > MIN_RENDERED_FACING) & ~gaussians.in_mouth).nonzero().squeeze(1)
    display = tone_encode(tone, linear[front])
    result = render(
        means[front],
        rotations[front],
        scales[front],
        opacities[front],
        display,
        photo.viewmat,
        photo.intrinsics,
        photo.width,
        photo.height,
        background=torch.zeros(3, device=means.device),
        antialiased=ANTIALIASED,
    )
    # Colour is compared inside the mask (leaving out its rim, tried, cost 0.15 dB held-out: the
    # outline's colour went unfitted); alpha is fitted to the mask everywhere.
    inside = photo.inside
    difference = ((result.color - photo.target).abs() * inside).sum() / (3 * inside.sum()).clamp_min(1.0)
    photometric = (1 - SSIM_WEIGHT) * difference
    photometric = photometric + SSIM_WEIGHT * (1 - ssim(result.color * inside, photo.target * inside))
    coverage = (result.alpha - photo.mask).abs().mean()

    tangent = gaussians.tangent_log_scales
    low, high = math.log(SCALE_BAND[0]), math.log(SCALE_BAND[1])
    scale_band = (torch.relu(low - tangent) + torch.relu(tangent - high)).mean()
    anisotropy = torch.relu((tangent[:, 0] - tangent[:, 1]).abs() - math.log(MAX_ANISOTROPY)).mean()
    offsets = (gaussians.normal_offsets() / OFFSET_SCALE).square().mean()
    binary_opacity = (opacities * (1 - opacities)).mean()
    shadows = (1 - visibility).mean()
    weights = REGULARISER_WEIGHTS
    return (
        photometric
        + weights.coverage * coverage
        + weights.scale_band * (scale_band + anisotropy)
        + weights.normal_offsets * offsets
        + weights.binary_opacity * binary_opacity
        + weights.shadows * shadows
        + correction.prior()
    )


def _mouth_inside(gaussians: _Gaussians, rig, seen: torch.Tensor) -> torch.Tensor:
    """[N] bool: unseen Gaussians on the part of the mesh that jawOpen moves, i.e. inside the mouth
    (the outside of the lips and chin is in the photos), and those on the mouth's own mesh (teeth,
    tongue: `_Gaussians.in_mouth`). All False on rigs without a jawOpen shape."""
    if "jawOpen" not in rig.expression_names:
        return torch.zeros_like(seen)
    moved = torch.as_tensor(_jaw_moves(rig), device=seen.device)
    return (moved[gaussians.corner_vertices].any(dim=1) & ~seen) | gaussians.in_mouth


def _jaw_moves(rig) -> np.ndarray:
    """[V] bool: the vertices jawOpen moves by more than MOUTH_MOVES (none without jawOpen)."""
    if "jawOpen" not in rig.expression_names:
        return np.zeros(rig.vertex_count, bool)
    deltas = rig.expression_deltas[rig.expression_names.index("jawOpen")]
    return np.linalg.norm(deltas, axis=1) > MOUTH_MOVES


def mouth_vertices(rig) -> np.ndarray:
    """[V] bool: the vertices of the mouth's own mesh: the skin's separate pieces (not the body's
    surface, the largest) that jawOpen moves, such as Anny's teeth and tongue (eyes stay still)."""
    result = np.zeros(rig.vertex_count, bool)
    skin = rig.skin_vertex_count
    triangles = rig.triangles[(rig.triangles < skin).all(axis=1)]
    if len(triangles) == 0:
        return result
    labels = connected_components(triangles, skin)
    pieces, sizes = np.unique(labels[np.unique(triangles)], return_counts=True)
    moved = _jaw_moves(rig)[:skin]
    for piece in pieces[pieces != pieces[np.argmax(sizes)]]:
        members = labels == piece
        if moved[members].any():
            result[:skin][members] = True
    return result


def _photo_weights(
    gaussians: _Gaussians, photos: list[_Photo], corrections: list[_CameraCorrection]
) -> torch.Tensor:
    """[N] each Gaussian's blending weight (opacity x falloff x transmittance) summed over the
    pixels of every photo: the gradient of the rendered image of unit colours."""
    with torch.no_grad():
        opacities = gaussians.opacities()
        capture = gaussians.posed()
    totals = torch.zeros(opacities.shape[0], device=opacities.device)
    for index, (photo, correction) in enumerate(zip(photos, corrections, strict=True)):
        with torch.no_grad():
            means, rotations, scales = gaussians.posed_in(index, capture)
            moved, turned = correction.move(photo, means, rotations)
        unit = torch.ones(means.shape[0], 1, device=means.device, requires_grad=True)
        result = render(
            moved,
            turned,
            scales,
            opacities,
            unit,
            photo.viewmat,
            photo.intrinsics,
            photo.width,
            photo.height,
            background=torch.zeros(1, device=means.device),
            antialiased=ANTIALIASED,
        )
        (weights,) = torch.autograd.grad(result.color.sum(), unit)
        totals += weights[:, 0]
    return totals


def _finish(
    gaussians: _Gaussians,
    seen: torch.Tensor,
    adjacency: torch.Tensor,
    capture: _CaptureLighting,
    lighting: LightingTensors,
    photos: list[_Photo],
    body: BodyFit,
    progress: Progress,
    tone: ToneCurve,
) -> GaussianAvatar:
    """The fitted avatar: unseen Gaussians filled, bounds enforced, the captured look in the SH."""
    with torch.no_grad():
        albedo = _fill_from_seen(gaussians, gaussians.albedo(), seen, adjacency).clamp(0, 1)
        visibility = torch.where(seen, torch.sigmoid(gaussians.visibility_logit), 1.0)
        tangent = gaussians.tangent_log_scales
        tangent = tangent.clamp(math.log(SCALE_BAND[0]), math.log(SCALE_BAND[1]))
        longest = tangent.max(dim=1, keepdim=True).values
        gaussians.tangent_log_scales = torch.maximum(tangent, longest - math.log(MAX_ANISOTROPY))
        means, rotations, scales = gaussians.posed()
        normals = _outward_normals(rotations)
        # The captured look is seen from every side: evaluate the shading facing the Gaussian.
        linear = _capture_colors(means, normals, normals, albedo, visibility, lighting)
        mouth = _mouth_inside(gaussians, body.rig, seen)
        albedo[mouth] = linear[mouth] = torch.tensor(MOUTH_ALBEDO, device=albedo.device)
        sh = ((tone_encode(tone, linear) - 0.5) / SH_C0)[:, None, :]
        count = gaussians.triangle_ids.shape[0]
        fit_psnrs = []
        opacities = gaussians.opacities()
        for index, photo in enumerate(photos):
            progress.update(0.96 + 0.04 * index / len(photos), "Scoring the fit against the photos")
            photo_means, photo_rotations, photo_scales = gaussians.posed_in(index, (means, rotations, scales))
            result = render(
                photo_means,
                photo_rotations,
                photo_scales,
                opacities,
                sh,
                photo.viewmat,
                photo.intrinsics,
                photo.width,
                photo.height,
                sh_degree=0,
                background=torch.zeros(3, device=means.device),
                antialiased=ANTIALIASED,
            )
            fit_psnrs.append(psnr(result.color[0], photo.target[0], photo.mask[0, ..., 0] > 0.5))

    def array(tensor: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(tensor.detach().cpu().numpy().astype(np.float32))

    return GaussianAvatar(
        rig=body.rig,
        triangle_ids=array(gaussians.triangle_ids).astype(np.int32),
        barycentrics=array(gaussians.barycentrics),
        normal_offsets=array(gaussians.normal_offsets()),
        rotations=array(gaussians.local_rotations()),
        log_scales=array(gaussians.log_scales()),
        opacities=array(opacities).clip(0, 1),
        albedo=array(albedo),
        roughness=np.full(count, ROUGHNESS, np.float32),
        specular=np.full(count, SPECULAR, np.float32),
        sh=array(sh),
        antialiased=ANTIALIASED,
        provenance={
            "source": "photos",
            "capture": capture_to_json(
                body.pose, np.asarray(body.expressions), list(body.rig.expression_names)
            ),
            "capture_lighting": lighting_to_json(capture.lighting()),
            "fit": {"photo_psnr_db": [round(value, 2) for value in fit_psnrs]},
        },
    )
