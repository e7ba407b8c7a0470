"""Cameras: structure-from-motion on the person, and aligning its cameras to the body's.

COLMAP (through pycolmap) matches features between the photos and recovers every photo's camera
and a sparse cloud of points, up to an unknown similarity (scale, rotation, translation). Features
are kept only on the person (inside the person mask): in a turn-around ("the person turns, the
camera stays") a static background would otherwise dominate and give the camera's motion relative
to the room, which is none; on the person alone the result is the camera's motion relative to the
body, which is what fitting needs in both kinds of capture.

Structure-from-motion is a bonus, not a requirement: photos that overlap too little, a person with
plain clothes or a degenerate capture give no usable result, and the caller falls back to the
per-photo cameras the body fitter estimates. `structure_from_motion` says so by returning None
with a logged reason; it never raises on unhelpful photos. When it succeeds, `align_cameras`
finds the similarity that carries its cameras onto the fitter's (robust to a few wrong ones), and
`in_reference_frame` expresses them in the body's world frame. Clothes that look the same from
every side (horizontal stripes) can fold the back views onto the front ones in SfM; the
alignment reports those photos as outliers rather than trusting them.

The camera model is SIMPLE_PINHOLE (one focal length, principal point at the centre): the renderer
is a pinhole, features lie on the person near the image centre where radial distortion is too
weakly observed to estimate, and phone photos come undistorted. Photos of the same size share one
camera (one focal length for all), as they do in a video or a burst from one phone; photos of
different sizes get one camera per size.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..maths.alignment import Similarity
from ..maths.cameras import Camera
from ..maths.colour import linear_to_srgb, srgb_to_linear
from ..progress import Cancelled, Progress
from .ingest import Photo

logger = logging.getLogger(__name__)

MIN_PHOTOS = 3
MIN_REGISTERED_FRACTION = 0.5  # of the photos; fewer registered photos tie too little together
MIN_POINTS = 50  # sparse points; fewer is a reconstruction held up by a handful of matches
MAX_REPROJECTION_ERROR_PX = 2.0
MIN_BASELINE = 0.05  # spread of the camera centres relative to their distance to the points
MASK_THRESHOLD = 0.5
MASK_MARGIN = 0.004  # of the image's longer side: keypoints start this far inside the silhouette
BACKGROUND_GREY = 0.5  # sRGB value the background is painted with
CAMERA_MODEL = "SIMPLE_PINHOLE"
# The person fills a small part of each photo, so pairs have fewer matches than COLMAP's defaults
# (tuned for whole scenes) ask of the first pair; 50 inliers still fix an essential matrix well.
INIT_MIN_INLIERS = 50
REGISTER_MIN_INLIERS = 20  # 2D-3D matches to place a further photo (COLMAP: 30)
RANSAC_MAX_ERROR = 0.004  # two-view epipolar tolerance, as a fraction of the longer side
EXHAUSTIVE_MAX_PHOTOS = 40  # every pair is matched up to here; pairs grow with the square of the count
SEQUENTIAL_OVERLAP = 10  # beyond it, each photo is matched with this many that follow it (and more)
SEED = 0  # COLMAP's RANSAC and mapper are randomised; fixed, runs differ only by thread timing


@dataclass(frozen=True)
class SfmCameras:
    """The registered photos' cameras and the sparse points, in one arbitrary similarity frame."""

    cameras: dict[str, Camera]  # photo source -> camera (OpenCV viewmat, pixel intrinsics K, size)
    points: np.ndarray  # [P, 3] float32 sparse points
    point_colors: np.ndarray  # [P, 3] float32 linear-light colours of the points
    photo_count: int  # photos given, registered or not
    reprojection_error_px: float  # mean over all point observations

    @property
    def registered(self) -> int:
        return len(self.cameras)

    @property
    def viewmats(self) -> dict[str, np.ndarray]:
        """Photo source -> [4, 4] world-to-camera matrix."""
        return {source: camera.viewmat for source, camera in self.cameras.items()}

    @property
    def focal_px(self) -> float:
        """The median focal length in pixels (the focal length, when the photos share one camera)."""
        return float(np.median([camera.intrinsics[0, 0] for camera in self.cameras.values()]))


@dataclass(frozen=True)
class CameraAlignment:
    """How the SfM frame maps onto a reference frame, and how well each shared photo agrees."""

    similarity: Similarity  # x_reference = scale * rotation @ x_sfm + translation
    rotation_errors_deg: dict[str, float]  # per shared photo: SfM camera rotation vs the reference
    centre_errors: dict[str, float]  # per shared photo: camera centre distance, reference units
    inliers: frozenset[str]  # the photos the similarity was fitted to

    @property
    def scale(self) -> float:
        return self.similarity.scale

    @property
    def rotation(self) -> np.ndarray:
        return self.similarity.rotation

    @property
    def translation(self) -> np.ndarray:
        return self.similarity.translation


def structure_from_motion(
    photos: Sequence[Photo],
    masks: Mapping[str, np.ndarray] | None,
    workdir: str | Path,
    progress: Progress | None = None,
) -> SfmCameras | None:
    """The photos' cameras from COLMAP, or None (with the reason logged) when there is no good result.

    `masks` maps each photo's source to its [H, W] person probability; features are kept only on
    the person, and the background is painted grey. None keeps every pixel (for scenes without a
    person). `workdir` receives the 8-bit sRGB images, masks and COLMAP's database under
    `workdir/sfm` (replaced on each call).
    Scale and world frame of the result are arbitrary.
    """
    progress = progress or Progress()
    if len(photos) < MIN_PHOTOS:
        logger.info(
            "Structure-from-motion skipped: %d photos, it needs at least %d.", len(photos), MIN_PHOTOS
        )
        return None
    try:
        import pycolmap
    except ImportError:
        logger.warning("Structure-from-motion skipped: pycolmap is not installed.")
        return None

    # COLMAP logs every step at INFO, and "Failed to create any sparse model" at ERROR when photos
    # do not tie together, which is an expected outcome here (the body then places the cameras);
    # this module logs what happened in its own words, so only COLMAP's fatal messages go through.
    quiet, pycolmap.logging.minloglevel = pycolmap.logging.minloglevel, pycolmap.logging.FATAL
    try:
        return _structure_from_motion(pycolmap, photos, masks, Path(workdir) / "sfm", progress)
    finally:
        pycolmap.logging.minloglevel = quiet


def _structure_from_motion(
    pycolmap,
    photos: Sequence[Photo],
    masks: Mapping[str, np.ndarray] | None,
    folder: Path,
    progress: Progress,
) -> SfmCameras | None:
    shutil.rmtree(folder, ignore_errors=True)
    names = _write_inputs(photos, masks, folder)
    progress.update(0.05, "Wrote the photos for structure-from-motion")
    database = folder / "database.db"
    _extract_features(pycolmap, database, folder, names, with_masks=masks is not None)
    progress.update(0.35, "Found features on the person")
    longer_side = max(max(photo.pixels.shape[:2]) for photo in photos)
    _match_features(pycolmap, database, folder, names, longer_side)
    progress.update(0.55, "Matched features between the photos")
    models = _incremental_mapping(pycolmap, database, folder, len(photos), progress)
    if not models:
        logger.info("Structure-from-motion found no reconstruction: the photos share too few features.")
        return None
    model = max(models.values(), key=lambda reconstruction: reconstruction.num_reg_images())
    result = _sfm_cameras(model, names, len(photos))
    reason = _unusable(result)
    if reason:
        logger.info("Structure-from-motion result not used: %s", reason)
        return None
    progress.update(1.0, f"Placed {result.registered} of {len(photos)} photos")
    logger.info(
        "Structure-from-motion placed %d of %d photos, %d points, %.2f px reprojection error, focal %.0f px",
        result.registered,
        len(photos),
        len(result.points),
        result.reprojection_error_px,
        result.focal_px,
    )
    return result


def _extract_features(
    pycolmap, database: Path, folder: Path, names: Mapping[str, str], with_masks: bool
) -> None:
    """SIFT features of the written images into `database` (only inside the masks, when written)."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = CAMERA_MODEL
    if with_masks:
        reader.mask_path = str(folder / "masks")
    # A body is curved and the photos are far apart in angle: affine-adapted SIFT (COLMAP's advice
    # for wide baselines) placed more photos in trials. Domain-size pooling, the other half of
    # that advice, doubled the extraction time and placed no more, so it stays off.
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.estimate_affine_shape = True
    # One camera per folder, and the photos are foldered by size: same-size photos share a focal.
    pycolmap.extract_features(
        database,
        folder / "images",
        image_names=list(names),
        camera_mode=pycolmap.CameraMode.PER_FOLDER,
        reader_options=reader,
        extraction_options=extraction,
    )


def _match_features(
    pycolmap, database: Path, folder: Path, names: Mapping[str, str], longer_side: int
) -> None:
    """Geometrically verified matches between the photos: every pair, or neighbours in a long video."""
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = SEED
    # COLMAP's 4 px suits megapixel photos; on small ones it lets chance matches pass as inliers.
    verification.ransac.max_error = max(1.0, RANSAC_MAX_ERROR * longer_side)
    matching = pycolmap.FeatureMatchingOptions()
    matching.guided_matching = True
    if len(names) <= EXHAUSTIVE_MAX_PHOTOS:
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification)
        return
    pairs_path = folder / "pairs.txt"
    pairs_path.write_text("".join(f"{first} {second}\n" for first, second in _neighbour_pairs(list(names))))
    pairing = pycolmap.ImportedPairingOptions()
    pairing.match_list_path = str(pairs_path)
    pycolmap.match_image_pairs(
        database, matching_options=matching, pairing_options=pairing, verification_options=verification
    )


def _incremental_mapping(
    pycolmap, database: Path, folder: Path, photo_count: int, progress: Progress
) -> dict:
    """COLMAP's reconstructions (index -> Reconstruction; empty when none), reporting each placed photo."""
    options = pycolmap.IncrementalPipelineOptions()
    options.min_model_size = MIN_PHOTOS
    options.random_seed = SEED
    options.mapper.init_min_num_inliers = INIT_MIN_INLIERS
    options.mapper.abs_pose_min_num_inliers = REGISTER_MIN_INLIERS
    # COLMAP 4 can place a photo that sees too few reconstructed points from its two-view
    # geometry alone; such a placement is a guess the fitter would then trust, so leave it out.
    options.structure_less_registration_fallback = False
    token = pycolmap.CancellationToken()
    registered = 0

    def next_image() -> None:
        # Runs inside COLMAP's C++ loop: never let an exception out, ask COLMAP to stop instead.
        nonlocal registered
        registered += 1
        try:
            progress.update(0.55 + 0.4 * min(registered / photo_count, 1.0), f"Placed {registered} photos")
        except Cancelled:
            token.cancel()

    try:
        return pycolmap.incremental_mapping(
            database,
            folder / "images",
            folder / "sparse",
            options=options,
            next_image_callback=next_image,
            cancellation_token=token,
        )
    except InterruptedError:  # how pycolmap answers a cancelled token
        progress.check_cancelled()
        raise


def _neighbour_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs for many photos, taken as a video's frames in order: each with the next few and with
    those 2, 4, 8, ... further on, wrapping round so that a full turn closes its loop (COLMAP's own
    sequential matcher does not wrap, and the cameras drifted ~4 degrees round a turn without it).
    """
    count = len(names)
    steps = set(range(1, SEQUENTIAL_OVERLAP + 1)) | {2**power for power in range(count.bit_length())}
    pairs = {
        tuple(sorted((names[index], names[(index + step) % count])))
        for index in range(count)
        for step in steps
        if step < count
    }
    return sorted(pairs)


def _write_inputs(
    photos: Sequence[Photo], masks: Mapping[str, np.ndarray] | None, folder: Path
) -> dict[str, str]:
    """Write 8-bit sRGB images (and masks) COLMAP can read; image name -> photo source."""
    import cv2
    from PIL import Image

    names: dict[str, str] = {}
    for index, photo in enumerate(photos):
        height, width = photo.pixels.shape[:2]
        # Sources can hold any characters ("clip.mp4#frame 3"); COLMAP gets plain names.
        name = f"{width}x{height}/{index:04d}.png"
        names[name] = photo.source
        srgb = linear_to_srgb(np.clip(photo.pixels, 0.0, 1.0))
        if masks is not None:
            if photo.source not in masks:
                raise ValueError(f"No person mask for '{photo.source}'.")
            person = np.clip(np.asarray(masks[photo.source], np.float32), 0.0, 1.0)
            if person.shape != (height, width):
                person = cv2.resize(person, (width, height), interpolation=cv2.INTER_LINEAR)
            # A SIFT descriptor spans many pixels: near the silhouette it would describe the room
            # behind as much as the person. Painting the room flat leaves only the person in it.
            srgb = srgb * person[..., None] + BACKGROUND_GREY * (1 - person[..., None])
            # Keypoints only inside the silhouette: on its edge they sit on no fixed point of the
            # body (the outline slides over the body as it turns) and a static room would pin them.
            radius = max(1, round(MASK_MARGIN * max(width, height)))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            keep = cv2.erode((person > MASK_THRESHOLD).astype(np.uint8), kernel)
            # COLMAP's convention: the mask of images/a/b.png is masks/a/b.png.png; zero means ignore.
            mask_path = folder / "masks" / f"{name}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(keep * 255).save(mask_path)
        image_path = folder / "images" / name
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_to_bytes(srgb)).save(image_path)
    return names


def _to_bytes(srgb: np.ndarray) -> np.ndarray:
    return (np.clip(srgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _sfm_cameras(model, names: Mapping[str, str], photo_count: int) -> SfmCameras:
    """SfmCameras from a pycolmap Reconstruction."""
    cameras: dict[str, Camera] = {}
    for image in model.images.values():
        if not image.has_pose:
            continue
        viewmat = np.eye(4)
        viewmat[:3] = np.asarray(image.cam_from_world().matrix(), np.float64)
        colmap_camera = model.cameras[image.camera_id]
        source = names[image.name]
        cameras[source] = Camera(
            name=source,
            position=-viewmat[:3, :3].T @ viewmat[:3, 3],
            viewmat=viewmat,
            intrinsics=np.asarray(colmap_camera.calibration_matrix(), np.float64),
            width=int(colmap_camera.width),
            height=int(colmap_camera.height),
        )
    points = list(model.points3D.values())
    xyz = np.array([point.xyz for point in points], np.float32).reshape(-1, 3)
    colours = np.array([point.color for point in points], np.float32).reshape(-1, 3) / 255.0
    return SfmCameras(
        cameras=dict(sorted(cameras.items())),
        points=xyz,
        point_colors=srgb_to_linear(colours).astype(np.float32),
        photo_count=photo_count,
        reprojection_error_px=float(model.compute_mean_reprojection_error()),
    )


def _unusable(result: SfmCameras) -> str | None:
    """Why a reconstruction cannot be trusted, or None when it can."""
    needed = max(MIN_PHOTOS, math.ceil(MIN_REGISTERED_FRACTION * result.photo_count))
    if result.registered < needed:
        return f"only {result.registered} of {result.photo_count} photos were placed (needs {needed})"
    if len(result.points) < MIN_POINTS:
        return f"only {len(result.points)} points were reconstructed (needs {MIN_POINTS})"
    if not result.reprojection_error_px <= MAX_REPROJECTION_ERROR_PX:
        return f"the reprojection error is {result.reprojection_error_px:.2f} px"
    centres = np.array([camera.position for camera in result.cameras.values()])
    spread = float(np.sqrt(((centres - centres.mean(0)) ** 2).sum(1).mean()))
    distance = float(np.median(np.linalg.norm(centres - np.median(result.points, axis=0), axis=1)))
    if not spread > MIN_BASELINE * distance:
        return "the cameras barely moved relative to the person (no baseline to triangulate from)"
    return None


def align_cameras(
    sfm: SfmCameras,
    reference: Mapping[str, np.ndarray],
    rotation_tolerance_deg: float = 10.0,
    centre_tolerance: float = 0.1,
) -> CameraAlignment:
    """The similarity carrying the SfM cameras onto `reference` (source -> [4, 4] viewmat).

    Fitted to camera rotations and centres together, so it holds when the centres alone are
    nearly collinear. Robust to a few wrong reference cameras: photos whose rotation error exceeds
    max(`rotation_tolerance_deg`, 3 x the median) or whose centre error exceeds
    max(`centre_tolerance` x the reference cameras' spread, 3 x the median) are left out of the fit
    (their errors are still reported). Needs at least three photos in both sets.
    """
    shared = sorted(set(sfm.cameras) & set(reference))
    if len(shared) < MIN_PHOTOS:
        raise ValueError(f"Aligning cameras needs at least {MIN_PHOTOS} shared photos, got {len(shared)}.")
    sfm_views = np.array([sfm.cameras[source].viewmat for source in shared], np.float64)
    reference_views = np.array([np.asarray(reference[source], np.float64) for source in shared])
    # Each photo alone says how the SfM world turns into the reference world: R_ref^T R_sfm.
    turns = np.einsum("nji,njk->nik", reference_views[:, :3, :3], sfm_views[:, :3, :3])
    sfm_centres = _centres(sfm_views)
    reference_centres = _centres(reference_views)
    reference_spread = float(np.sqrt(((reference_centres - reference_centres.mean(0)) ** 2).sum(1).mean()))

    # Start from the photo whose turn agrees best with the others (a medoid), so that a wrong
    # reference camera cannot drag the first estimate; keep the photos that agree with it.
    pairwise = _angles_deg(np.einsum("aij,bkj->abik", turns, turns))
    start = turns[np.argmin(np.median(pairwise, axis=1))]
    start_errors = _angles_deg(np.einsum("nij,kj->nik", turns, start))
    inliers = start_errors <= max(rotation_tolerance_deg, 3 * float(np.median(start_errors)))
    for _ in range(10):
        rotation, scale, translation = _fit_similarity(
            turns[inliers], sfm_centres[inliers], reference_centres[inliers]
        )
        rotation_errors = _angles_deg(np.einsum("nij,kj->nik", turns, rotation))
        centre_errors = np.linalg.norm(
            scale * sfm_centres @ rotation.T + translation - reference_centres, axis=1
        )
        # Medians over the current inliers: with many wrong photos a median over all is itself wrong.
        refit = (
            rotation_errors <= max(rotation_tolerance_deg, 3 * float(np.median(rotation_errors[inliers])))
        ) & (
            centre_errors
            <= max(centre_tolerance * reference_spread, 3 * float(np.median(centre_errors[inliers])))
        )
        if refit.sum() < MIN_PHOTOS or np.array_equal(refit, inliers):
            break
        inliers = refit
    return CameraAlignment(
        similarity=Similarity(scale=scale, rotation=rotation, translation=translation),
        rotation_errors_deg={
            source: float(error) for source, error in zip(shared, rotation_errors, strict=True)
        },
        centre_errors={source: float(error) for source, error in zip(shared, centre_errors, strict=True)},
        inliers=frozenset(source for source, keep in zip(shared, inliers, strict=True) if keep),
    )


def _centres(viewmats: np.ndarray) -> np.ndarray:
    """[N, 3] camera centres of [N, 4, 4] world-to-camera matrices."""
    return -np.einsum("nji,nj->ni", viewmats[:, :3, :3], viewmats[:, :3, 3])


def _angles_deg(rotations: np.ndarray) -> np.ndarray:
    """[...] rotation angles in degrees of [..., 3, 3] rotation matrices."""
    cosine = (np.trace(rotations, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _fit_similarity(
    turns: np.ndarray, sfm_centres: np.ndarray, reference_centres: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """Rotation, scale, translation agreeing best with per-photo turns [N,3,3] and centres [N,3].

    The rotation maximises trace(R^T H), with H summing the turns and the centres' cross-covariance
    (centres scaled to unit spread, so a photo's centre weighs as much as its rotation): Procrustes.
    """
    sfm_offsets = sfm_centres - sfm_centres.mean(0)
    reference_offsets = reference_centres - reference_centres.mean(0)
    sfm_spread = max(float(np.sqrt((sfm_offsets**2).sum(1).mean())), 1e-12)
    reference_spread = max(float(np.sqrt((reference_offsets**2).sum(1).mean())), 1e-12)
    cross = turns.sum(0) + (reference_offsets / reference_spread).T @ (sfm_offsets / sfm_spread)
    u, _, vt = np.linalg.svd(cross)
    rotation = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    turned = sfm_offsets @ rotation.T
    scale = float((reference_offsets * turned).sum() / max((sfm_offsets**2).sum(), 1e-12))
    translation = reference_centres.mean(0) - scale * rotation @ sfm_centres.mean(0)
    return rotation, scale, translation


def in_reference_frame(sfm: SfmCameras, similarity: Similarity) -> SfmCameras:
    """The SfM cameras and points carried into the reference frame (`CameraAlignment.similarity`)."""
    cameras = {}
    for source, camera in sfm.cameras.items():
        viewmat = np.eye(4)
        # x_cam (reference units) = scale * (R_sfm x_sfm + t_sfm), with x_sfm = R^T (x_ref - t) / scale.
        viewmat[:3, :3] = camera.viewmat[:3, :3] @ similarity.rotation.T
        viewmat[:3, 3] = similarity.scale * camera.viewmat[:3, 3] - viewmat[:3, :3] @ similarity.translation
        cameras[source] = Camera(
            name=camera.name,
            position=similarity.apply(camera.position[None])[0],
            viewmat=viewmat,
            intrinsics=camera.intrinsics,
            width=camera.width,
            height=camera.height,
        )
    return SfmCameras(
        cameras=cameras,
        points=similarity.apply(sfm.points).astype(np.float32),
        point_colors=sfm.point_colors,
        photo_count=sfm.photo_count,
        reprojection_error_px=sfm.reprojection_error_px,
    )
