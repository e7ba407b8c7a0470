"""Face capture in: Live Link Face / ARKit CSV recordings and JSON-lines streams -> ARKit weights over time.

Live Link Face CSV (what the iPhone app records), one row per captured frame:

    Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,
    LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll
    17:21:38:12.264,61,0.0421,0.1287,...

- `Timecode` is HH:MM:SS:FF.fff: FF.fff is the frame (with its sub-frame fraction) within the
  second at the recording's frame rate. The rate is not in the file: it is given, or taken as the
  standard rate (24, 25, 30, 48, 50, 60, ...) above the largest frame number that makes the rows
  most evenly spaced in time.
- The blendshape columns are ARKit's 52 names in PascalCase (EyeBlinkLeft), matched to
  `avatar.ARKIT_EXPRESSIONS` (eyeBlinkLeft) by name in any case and any column order; columns the
  file lacks stay 0. `BlendShapeCount` and unknown columns are ignored.
- Head and eye rotations are Unreal's Live Link values: an angle divided by 180 degrees (so 1.0 is
  half a turn); they are read as radians (value * pi).

JSON lines (a stream, or a recording of one): one object per line, with the time in seconds under
"time" (or "t" / "timestamp") and the same names and values as the CSV's columns (camelCase or
PascalCase), at the top level or inside "blendshapes" / "weights":

    {"time": 0.016, "blendshapes": {"jawOpen": 0.31, "eyeBlinkLeft": 0.02}, "headYaw": 0.05}

A stream may send only what changed: a name missing from a line keeps its last value (0 at first).

Rotations in the avatar's frame (+Z up, facing -Y, the subject's left is +X; the project's
convention): yaw turns about +Z (positive: towards the subject's left), pitch about +X (positive:
chin down), roll about the facing axis -Y (positive: the top of the head towards the subject's
right); the rotation is yaw * pitch * roll (roll applied first), as Unreal composes a rotator.
A capture recorded mirrored (the app's selfie view) is turned back by `mirrored` in `resample`:
left and right shapes and eyes swap, and yaw and roll change sign.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..avatar import ARKIT_EXPRESSIONS
from ..errors import AvatarFileError
from ..maths.rotations import axis_angle_to_quaternion, matrix_to_quaternion, quaternion_multiply
from .reading import open_regular_file, read_at_most

MAX_CAPTURE_BYTES = 512 * 1024**2
"""A capture file larger than this is refused (an hour at 60 fps is about 30 MB)."""

STANDARD_FRAME_RATES = (24, 25, 30, 48, 50, 60, 72, 90, 100, 120, 144, 240)
HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")
LEFT_EYE_COLUMNS = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll")
RIGHT_EYE_COLUMNS = ("RightEyeYaw", "RightEyePitch", "RightEyeRoll")
ANGLE_SCALE = math.pi
"""Live Link rotation value -> radians: the values are angles divided by 180 degrees."""

_EXPRESSION_INDEX = {name.lower(): index for index, name in enumerate(ARKIT_EXPRESSIONS)}
_ROTATION_INDEX = {
    name.lower(): (group, axis)
    for group, names in enumerate((HEAD_COLUMNS, LEFT_EYE_COLUMNS, RIGHT_EYE_COLUMNS))
    for axis, name in enumerate(names)
}
_TIMECODE = re.compile(r"^\s*(\d{1,3}):(\d{1,2}):(\d{1,2})[:;.](\d{1,4}(?:\.\d*)?)\s*$")
_TIME_KEYS = ("time", "t", "timestamp")
_NESTED_KEYS = ("blendshapes", "blendShapes", "weights")


@dataclass(frozen=True)
class FaceCapture:
    """ARKit expression weights and head and eye rotations over time."""

    times: np.ndarray  # [T] float64 seconds from the first sample, strictly increasing
    weights: np.ndarray  # [T, 52] float32 in avatar.ARKIT_EXPRESSIONS order
    head: np.ndarray  # [T, 3] float32 yaw, pitch, roll in radians
    left_eye: np.ndarray  # [T, 3] float32 yaw, pitch, roll in radians
    right_eye: np.ndarray  # [T, 3] float32 yaw, pitch, roll in radians
    expressions_present: np.ndarray  # [52] bool: which shapes the capture holds
    has_head: bool
    has_eyes: bool
    frame_rate: float | None = None  # the recording's, when known

    @property
    def frame_count(self) -> int:
        return int(self.times.shape[0])

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    @property
    def present_names(self) -> list[str]:
        return [
            name for name, present in zip(ARKIT_EXPRESSIONS, self.expressions_present, strict=True) if present
        ]


def _capture_error(source: str, reason: str, advice: str = "") -> AvatarFileError:
    message = f"'{source}' is not a face capture this can read: {reason}."
    return AvatarFileError(f"{message} {advice}" if advice else message)


def read_face_capture(path: str | os.PathLike, frame_rate: float | None = None) -> FaceCapture:
    """Read a Live Link Face CSV or a JSON-lines capture (told apart by their first character)."""
    source = Path(path)
    try:
        with open_regular_file(source) as handle:
            data = bytes(read_at_most(handle, MAX_CAPTURE_BYTES))
    except OSError as error:
        raise AvatarFileError(f"Cannot read '{source.name}': {error.strerror or error}.") from None
    if len(data) > MAX_CAPTURE_BYTES:
        raise _capture_error(source.name, "it is larger than 512 MB")
    if b"\0" in data[:65536]:
        raise _capture_error(source.name, "it is a binary file, not text", "Export the capture as CSV.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _capture_error(source.name, "it is not UTF-8 text", "Export the capture as CSV.") from None
    if text.lstrip().startswith("{"):
        return parse_face_jsonl(text, source.name)
    return parse_live_link_csv(text, frame_rate, source.name)


def parse_live_link_csv(text: str, frame_rate: float | None = None, source: str = "capture") -> FaceCapture:
    """Parse the text of a Live Link Face CSV (see the module docstring)."""
    advice = "Record it with Live Link Face (or export ARKit blendshapes with a Timecode column)."
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise _capture_error(source, "it is empty", advice)
    header = [cell.strip() for cell in rows[0]]
    lowered = [name.lower() for name in header]
    if "timecode" not in lowered:
        raise _capture_error(source, "it has no 'Timecode' column", advice)
    expression_columns = {
        column: _EXPRESSION_INDEX[name] for column, name in enumerate(lowered) if name in _EXPRESSION_INDEX
    }
    rotation_columns = {
        column: _ROTATION_INDEX[name] for column, name in enumerate(lowered) if name in _ROTATION_INDEX
    }
    if not expression_columns:
        raise _capture_error(
            source, "none of its columns is an ARKit blendshape (EyeBlinkLeft, JawOpen, ...)", advice
        )
    if len(rows) < 2:
        raise _capture_error(source, "it has a header but no frames")
    time_column = lowered.index("timecode")
    count = len(rows) - 1
    frames = np.empty((count, 4))
    weights = np.zeros((count, len(ARKIT_EXPRESSIONS)), np.float32)
    rotations = np.zeros((count, 3, 3), np.float32)
    for number, row in enumerate(rows[1:]):
        line = number + 2
        if len(row) < len(header):
            raise _capture_error(source, f"row {line} has {len(row)} cells, the header {len(header)}")
        match = _TIMECODE.match(row[time_column])
        if match is None:
            raise _capture_error(
                source, f"row {line}: '{row[time_column]}' is not a timecode HH:MM:SS:FF.fff"
            )
        frames[number] = [float(part) for part in match.groups()]
        for column, index in expression_columns.items():
            weights[number, index] = _number(row[column], source, line, header[column])
        for column, (group, axis) in rotation_columns.items():
            rotations[number, group, axis] = _number(row[column], source, line, header[column]) * ANGLE_SCALE
    rate = _frame_rate(frames, frame_rate, source)
    times = frames[:, 0] * 3600 + frames[:, 1] * 60 + frames[:, 2] + frames[:, 3] / rate
    day = 24 * 3600
    # A recording that runs past midnight starts its timecode again at 00:00:00:00.
    times += day * np.concatenate([[0], np.cumsum(np.diff(times) < -day / 2)])
    present = np.zeros(len(ARKIT_EXPRESSIONS), bool)
    present[list(expression_columns.values())] = True
    groups = {group for group, _ in rotation_columns.values()}
    return _capture(source, times, weights, rotations, present, 0 in groups, bool(groups & {1, 2}), rate)


def _number(cell: str, source: str, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise _capture_error(
            source, f"row {line}, column '{column}': '{cell.strip()}' is not a number"
        ) from None
    if not math.isfinite(value):
        raise _capture_error(source, f"row {line}, column '{column}' is not a finite number")
    return value


def _frame_rate(frames: np.ndarray, frame_rate: float | None, source: str) -> float:
    """The given frame rate, checked against the frame numbers, or the standard rate that fits best."""
    largest = float(frames[:, 3].max())
    if frame_rate is not None:
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise _capture_error(source, f"the frame rate {frame_rate} is not a positive number")
        if largest >= frame_rate + 1e-6:
            raise _capture_error(
                source,
                f"its timecodes count frames up to {largest:g}, more than a second at {frame_rate:g} fps",
            )
        return float(frame_rate)
    seconds = frames[:, 0] * 3600 + frames[:, 1] * 60 + frames[:, 2]
    candidates = [rate for rate in STANDARD_FRAME_RATES if rate > largest]
    if not candidates:
        raise _capture_error(source, f"its timecodes count frames up to {largest:g}, above any frame rate")
    if len(frames) < 3:
        return float(candidates[0])

    def unevenness(rate: float) -> float:
        steps = np.diff(seconds + frames[:, 3] / rate)
        return float(np.std(steps) / max(np.mean(np.abs(steps)), 1e-12))

    spreads = [unevenness(rate) for rate in candidates]
    best = min(spreads)
    # The slowest rate among those (near-)equally even: without a wrap into the next second every
    # candidate fits as well, and the frame numbers then say the least rate they allow.
    return float(
        next(rate for rate, spread in zip(candidates, spreads, strict=True) if spread <= best + 1e-3)
    )


def parse_face_jsonl(text: str, source: str = "capture") -> FaceCapture:
    """Parse JSON lines of ARKit weights (see the module docstring)."""
    advice = 'Each line must be a JSON object such as {"time": 0.0, "jawOpen": 0.2}.'
    lines = [(number + 1, line) for number, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise _capture_error(source, "it is empty", advice)
    times = np.empty(len(lines))
    weights = np.zeros((len(lines), len(ARKIT_EXPRESSIONS)), np.float32)
    rotations = np.zeros((len(lines), 3, 3), np.float32)
    present = np.zeros(len(ARKIT_EXPRESSIONS), bool)
    groups: set[int] = set()
    current_weights = np.zeros(len(ARKIT_EXPRESSIONS), np.float32)
    current_rotations = np.zeros((3, 3), np.float32)
    for row, (line, content) in enumerate(lines):
        try:
            item = json.loads(content)
        except (ValueError, RecursionError):
            raise _capture_error(source, f"line {line} is not valid JSON", advice) from None
        if not isinstance(item, dict):
            raise _capture_error(source, f"line {line} is not a JSON object", advice)
        time_key = next((key for key in _TIME_KEYS if key in item), None)
        if time_key is None:
            raise _capture_error(source, f"line {line} has no 'time' (seconds)", advice)
        times[row] = _json_number(item[time_key], source, line, time_key)
        values = dict(item)
        for key in _NESTED_KEYS:
            nested = values.pop(key, None)
            if isinstance(nested, dict):
                values.update(nested)
        for key, value in values.items():
            name = key.lower() if isinstance(key, str) else ""
            if name in _EXPRESSION_INDEX:
                index = _EXPRESSION_INDEX[name]
                current_weights[index] = _json_number(value, source, line, key)
                present[index] = True
            elif name in _ROTATION_INDEX:
                group, axis = _ROTATION_INDEX[name]
                current_rotations[group, axis] = _json_number(value, source, line, key) * ANGLE_SCALE
                groups.add(group)
        weights[row] = current_weights
        rotations[row] = current_rotations
    if not present.any():
        raise _capture_error(source, "no line names an ARKit blendshape (jawOpen, eyeBlinkLeft, ...)", advice)
    return _capture(source, times, weights, rotations, present, 0 in groups, bool(groups & {1, 2}), None)


def _json_number(value: object, source: str, line: int, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _capture_error(source, f"line {line}: '{key}' must be a finite number")
    return float(value)


def _capture(
    source: str,
    times: np.ndarray,
    weights: np.ndarray,
    rotations: np.ndarray,
    present: np.ndarray,
    has_head: bool,
    has_eyes: bool,
    frame_rate: float | None,
) -> FaceCapture:
    steps = np.diff(times)
    if (steps < 0).any():
        row = int(np.flatnonzero(steps < 0)[0]) + 1
        raise _capture_error(source, f"its times go backwards at sample {row + 1}")
    # Repeated times (a stream that sent twice in one tick) keep their last sample.
    keep = np.concatenate([steps > 0, [True]])
    times, weights, rotations = times[keep], weights[keep], rotations[keep]
    return FaceCapture(
        times=times - times[0],
        weights=weights,
        head=rotations[:, 0].copy(),
        left_eye=rotations[:, 1].copy(),
        right_eye=rotations[:, 2].copy(),
        expressions_present=present,
        has_head=has_head,
        has_eyes=has_eyes,
        frame_rate=frame_rate,
    )


_MIRRORED_EXPRESSIONS = np.array(
    [
        ARKIT_EXPRESSIONS.index(
            name.replace("Left", "\0").replace("Right", "Left").replace("\0", "Right")
            if "Left" in name or "Right" in name
            else name
        )
        for name in ARKIT_EXPRESSIONS
    ]
)


def resample(
    capture: FaceCapture,
    frame_rate: float,
    strength: float = 1.0,
    rotation_strength: float = 1.0,
    smoothing: float = 0.0,
    mirrored: bool = False,
) -> FaceCapture:
    """The capture at `frame_rate` samples a second from its start to its end (linear in between),
    smoothed by a Gaussian of `smoothing` seconds (0: none), expression weights times `strength`
    and rotation angles times `rotation_strength`; `mirrored` turns a mirrored recording back."""
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise AvatarFileError(f"The frame rate must be a positive number, got {frame_rate}.")
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise AvatarFileError(f"The smoothing must be 0 or more seconds, got {smoothing}.")
    count = int(math.floor(capture.duration * frame_rate + 1e-6)) + 1
    times = np.arange(count) / frame_rate
    channels = np.concatenate(
        [capture.weights, capture.head, capture.left_eye, capture.right_eye], axis=1
    ).astype(np.float64)
    sampled = np.stack([np.interp(times, capture.times, channel) for channel in channels.T], axis=1)
    if smoothing > 0:
        sampled = _gaussian_smooth(sampled, smoothing * frame_rate)
    expression_count = len(ARKIT_EXPRESSIONS)
    weights = sampled[:, :expression_count] * strength
    rotations = sampled[:, expression_count:].reshape(count, 3, 3) * rotation_strength
    present = capture.expressions_present
    if mirrored:
        weights = weights[:, _MIRRORED_EXPRESSIONS]
        present = present[_MIRRORED_EXPRESSIONS]
        rotations = rotations[:, [0, 2, 1]] * np.array([-1.0, 1.0, -1.0])
    return replace(
        capture,
        times=times,
        weights=weights.astype(np.float32),
        head=rotations[:, 0].astype(np.float32),
        left_eye=rotations[:, 1].astype(np.float32),
        right_eye=rotations[:, 2].astype(np.float32),
        expressions_present=present,
        frame_rate=float(frame_rate),
    )


def _gaussian_smooth(values: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Each column of `values` [T, C] convolved with a normalised Gaussian, edges held."""
    if sigma_samples < 1e-3:
        return values
    radius = max(1, int(math.ceil(3 * sigma_samples)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_samples) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(values[:1], radius, 0), values, np.repeat(values[-1:], radius, 0)])
    return sum(
        weight * padded[radius + offset : radius + offset + len(values)]
        for offset, weight in zip(offsets, kernel, strict=True)
    )


def yaw_pitch_roll_quaternions(angles: np.ndarray) -> np.ndarray:
    """[T, 3] yaw, pitch, roll (radians) -> [T, 4] (w, x, y, z) rotations in the avatar's frame:
    yaw about +Z, then pitch about +X, then roll about -Y, composed yaw * pitch * roll."""
    angles = np.asarray(angles, np.float64)
    yaw = axis_angle_to_quaternion(angles[:, :1] * np.array([0.0, 0.0, 1.0]))
    pitch = axis_angle_to_quaternion(angles[:, 1:2] * np.array([1.0, 0.0, 0.0]))
    roll = axis_angle_to_quaternion(angles[:, 2:3] * np.array([0.0, -1.0, 0.0]))
    return quaternion_multiply(yaw, quaternion_multiply(pitch, roll))


def bone_rotations(rest_frame: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """[T, 4] local pose rotations (w, x, y, z) that turn a bone whose rest frame's rotation is
    `rest_frame` [3, 3] (in the avatar's frame) by `rotations` [T, 4] given in the avatar's axes:
    local = rest^T * rotation * rest, so that rest * local = rotation * rest. Consecutive
    quaternions are kept on the same side, so keys interpolate the short way."""
    rest = matrix_to_quaternion(np.asarray(rest_frame, np.float64))
    inverse = rest * np.array([1.0, -1.0, -1.0, -1.0])
    local = quaternion_multiply(inverse, quaternion_multiply(np.asarray(rotations, np.float64), rest))
    for frame in range(1, len(local)):
        if np.dot(local[frame], local[frame - 1]) < 0:
            local[frame] = -local[frame]
    return local
