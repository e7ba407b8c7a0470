"""The repository is a valid Blender extension: its manifest, its package, and a clean enable/disable."""

from __future__ import annotations

import ast
import importlib
import re
import runpy
import subprocess
import time
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import bpy
import pytest

if TYPE_CHECKING:
    from conftest import InstalledExtension

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = REPO_ROOT / "blender_manifest.toml"
EXTENSION_ID = "lca_avatars"
SUB_PACKAGES = ("operators", "panels", "viewport")
# The core modules Blender itself loads: numpy (1.26 in Blender 4.2-5.0) and the standard library only.
BLENDER_SIDE_CORE_MODULES = (
    "lca_blender",
    "lca_blender.avatar",
    "lca_blender.rotations",
    "lca_blender.errors",
    "lca_blender.formats.atomic",
)
# Blender's limit for a tagline or a permission's reason (`TERSE_DESCRIPTION_MAX_LENGTH`).
TERSE_TEXT_MAX_LENGTH = 64
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


@pytest.fixture(scope="module")
def manifest() -> dict:
    with MANIFEST_PATH.open("rb") as file:
        return tomllib.load(file)


def _assert_terse(text: str, what: str) -> None:
    assert text.strip() == text and text, f"{what} must be non-empty with no surrounding spaces"
    assert len(text) <= TERSE_TEXT_MAX_LENGTH, f"{what} is {len(text)} characters, the limit is 64"
    assert text[-1].isalnum() or text[-1] in ")]}", f"{what} must not end with punctuation: {text!r}"


def test_manifest_required_fields(manifest: dict) -> None:
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == EXTENSION_ID
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", manifest["id"])
    assert SEMVER.fullmatch(manifest["version"]), manifest["version"]
    assert manifest["name"] == "LCA Avatars"
    assert manifest["maintainer"].strip()
    assert manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] and manifest["license"][0] == "SPDX:GPL-3.0-or-later"
    assert all(licence.startswith("SPDX:") for licence in manifest["license"])
    _assert_terse(manifest["tagline"], "tagline")


def test_manifest_permissions_and_tags(manifest: dict, valid_tags_file: Path) -> None:
    permissions = manifest["permissions"]
    assert set(permissions) <= {"files", "network", "clipboard", "camera", "microphone"}
    assert {"files", "network"} <= set(permissions)
    for name, reason in permissions.items():
        _assert_terse(reason, f"permission {name!r}")
    valid_tags = runpy.run_path(str(valid_tags_file))["addons"]
    assert manifest["tags"] and set(manifest["tags"]) <= valid_tags, manifest["tags"]


def test_manifest_version_matches_engine(manifest: dict) -> None:
    # The add-on starts the engine from the same checkout; one version names both.
    engine_init = ast.parse((REPO_ROOT / "lca_blender" / "__init__.py").read_text(encoding="utf-8"))
    engine_version = next(
        node.value.value
        for node in engine_init.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
    )
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        project_version = tomllib.load(file)["project"]["version"]
    assert manifest["version"] == engine_version == project_version


def test_blender_validates_the_manifest(
    blender_ext: Callable[..., subprocess.CompletedProcess[str]], valid_tags_file: Path
) -> None:
    result = blender_ext("validate", str(REPO_ROOT), f"--valid-tags={valid_tags_file}")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def test_package_holds_the_add_on_and_nothing_else(extension_zip: Path) -> None:
    with zipfile.ZipFile(extension_zip) as archive:
        names = archive.namelist()
    for required in ("blender_manifest.toml", "__init__.py", "lca_blender/__init__.py"):
        assert required in names
    for sub_package in SUB_PACKAGES:
        assert f"{sub_package}/__init__.py" in names
    left_out = (".venv", ".git/", ".cache/", "tests/", "bench/", "scripts/", "build/", "pyproject.toml")
    stray = [
        name
        for name in names
        if name.startswith(left_out)
        or "__pycache__/" in name
        or name.endswith((".pyc", ".safetensors", ".onnx"))
        or ".partial" in name
        or ".egg-info/" in name
    ]
    assert not stray, f"the package should not ship {stray}"


def _our_registered_classes(module: str) -> set[type]:
    """Every class of ours that Blender currently has registered, whatever its base type."""
    found: set[type] = set()
    pending = [bpy.types.bpy_struct]
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        for subclass in cls.__subclasses__():
            if subclass in seen:
                continue
            seen.add(subclass)
            pending.append(subclass)
            if subclass.__module__.startswith(module) and getattr(subclass, "is_registered", False):
                found.add(subclass)
    return found


def _our_handlers(module: str) -> list[str]:
    """Application handlers (frame change, depsgraph, load, ...) whose function belongs to the add-on."""
    handlers = bpy.app.handlers
    found = []
    for name in dir(handlers):
        callbacks = getattr(handlers, name)
        if isinstance(callbacks, list):
            found += [
                f"{name}: {callback!r}"
                for callback in callbacks
                if getattr(callback, "__module__", "").startswith(module)
            ]
    return found


def _our_properties() -> list[str]:
    """Properties hung on Blender's own types by the add-on (its property groups use the `lca` prefix)."""
    owners = (bpy.types.Scene, bpy.types.Object, bpy.types.WindowManager, bpy.types.Armature, bpy.types.Mesh)
    return [
        f"{owner.__name__}.{prop.identifier}"
        for owner in owners
        for prop in owner.bl_rna.properties
        if prop.identifier.startswith("lca")
    ]


def _our_keymap_items() -> list[str]:
    addon_keyconfig = bpy.context.window_manager.keyconfigs.addon
    if addon_keyconfig is None:
        return []
    return [
        f"{keymap.name}: {item.idname}"
        for keymap in addon_keyconfig.keymaps
        for item in keymap.keymap_items
        if item.idname.startswith("lca.")
    ]


def _declared_classes(root: ModuleType) -> set[type]:
    """The classes each sub-package and each of its registered modules (`_modules`) declare."""
    declared: set[type] = set()
    for name in SUB_PACKAGES:
        package = getattr(root, name)
        for module in (package, *getattr(package, "_modules", ())):
            declared.update(getattr(module, "classes", ()))
    return declared


def test_enabling_registers_the_preferences(enabled_extension: ModuleType) -> None:
    module = enabled_extension.__name__
    addon = bpy.context.preferences.addons.get(module)
    assert addon is not None
    preferences = addon.preferences
    assert preferences is not None, "the add-on preferences class is not registered"
    assert type(preferences).is_registered
    assert type(preferences).bl_idname == module

    engine_python = preferences.bl_rna.properties["engine_python"]
    assert engine_python.subtype == "FILE_PATH"
    assert "virtual environment" in engine_python.description
    assert preferences.engine_python == ""
    preferences.engine_python = "/opt/lca/engine/bin/python"
    assert preferences.engine_python == "/opt/lca/engine/bin/python"


def test_installed_from_the_package_not_the_checkout(
    installed_extension: InstalledExtension, enabled_extension: ModuleType
) -> None:
    installed_at = Path(enabled_extension.__file__).resolve().parent
    assert installed_at == installed_extension.directory.resolve()
    assert installed_at != REPO_ROOT


def test_core_imports_inside_blender_as_a_sub_package(enabled_extension: ModuleType) -> None:
    installed_at = Path(enabled_extension.__file__).resolve().parent
    for name in BLENDER_SIDE_CORE_MODULES:
        module = importlib.import_module(f"{enabled_extension.__name__}.{name}")
        assert Path(module.__file__).resolve().is_relative_to(installed_at), name


def test_registers_exactly_what_it_declares(enabled_extension: ModuleType) -> None:
    assert _our_registered_classes(enabled_extension.__name__) == _declared_classes(enabled_extension)


def test_disabling_leaves_nothing_behind(installed_extension: InstalledExtension) -> None:
    module = installed_extension.module
    for _ in range(2):  # a second round checks that enabling again after a disable works too
        started = time.perf_counter()
        root = installed_extension.enable()
        enable_seconds = time.perf_counter() - started
        # Enabling only registers classes; anything heavy waits for an operator to run.
        assert enable_seconds < 2.0, f"enabling took {enable_seconds:.2f} s"
        assert _our_registered_classes(module) == _declared_classes(root)

        installed_extension.disable()
        assert bpy.context.preferences.addons.get(module) is None
        assert not any(cls.is_registered for cls in _declared_classes(root))
        assert _our_registered_classes(module) == set()
        assert _our_handlers(module) == []
        assert _our_properties() == []
        assert _our_keymap_items() == []
