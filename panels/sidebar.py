"""The "LCA" tab of the 3D Viewport's sidebar: build and import, the preview, expressions and hands."""

from __future__ import annotations

import textwrap

import bpy

from ..operators.animation import avatar_armature, avatar_body, avatar_splats, expression_keys
from ..viewport.native_splats import renders_natively
from ..viewport.state import posing_error

# ARKit blendshape names grouped by their prefixes, in the order a face is read.
EXPRESSION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Brows", ("brow",)),
    ("Eyes", ("eye",)),
    ("Jaw", ("jaw",)),
    ("Mouth", ("mouth",)),
    ("Cheeks", ("cheek",)),
    ("Nose", ("nose",)),
    ("Tongue", ("tongue",)),
)
# Buttons of the Hands panel: (label, icon, curl, spread).
HAND_PRESETS = (
    ("Flat", "VIEW_PAN", 0.0, 0.0),
    ("Relaxed", "HAND", 0.3, 0.2),
    ("Fist", "RADIOBUT_ON", 1.0, 0.0),
    ("Spread", "FULLSCREEN_ENTER", 0.0, 1.0),
)
# About as many characters as one label line of the sidebar holds at its default width.
LABEL_LINE_CHARACTERS = 36


def group_expressions(names: list[str]) -> list[tuple[str, list[str]]]:
    """The shape-key names sorted into the ARKit groups; names no group claims go under "Other"."""
    grouped = {title: [] for title, _ in EXPRESSION_GROUPS}
    other = []
    for name in names:
        lowered = name.lower()
        title = next((title for title, prefixes in EXPRESSION_GROUPS if lowered.startswith(prefixes)), None)
        (grouped[title] if title else other).append(name)
    groups = [(title, members) for title, members in grouped.items() if members]
    return groups + [("Other", other)] if other else groups


def posing_error_lines(splats_name: str) -> list[str]:
    """Why the splats object no longer follows its body, in label-sized lines; [] while it does."""
    message = posing_error(splats_name)
    return textwrap.wrap(message, LABEL_LINE_CHARACTERS) if message else []


class _SidebarPanel:
    """Where every LCA panel lives: the 3D view's sidebar, tab "LCA"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LCA"


class LCA_PT_avatar(_SidebarPanel, bpy.types.Panel):
    bl_label = "LCA Avatar"
    bl_idname = "LCA_PT_avatar"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        state = context.scene.lca
        column = layout.column(align=True)
        column.operator("lca.build_avatar", text="Build from Photos", icon="OUTLINER_OB_ARMATURE")
        column.operator("lca.batch_build", text="Batch Build", icon="COMMUNITY")
        row = column.row(align=True)
        row.operator("lca.import_avatar", text="Import", icon="IMPORT")
        row.operator("lca.export_posed_ply", text="Export .ply", icon="EXPORT")

        if state.build_running:
            box = layout.box()
            box.progress(factor=state.build_progress, type="BAR", text=state.build_stage or "Building")
            if state.build_message:
                box.label(text=state.build_message)
            box.operator("lca.cancel_build", text="Cancel", icon="CANCEL")
        elif state.build_message:
            layout.label(text=state.build_message, icon="INFO")

        splats = avatar_splats(context.active_object)
        if splats is None:
            layout.label(text="Select an avatar to adjust its preview")
            return
        settings = splats.lca
        box = layout.box()
        native = renders_natively(splats)
        if native:
            box.label(text="Blender draws and renders these splats", icon="SHADING_RENDERED")
        box.prop(settings, "preview", text=f"Preview {settings.avatar_name or splats.name}")
        column = box.column()
        # Blender's own splats take the look and the sliders too (through their posing modifier).
        column.active = settings.preview or native
        column.prop(settings, "look")
        column.prop(settings, "splat_scale", slider=True)
        column.prop(settings, "opacity", slider=True)
        error_lines = posing_error_lines(splats.name)
        if error_lines:
            column = box.column(align=True)
            column.alert = True
            column.label(text="The splats stopped following the body:", icon="ERROR")
            for line in error_lines:
                column.label(text=line)
        body = avatar_body(splats)
        if body is not None:
            box.operator("lca.toggle_cage", icon="MOD_WIREFRAME", depress=not body.hide_get())


class LCA_PT_expressions(_SidebarPanel, bpy.types.Panel):
    bl_label = "Expressions"
    bl_idname = "LCA_PT_expressions"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return avatar_body(context.active_object) is not None

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        body = avatar_body(context.active_object)
        if body is None:  # poll said yes, but the selection can change while drawing
            return
        keys = {key.name: key for key in expression_keys(body)}
        layout.operator("lca.reset_expressions", icon="LOOP_BACK")
        for title, names in group_expressions(list(keys)):
            box = layout.box()
            box.label(text=title)
            column = box.column(align=True)
            for name in names:
                column.prop(keys[name], "value", text=name, slider=True)


class LCA_PT_hands(_SidebarPanel, bpy.types.Panel):
    bl_label = "Hands"
    bl_idname = "LCA_PT_hands"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return avatar_armature(context.active_object) is not None

    def draw(self, context: bpy.types.Context) -> None:
        row = self.layout.row()
        for side, title in (("L", "Left hand"), ("R", "Right hand")):
            column = row.column(align=True)
            column.label(text=title)
            for label, icon, curl, spread in HAND_PRESETS:
                button = column.operator("lca.hand_pose", text=label, icon=icon)
                button.side, button.curl, button.spread = side, curl, spread
        self.layout.label(text="Fine-tune in the Adjust Last Operation panel", icon="INFO")


classes: tuple[type, ...] = (LCA_PT_avatar, LCA_PT_expressions, LCA_PT_hands)
register, unregister = bpy.utils.register_classes_factory(classes)
