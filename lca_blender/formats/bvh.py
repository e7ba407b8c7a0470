"""BVH motion capture (Biovision Hierarchy): a skeleton of offsets and per-frame Euler channels.

    HIERARCHY
    ROOT Hips
    {
      OFFSET 0 90 0
      CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
      JOINT LeftUpLeg
      { OFFSET 9 -2 0  CHANNELS 3 Zrotation Xrotation Yrotation  ... End Site { OFFSET 0 -4 0 } }
    }
    MOTION
    Frames: 120
    Frame Time: 0.0333333
    0 91.2 0 0 0 0 ...      (one line a frame, the channels in hierarchy order)

Semantics (those of Blender's own importer): joints have no rest rotation; a joint's rotation
is its Euler channels applied in the order listed (`Zrotation Xrotation Yrotation`: R = Rz Rx Ry),
relative to its parent's frame; a position channel replaces that axis of the joint's offset (the
root's position channels are its place in the world). Y is up and a character faces +Z, so the
skeleton is turned into the project's frame (Z up, facing -Y): (x, y, z) -> (x, -z, y). Units are
whatever the file uses (centimetres for most): retargeting scales by height, not by units.

Why a parser of our own: the maintained PyPI readers were tried first. `bvhio` 1.5.4 loops
forever on a file whose motion ends before its `Frames:` count (it re-reads an empty line at the
end of the file without end), and pins exact versions of PyGLM and spatial-transform;
`bvhTools` pulls raylib, scipy and matplotlib; `bvh` 0.3 is unmaintained since 2017. BVH is a
small text format; this reader is bounded (file size, joints, frames), reads the motion line by
line into one preallocated array, and names the line of any error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AvatarFileError
from ..maths.retarget import Skeleton
from ..maths.rotations import bone_matrix
from .reading import open_regular_file, read_at_most

MAX_BVH_BYTES = 256 * 1024**2
"""A BVH file larger than this is refused (ten minutes of a 60-joint skeleton at 120 fps is ~150 MB)."""
MAX_JOINTS = 1000
MAX_DEPTH = 200
MAX_FRAME_RATE = 1000.0
MAX_OFFSET = 1e7
CHANNELS = ("xposition", "yposition", "zposition", "xrotation", "yrotation", "zrotation")
BVH_TO_OURS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""(x, y, z) of a BVH file (Y up, facing +Z) -> the project's (Z up, facing -Y)."""


@dataclass(frozen=True)
class BvhMotion:
    """A BVH file's skeleton and motion, as the file has them (its axes and units)."""

    names: list[str]
    parents: np.ndarray  # [J] int64, -1 for the root; parents come first
    offsets: np.ndarray  # [J, 3] float64 head relative to the parent's head, at rest
    end_sites: np.ndarray  # [J, 3] float64 end-site offsets; NaN for joints without one
    channels: list[tuple[str, ...]]  # per joint, lower-case names from CHANNELS, in file order
    frame_time: float  # seconds
    motion: np.ndarray  # [T, C] float64 channel values, one row a frame

    @property
    def frame_rate(self) -> float:
        return 1.0 / self.frame_time

    @property
    def frame_count(self) -> int:
        return int(self.motion.shape[0])


def _bvh_error(source: str, line: int | None, reason: str) -> AvatarFileError:
    where = f" (line {line})" if line is not None else ""
    return AvatarFileError(f"'{source}' is not a BVH file this can read{where}: {reason}.")


def read_bvh(path: str | os.PathLike) -> BvhMotion:
    """Read a BVH file; AvatarFileError (naming the line) when it is not one or is too large."""
    source = Path(path)
    try:
        with open_regular_file(source) as handle:
            data = bytes(read_at_most(handle, MAX_BVH_BYTES))
    except OSError as error:
        raise AvatarFileError(f"Cannot read '{source.name}': {error.strerror or error}.") from None
    if len(data) > MAX_BVH_BYTES:
        raise _bvh_error(source.name, None, "it is larger than 256 MB")
    if b"\0" in data[:65536]:
        raise _bvh_error(source.name, None, "it is a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # joint names from old tools; the numbers are ASCII either way
    return parse_bvh(text, source.name)


def parse_bvh(text: str, source: str = "motion.bvh") -> BvhMotion:
    """Parse the text of a BVH file (see the module docstring)."""
    lines = text.splitlines()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[tuple[float, float, float]] = []
    end_sites: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    stack: list[int] = []  # open joints; -2 marks an open End Site
    expecting_brace = False
    number = 0
    started = False
    while number < len(lines):
        tokens = lines[number].split()
        number += 1
        if not tokens:
            continue
        keyword = tokens[0].upper()
        if not started:
            if keyword != "HIERARCHY":
                raise _bvh_error(source, number, "it must start with HIERARCHY")
            started = True
            continue
        if expecting_brace:
            if tokens != ["{"]:
                raise _bvh_error(source, number, "a joint's '{' was expected")
            expecting_brace = False
            continue
        if keyword in ("ROOT", "JOINT"):
            if (keyword == "ROOT") != (not stack) or (stack and stack[-1] == -2):
                raise _bvh_error(source, number, f"{keyword} is not where a BVH hierarchy allows it")
            if len(names) >= MAX_JOINTS or len(stack) >= MAX_DEPTH:
                raise _bvh_error(
                    source, number, f"it has more than {MAX_JOINTS} joints or is nested too deeply"
                )
            if names and keyword == "ROOT":
                raise _bvh_error(source, number, "it has several root joints; only one is supported")
            name = "_".join(tokens[1:]) or f"joint{len(names)}"
            if name in names:  # renamed as Blender's importer renames a duplicate
                suffix = 1
                while f"{name}.{suffix:03d}" in names:
                    suffix += 1
                name = f"{name}.{suffix:03d}"
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append((math.nan, math.nan, math.nan))
            end_sites.append([math.nan] * 3)
            channels.append(())
            stack.append(len(names) - 1)
            expecting_brace = True
        elif keyword == "END":
            if not stack or stack[-1] == -2:
                raise _bvh_error(source, number, "an End Site outside a joint")
            stack.append(-2)
            expecting_brace = True
        elif keyword == "OFFSET":
            if not stack:
                raise _bvh_error(source, number, "an OFFSET outside a joint")
            values = _numbers(tokens[1:], 3, source, number, "OFFSET")
            if np.abs(values).max() > MAX_OFFSET:
                raise _bvh_error(source, number, "an OFFSET is too far away to be a joint")
            if stack[-1] == -2:
                end_sites[stack[-2]] = list(values)
            else:
                offsets[stack[-1]] = tuple(values)
        elif keyword == "CHANNELS":
            if not stack or stack[-1] == -2:
                raise _bvh_error(source, number, "CHANNELS outside a joint")
            listed = tuple(token.lower() for token in tokens[2:])
            if (
                len(tokens) < 2
                or tokens[1] != str(len(listed))
                or len(set(listed)) != len(listed)
                or not set(listed) <= set(CHANNELS)
            ):
                raise _bvh_error(
                    source,
                    number,
                    "CHANNELS must give their count, then distinct X/Y/Z position and rotation names",
                )
            channels[stack[-1]] = listed
        elif tokens == ["}"]:
            if not stack:
                raise _bvh_error(source, number, "a '}' closes nothing")
            stack.pop()
        elif keyword == "MOTION":
            if stack or not names:
                raise _bvh_error(source, number, "MOTION comes before the hierarchy is complete")
            break
        else:
            raise _bvh_error(source, number, f"unexpected '{tokens[0][:40]}'")
    else:
        raise _bvh_error(source, None, "it has no MOTION section")
    missing = [name for name, offset in zip(names, offsets, strict=True) if math.isnan(offset[0])]
    if missing:
        raise _bvh_error(source, None, f"joint '{missing[0]}' has no OFFSET")

    frame_count, frame_time, number = _motion_header(lines, number, source)
    width = sum(len(listed) for listed in channels)
    # Each value takes two characters at least: a count the text cannot hold is refused before
    # anything that size is allocated.
    if frame_count * max(width, 1) * 2 > sum(len(line) + 1 for line in lines[number:]):
        raise _bvh_error(source, None, f"it claims {frame_count} frames but holds far less motion")
    motion = np.empty((frame_count, width), np.float64)
    frame = 0
    while number < len(lines) and frame < frame_count:
        line = lines[number]
        number += 1
        if not line.strip():
            continue
        values = line.split()
        if len(values) != width:
            raise _bvh_error(
                source,
                number,
                f"frame {frame + 1} has {len(values)} values; the hierarchy has {width} channels",
            )
        try:
            motion[frame] = np.array(values, np.float64)
        except ValueError:
            raise _bvh_error(
                source, number, f"frame {frame + 1} holds something that is not a number"
            ) from None
        frame += 1
    if frame < frame_count:
        raise _bvh_error(source, None, f"the motion ends after {frame} of its {frame_count} frames")
    if any(line.strip() for line in lines[number:]):
        raise _bvh_error(source, number + 1, f"there is more motion than its {frame_count} frames")
    if not np.isfinite(motion).all():
        raise _bvh_error(source, None, "the motion holds NaN or infinite values")
    return BvhMotion(
        names=names,
        parents=np.array(parents, np.int64),
        offsets=np.array(offsets, np.float64),
        end_sites=np.array(end_sites, np.float64),
        channels=channels,
        frame_time=frame_time,
        motion=motion,
    )


def _numbers(tokens: list[str], count: int, source: str, line: int, what: str) -> np.ndarray:
    try:
        values = np.array(tokens, np.float64)
    except ValueError:
        values = np.zeros(0)
    if values.shape != (count,) or not np.isfinite(values).all():
        raise _bvh_error(source, line, f"{what} needs {count} finite numbers")
    return values


def _motion_header(lines: list[str], number: int, source: str) -> tuple[int, float, int]:
    """(frame count, frame time, the line after the header) of the MOTION section at `number`."""
    header = []
    while number < len(lines) and len(header) < 2:
        tokens = lines[number].split()
        number += 1
        if tokens:
            header.append((number, tokens))
    if len(header) < 2:
        raise _bvh_error(source, None, "the MOTION section needs 'Frames:' and 'Frame Time:' lines")
    (count_line, count_tokens), (time_line, time_tokens) = header
    if len(count_tokens) != 2 or count_tokens[0].lower() != "frames:" or not count_tokens[1].isdigit():
        raise _bvh_error(source, count_line, "'Frames: N' was expected")
    frame_count = int(count_tokens[1])
    if not frame_count:
        raise _bvh_error(source, count_line, "it has no frames")
    if len(time_tokens) != 3 or [token.lower() for token in time_tokens[:2]] != ["frame", "time:"]:
        raise _bvh_error(source, time_line, "'Frame Time: seconds' was expected")
    try:
        frame_time = float(time_tokens[2])
    except ValueError:
        frame_time = math.nan
    if not (math.isfinite(frame_time) and 1.0 / MAX_FRAME_RATE <= frame_time <= 10.0):
        raise _bvh_error(source, time_line, f"the frame time must be 1/{MAX_FRAME_RATE:g} to 10 seconds")
    return frame_count, frame_time, number


def euler_matrices(angles_deg: np.ndarray, order: str) -> np.ndarray:
    """[T, 3, 3] rotations from Euler angles [T, len(order)] in degrees applied as BVH lists them
    (intrinsic: "ZXY" is Rz @ Rx @ Ry)."""
    result = np.broadcast_to(np.eye(3), (len(angles_deg), 3, 3)).copy()
    for column, axis in enumerate(order):
        angle = np.radians(angles_deg[:, column])
        cos, sin = np.cos(angle), np.sin(angle)
        turn = np.zeros((len(angle), 3, 3))
        first, second = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
        fixed = 3 - first - second
        turn[:, fixed, fixed] = 1.0
        turn[:, first, first] = cos
        turn[:, second, second] = cos
        turn[:, first, second] = -sin
        turn[:, second, first] = sin
        result = result @ turn
    return result


def bvh_skeleton(bvh: BvhMotion) -> Skeleton:
    """The BVH skeleton at rest in the project's frame (Z up, facing -Y), in the file's units, with
    Blender's bones: each from its head to its single child, the mean of its children, or its end
    site. Its floor is the file's Y = 0."""
    heads = _rest_heads(bvh)
    tails = _rest_tails(bvh, heads)
    rest = bone_matrix(heads, tails, np.zeros(len(heads)))
    lowest = float(min(heads[:, 2].min(), tails[:, 2].min()))
    return Skeleton(names=tuple(bvh.names), parents=bvh.parents.copy(), rest=rest, floor=0.0, lowest=lowest)


def bvh_poses(bvh: BvhMotion, skeleton: Skeleton | None = None) -> np.ndarray:
    """[T, J, 4, 4] the bones' posed frames (the rest frames of `bvh_skeleton` carried along by the
    motion) in the project's frame: forward kinematics of the BVH channels."""
    skeleton = skeleton or bvh_skeleton(bvh)
    count, joints = bvh.frame_count, len(bvh.names)
    world_rotation = np.empty((count, joints, 3, 3))
    world_position = np.empty((count, joints, 3))
    column = 0
    for joint, listed in enumerate(bvh.channels):
        values = bvh.motion[:, column : column + len(listed)]
        column += len(listed)
        offset = np.broadcast_to(bvh.offsets[joint], (count, 3)).copy()
        rotation_order = ""
        rotation_columns = []
        for index, channel in enumerate(listed):
            axis = "xyz".index(channel[0])
            if channel.endswith("position"):
                offset[:, axis] = values[:, index]
            else:
                rotation_order += channel[0]
                rotation_columns.append(index)
        local = euler_matrices(values[:, rotation_columns], rotation_order)
        parent = int(bvh.parents[joint])
        if parent < 0:
            world_rotation[:, joint] = local
            world_position[:, joint] = offset
        else:
            world_rotation[:, joint] = world_rotation[:, parent] @ local
            world_position[:, joint] = world_position[:, parent] + np.einsum(
                "tij,tj->ti", world_rotation[:, parent], offset
            )
    frames = np.zeros((count, joints, 4, 4))
    # The world turn in our axes, A R A^T, carries each rest bone frame along.
    turned = BVH_TO_OURS @ world_rotation @ BVH_TO_OURS.T
    frames[:, :, :3, :3] = turned @ skeleton.rest[:, :3, :3]
    frames[:, :, :3, 3] = world_position @ BVH_TO_OURS.T
    frames[:, :, 3, 3] = 1.0
    return frames


def _rest_heads(bvh: BvhMotion) -> np.ndarray:
    heads = np.empty_like(bvh.offsets)
    for joint, parent in enumerate(bvh.parents):
        heads[joint] = bvh.offsets[joint] + (heads[parent] if parent >= 0 else 0.0)
    return heads @ BVH_TO_OURS.T


def _rest_tails(bvh: BvhMotion, heads: np.ndarray) -> np.ndarray:
    tails = np.empty_like(heads)
    scale = max(float(np.ptp(heads, axis=0).max()), 1e-6)
    for joint in range(len(heads)):
        children = np.flatnonzero(bvh.parents == joint)
        if len(children):
            tail = heads[children].mean(axis=0)
        elif not np.isnan(bvh.end_sites[joint, 0]):
            tail = heads[joint] + BVH_TO_OURS @ bvh.end_sites[joint]
        else:
            tail = heads[joint]
        if np.linalg.norm(tail - heads[joint]) < 1e-4 * scale:  # zero length: point it up
            tail = heads[joint] + np.array([0.0, 0.0, 0.02 * scale])
        tails[joint] = tail
    return tails
