"""Perceive: the person in each photo, as 2D body, hand and face landmarks and a person matte.

MediaPipe Holistic 0.10.21 runs offline (its models ship inside the wheel). On real photographs
it finds the body nearly always but the hands and the face only about 70 % of the time (side and
back views, small hands), so hands and face are optional here and fitting must use them only
where found. A photo without a person, or with several (a second person-sized region in the
mask, or a second person found once the first is painted out), is reported and skipped: fitting
assumes one subject.

MediaPipe's own mask is coarse (computed at low resolution): it decides who is in the picture,
and, when asked (`build --matte`), `matte.refine_matte` refines it at the person's edges and takes
the backdrop's colour out of the person's (green-screen spill, the wall mixed into the outline);
the refined matte and those colours are then what the later stages fit against.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import AvatarError
from ..maths.colour import linear_to_srgb
from ..progress import Progress
from .ingest import Photo
from .matte import DEFAULT_COMPLETION, CompletionSettings, MatteSettings, complete_mask, refine_matte

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5
SECOND_PERSON_FRACTION = 0.25  # a second mask region this large (relative to the first) is a person
MIN_PERSON_FRACTION = 0.01  # of the image; smaller detections are noise or far background people
POSE_LANDMARKS = {
    "nose": 0, "shoulder.L": 11, "shoulder.R": 12, "elbow.L": 13, "elbow.R": 14, "wrist.L": 15,
    "wrist.R": 16, "hip.L": 23, "hip.R": 24, "knee.L": 25, "knee.R": 26, "ankle.L": 27, "ankle.R": 28,
}  # fmt: skip
"""MediaPipe Pose indices of the landmarks fitting uses; .L is the person's left."""
DEFAULT_MATTE = MatteSettings()
"""How `perceive` refines MediaPipe's mask when asked to (`lca-avatar build --matte`)."""


class PerceiveError(AvatarError):
    """No photo shows exactly one person clearly enough to fit a body."""


@dataclass(frozen=True)
class Perception:
    """What was seen in one photo; landmark coordinates are pixels (x right, y down)."""

    source: str
    pose: np.ndarray  # [33, 4] float32 x, y, depth (relative, pixels), visibility in [0, 1]
    left_hand: np.ndarray | None  # [21, 3] float32 x, y, depth
    right_hand: np.ndarray | None  # [21, 3]
    face: np.ndarray | None  # [468, 3]
    mask: np.ndarray  # [H, W] float32 person coverage: MediaPipe's mask completed (and refined when matted)
    foreground: np.ndarray | None = None  # [H, W, 3] float32 linear: the person's colours, backdrop removed

    def landmark(self, name: str) -> np.ndarray:
        """[3] x, y, visibility of a named body landmark (see POSE_LANDMARKS)."""
        x, y, _, visibility = self.pose[POSE_LANDMARKS[name]]
        return np.array([x, y, visibility], np.float32)


@dataclass
class PerceiveResult:
    perceptions: list[Perception] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason


def _in_view(landmarks, width: int, height: int, least_visibility: float = 0.5) -> np.ndarray:
    """[K, 2] pixel (x, y) of the pose landmarks MediaPipe sees in the photo."""
    points = _points(landmarks, width, height, visibility=True)
    if points is None:
        return np.zeros((0, 2), np.float32)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    return points[inside & (points[:, 3] > least_visibility), :2]


LEG_LANDMARKS = ((25, 27, 29, 31), (26, 28, 30, 32))  # MediaPipe Pose: knee, ankle, heel, toe per leg


def _legs(landmarks, width: int, height: int, least_visibility: float = 0.5) -> np.ndarray:
    """[2, 4, 2] pixel (x, y) of each leg's knee, ankle, heel and toe; NaN where MediaPipe does not
    see one in the photo."""
    points = _points(landmarks, width, height, visibility=True)
    legs = points[list(LEG_LANDMARKS)] if points is not None else np.full((2, 4, 4), np.nan, np.float32)
    inside = (legs[..., 0] >= 0) & (legs[..., 0] < width) & (legs[..., 1] >= 0) & (legs[..., 1] < height)
    return np.where((inside & (legs[..., 3] > least_visibility))[..., None], legs[..., :2], np.nan)


def _points(landmarks, width: int, height: int, visibility: bool = False) -> np.ndarray | None:
    if landmarks is None:
        return None
    rows = [
        [point.x * width, point.y * height, point.z * width] + ([point.visibility] if visibility else [])
        for point in landmarks.landmark
    ]
    return np.asarray(rows, np.float32)


def count_people(mask: np.ndarray) -> int:
    """How many separate person-sized regions a person-probability mask [H, W] holds."""
    import cv2

    binary = (mask > MASK_THRESHOLD).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    areas = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]  # label 0 is the background
    areas = areas[areas >= MIN_PERSON_FRACTION * mask.size]
    if areas.size == 0:
        return 0
    return 1 + int((areas[1:] >= SECOND_PERSON_FRACTION * areas[0]).sum())


def _another_person(holistic, display: np.ndarray, mask: np.ndarray) -> bool:
    """Whether someone else is in the picture once the first person is painted out.

    Holistic follows one person and its mask covers only them, so a second person shows only on
    a second look at the image without the first.
    """
    import cv2

    covered = cv2.dilate((mask > 0.2).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    painted = display.copy()
    painted[covered] = np.median(display[~covered], axis=0) if (~covered).any() else 0
    second = holistic.process(painted)
    if second.pose_landmarks is None or second.segmentation_mask is None:
        return False
    second_mask = np.asarray(second.segmentation_mask) > MASK_THRESHOLD
    return second_mask[~covered].sum() >= SECOND_PERSON_FRACTION * (mask > MASK_THRESHOLD).sum()


def perceive(
    photos: Sequence[Photo],
    min_photos: int = 1,
    progress: Progress | None = None,
    matte: MatteSettings | None = None,
    completion: CompletionSettings | None = DEFAULT_COMPLETION,
) -> PerceiveResult:
    """Landmarks and mattes for every photo showing one person; the others are skipped, with why.

    `completion` adds what MediaPipe's mask lost in front of a plain backdrop (`matte.py`; None
    keeps its mask). `matte` sets how the mask is then refined at its edges (e.g. `DEFAULT_MATTE`);
    None (the default) leaves `Perception.foreground` unset."""
    try:
        import mediapipe as mp
    except ImportError:
        raise PerceiveError(
            "MediaPipe is not installed in the engine's environment; run the set-up command from the "
            "README (it installs mediapipe 0.10.21)."
        ) from None
    progress = progress or Progress()
    result = PerceiveResult()
    holistic = mp.solutions.holistic.Holistic(
        static_image_mode=True, model_complexity=1, enable_segmentation=True, refine_face_landmarks=False
    )
    with holistic:
        for index, photo in enumerate(photos):
            height, width = photo.pixels.shape[:2]
            display = (linear_to_srgb(np.clip(photo.pixels, 0.0, 1.0)) * 255 + 0.5).astype(np.uint8)
            seen = holistic.process(np.ascontiguousarray(display))
            mask = (
                np.zeros((height, width), np.float32)
                if seen.segmentation_mask is None
                else np.asarray(seen.segmentation_mask, np.float32)
            )
            people = count_people(mask)
            if seen.pose_landmarks is not None and people == 1 and _another_person(holistic, display, mask):
                people = 2
            if seen.pose_landmarks is None or people == 0:
                result.skipped[photo.source] = "no person found"
            elif people > 1:
                result.skipped[photo.source] = "several people found; use photos of one person"
            else:
                if completion is not None:
                    in_view = _in_view(seen.pose_landmarks, width, height)
                    legs = _legs(seen.pose_landmarks, width, height)
                    mask = complete_mask(photo.pixels, mask, in_view, completion, legs)
                refined = None if matte is None else refine_matte(photo.pixels, mask, matte)
                result.perceptions.append(
                    Perception(
                        source=photo.source,
                        pose=_points(seen.pose_landmarks, width, height, visibility=True),
                        left_hand=_points(seen.left_hand_landmarks, width, height),
                        right_hand=_points(seen.right_hand_landmarks, width, height),
                        face=_points(seen.face_landmarks, width, height),
                        mask=mask if refined is None else refined.alpha,
                        foreground=None if refined is None else refined.foreground,
                    )
                )
            if photo.source in result.skipped:
                logger.warning("Skipping %s: %s", photo.source, result.skipped[photo.source])
            progress.update((index + 1) / len(photos), photo.source)
    if len(result.perceptions) < min_photos:
        reasons = "; ".join(f"{source}: {reason}" for source, reason in result.skipped.items())
        raise PerceiveError(
            f"{len(result.perceptions)} photo(s) show one person clearly, {min_photos} needed. "
            + (f"Skipped {reasons}." if reasons else "")
        )
    return result


def matted_photos(photos: Sequence[Photo], perceptions: Sequence[Perception]) -> list[Photo]:
    """The photos as fitting sees them: where perceive refined a person's matte, the person's
    colours without the backdrop in place of the pixels; other photos unchanged."""
    foregrounds = {seen.source: seen.foreground for seen in perceptions if seen.foreground is not None}
    return [
        replace(photo, pixels=foregrounds[photo.source]) if photo.source in foregrounds else photo
        for photo in photos
    ]
