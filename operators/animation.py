"""Animation helpers: hand curl/spread on the finger bones, and resetting the expression shape keys.

Expressions are the body's shape keys (the 52 ARKit names), so the sidebar's sliders are those
keys' values and keyframe like any shape key; the hands are ordinary pose bones.
"""

from __future__ import annotations

import math

import bpy
from mathutils import Quaternion

from ..lca_blender.avatar import FINGERS
from ..lca_blender.errors import AvatarError

PHALANGES = (1, 2, 3)
CURL_MAX_DEG = 90.0  # each phalanx at curl = 1: a closed fist
THUMB_CURL_SCALE = 0.6  # the thumb folds across the palm, less than the fingers
SPREAD_MAX_DEG = 10.0  # between neighbouring fingers at spread = 1
# How far each first phalanx turns when the hand spreads, in steps of SPREAD_MAX_DEG, fanning out
# from the middle finger. The thumb's first phalanx points away from the palm's plane, so a turn
# about its Z would not fan it with the others: it stays out of the spread.
SPREAD_FAN = {"finger2": 1.0, "finger3": 0.0, "finger4": -1.0, "finger5": -2.0}


def finger_bone_name(finger: str, phalanx: int, side: str) -> str:
    return f"{finger}-{phalanx}.{side}"


def hand_pose_rotations(side: str, curl: float, spread: float) -> dict[str, Quaternion]:
    """Local rotations of one hand's finger bones: curl about each phalanx's +X, spread about Z.

    Mirrored rigs turn the right hand's Z the other way, so the same `spread` opens both hands.
    """
    mirror = 1.0 if side == "L" else -1.0
    rotations = {}
    for finger in FINGERS:
        curl_deg = curl * CURL_MAX_DEG * (THUMB_CURL_SCALE if finger == "finger1" else 1.0)
        for phalanx in PHALANGES:
            rotation = Quaternion((1.0, 0.0, 0.0), math.radians(curl_deg))
            if phalanx == 1 and finger in SPREAD_FAN:
                spread_deg = mirror * spread * SPREAD_MAX_DEG * SPREAD_FAN[finger]
                # X first, then Z: Blender's XYZ Euler order, so the bone's fields read curl and spread.
                rotation = Quaternion((0.0, 0.0, 1.0), math.radians(spread_deg)) @ rotation
            rotations[finger_bone_name(finger, phalanx, side)] = rotation
    return rotations


def set_pose_bone_rotation(bone: bpy.types.PoseBone, rotation: Quaternion) -> None:
    """Set a pose bone's rotation in whatever rotation mode the animator gave it."""
    if bone.rotation_mode == "QUATERNION":
        bone.rotation_quaternion = rotation
    elif bone.rotation_mode == "AXIS_ANGLE":
        axis, angle = rotation.to_axis_angle()
        bone.rotation_axis_angle = (angle, *axis)
    else:
        bone.rotation_euler = rotation.to_euler(bone.rotation_mode)


def apply_hand_pose(armature: bpy.types.Object, side: str, curl: float, spread: float) -> list[str]:
    """Pose one hand of `armature`; returns the bones it set. Raises AvatarError without finger bones."""
    pose_bones = armature.pose.bones
    posed = []
    for name, rotation in hand_pose_rotations(side, curl, spread).items():
        bone = pose_bones.get(name)
        if bone is not None:
            set_pose_bone_rotation(bone, rotation)
            posed.append(name)
    if not posed:
        raise AvatarError(f"'{armature.name}' has no finger bones named like 'finger2-1.{side}'.")
    return posed


def avatar_armature(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The avatar's rig for any of its objects: the armature itself, a parent, or an Armature modifier's."""
    while obj is not None:
        if obj.type == "ARMATURE":
            return obj
        for modifier in getattr(obj, "modifiers", ()):
            if modifier.type == "ARMATURE" and modifier.object is not None:
                return modifier.object
        obj = obj.parent
    return None


def avatar_body(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The avatar's body mesh (the one with the expression shape keys) for any of its objects."""
    if obj is None:
        return None
    candidates = [obj, obj.parent] if obj.type != "ARMATURE" else list(obj.children)
    for candidate in candidates:
        if (
            candidate is not None
            and candidate.type == "MESH"
            and not candidate.lca.is_splats
            and candidate.data.shape_keys is not None
        ):
            return candidate
    return None


def avatar_splats(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The avatar's splats object (the preview's settings live on it) for any of its objects."""
    if obj is None:
        return None
    if obj.lca.is_splats:
        return obj
    for parent in (obj, avatar_body(obj), avatar_armature(obj)):
        for child in parent.children if parent is not None else ():
            if child.lca.is_splats:
                return child
    return None


def expression_keys(body: bpy.types.Object) -> list[bpy.types.ShapeKey]:
    """The body's expression shape keys (every key but the basis)."""
    shape_keys = body.data.shape_keys
    if shape_keys is None:
        return []
    return [key for key in shape_keys.key_blocks if key != shape_keys.reference_key]


class LCA_OT_hand_pose(bpy.types.Operator):
    """Curl and spread one hand's fingers (sets the finger bones' rotations)"""

    bl_idname = "lca.hand_pose"
    bl_label = "Hand Pose"
    bl_options = {"REGISTER", "UNDO"}

    side: bpy.props.EnumProperty(
        name="Hand", items=(("L", "Left", "The left hand"), ("R", "Right", "The right hand"))
    )
    curl: bpy.props.FloatProperty(name="Curl", description="0: flat, 1: fist", default=0.0, min=0.0, max=1.0)
    spread: bpy.props.FloatProperty(
        name="Spread", description="-1: fingers together, 1: spread wide", default=0.0, min=-1.0, max=1.0
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return avatar_armature(context.active_object) is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        armature = avatar_armature(context.active_object)
        try:
            apply_hand_pose(armature, self.side, self.curl, self.spread)
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class _BodyOperator:
    """An undoable operator on the body of the active object's avatar."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return avatar_body(context.active_object) is not None


class LCA_OT_reset_expressions(_BodyOperator, bpy.types.Operator):
    """Set every expression shape key of the avatar back to 0"""

    bl_idname = "lca.reset_expressions"
    bl_label = "Reset Expressions"

    def execute(self, context: bpy.types.Context) -> set[str]:
        for key in expression_keys(avatar_body(context.active_object)):
            key.value = 0.0
        return {"FINISHED"}


class LCA_OT_toggle_cage(_BodyOperator, bpy.types.Operator):
    """Show or hide the avatar's body mesh, a wireframe cage around the splats (it never renders)"""

    bl_idname = "lca.toggle_cage"
    bl_label = "Body Cage"

    def execute(self, context: bpy.types.Context) -> set[str]:
        body = avatar_body(context.active_object)
        # Hidden in the view layer, not disabled: a disabled body would not be evaluated, and the
        # splats follow its evaluated mesh.
        body.hide_set(not body.hide_get())
        return {"FINISHED"}


classes: tuple[type, ...] = (LCA_OT_hand_pose, LCA_OT_reset_expressions, LCA_OT_toggle_cage)
register, unregister = bpy.utils.register_classes_factory(classes)
