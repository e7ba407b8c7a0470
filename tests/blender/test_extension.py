"""The repository is a valid Blender extension: its manifest, its package, and a clean enable/disable."""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import subprocess
import sys
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
# Packages only the engine needs: heavy, and none of them ships with Blender.
ENGINE_PACKAGES = (
    "torch", "gsplat", "anny", "warp", "smplx", "roma", "mediapipe", "pycolmap", "onnx", "onnxruntime",
    "onnxscript", "cv2", "trimesh", "PIL", "scipy",
)  # fmt: skip
# A repository of its own for the fresh Blender below, over the folder the extension is installed in.
FRESH_REPO_MODULE = "lca_fresh"
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


def test_manifest_names_this_blender_as_tested() -> None:
    # scripts/test.sh runs this suite on each Blender the manifest says it is tested on.
    text = MANIFEST_PATH.read_text(encoding="utf-8")
    tested = re.search(r"^# Tested on Blender (.+)$", text, re.MULTILINE)
    major, minor = bpy.app.version[:2]
    assert tested is not None and re.search(rf"\b{major}\.{minor}\b", tested.group(1)), (
        f"blender_manifest.toml's 'Tested on' line does not name Blender {major}.{minor}"
    )


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
    left_out = (
        ".venv", ".git/", ".cache/", "tests/", "bench/", "scripts/", "build/", "dist/", "examples/",
        "pyproject.toml",
    )  # fmt: skip
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


def blender_loaded_core_modules(core: Path) -> list[str]:
    """The core modules Blender may load, by the layout the core's `__init__.py` declares: the
    top-level modules but the engine-only ones, and every module of the Blender-loaded packages
    but the torch twins."""
    layout = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse((core / "__init__.py").read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    modules = ["lca_blender"]
    for path in sorted(core.glob("*.py")):
        if path.stem not in {"__init__", *layout["ENGINE_ONLY_MODULES"]}:
            modules.append(f"lca_blender.{path.stem}")
    for package in layout["BLENDER_LOADED_PACKAGES"]:
        for path in sorted((core / package).glob("*.py")):
            if not path.stem.endswith(layout["TORCH_TWIN_SUFFIX"]):
                name = "" if path.stem == "__init__" else f".{path.stem}"
                modules.append(f"lca_blender.{package}{name}")
    return modules


# Runs in a Python of its own, so that no other test's imports are in sys.modules: registers the
# installed extension's folder as a repository, enables the add-on, then imports the core modules
# named in argv; prints which modules each step added and where the named ones were loaded from.
_FRESH_BLENDER = """
import importlib, json, os, sys
import bpy
import addon_utils

directory, repo_module, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
bpy.context.preferences.extensions.repos.new(
    name="LCA fresh", module=repo_module, custom_directory=directory, source="USER"
)
addon = f"bl_ext.{repo_module}.lca_avatars"

def fail(error):
    raise error

before = set(sys.modules)
addon_utils.enable(addon, default_set=True, handle_error=fail)
by_enabling = sorted(set(sys.modules) - before)
files = {name: importlib.import_module(f"{addon}.{name}").__file__ for name in names}
by_importing = sorted(set(sys.modules) - before)
addon_utils.disable(addon, default_set=True, handle_error=fail)
found = {
    name: getattr(sys.modules.get(name), "__file__", None)
    for name in {module.partition(".")[0] for module in by_importing}
}
print(json.dumps({
    "addon": addon, "by_enabling": by_enabling, "by_importing": by_importing, "files": files,
    "top_level_files": found, "blender_scripts": bpy.utils.system_resource("SCRIPTS"),
}))
sys.stdout.flush()
os._exit(0)  # bpy 4.5 can hang at exit
"""


@pytest.fixture(scope="module")
def fresh_blender(installed_extension: InstalledExtension) -> dict:
    """What enabling the add-on and importing the Blender-loaded core modules load into a fresh Blender."""
    names = blender_loaded_core_modules(installed_extension.directory / "lca_blender")
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_BLENDER, str(installed_extension.directory.parent), FRESH_REPO_MODULE,
         json.dumps(names)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["names"] = names
    return report


def _outside_blender(report: dict, modules: list[str]) -> list[str]:
    """Top-level packages among `modules` that are neither the standard library, numpy, Blender's
    own modules (built in, or in Blender's scripts) nor the add-on."""
    scripts = Path(report["blender_scripts"]).resolve()
    outside = []
    for name in sorted({module.partition(".")[0] for module in modules}):
        file = report["top_level_files"].get(name)
        if name in sys.stdlib_module_names or name in {"numpy", "bl_ext"} or file is None:
            continue
        if not Path(file).resolve().is_relative_to(scripts):
            outside.append(name)
    return outside


def test_blender_loaded_core_modules_come_from_the_package_and_need_no_engine_package(
    installed_extension: InstalledExtension, fresh_blender: dict
) -> None:
    names = fresh_blender["names"]
    # The layout read right, on modules whose side is known.
    assert {"lca_blender.avatar", "lca_blender.maths.deform", "lca_blender.formats.lca"} <= set(names)
    assert not {"lca_blender.cli", "lca_blender.maths.deform_torch", "lca_blender.render"} & set(names)
    installed_at = installed_extension.directory.resolve()
    for name, file in fresh_blender["files"].items():
        assert Path(file).resolve().is_relative_to(installed_at), (name, file)
    loaded = fresh_blender["by_importing"]
    assert not [name for name in loaded if name.partition(".")[0] in ENGINE_PACKAGES]
    assert _outside_blender(fresh_blender, loaded) == []


def test_enabling_loads_no_engine_module(fresh_blender: dict) -> None:
    # Enabling only registers classes; anything heavy waits for an operator to run.
    loaded = fresh_blender["by_enabling"]
    assert not [name for name in loaded if name.partition(".")[0] in ENGINE_PACKAGES]
    assert _outside_blender(fresh_blender, loaded) == []
    core = f"{fresh_blender['addon']}.lca_blender"
    allowed = {f"{fresh_blender['addon']}.{name}" for name in fresh_blender["names"]}
    engine_only = [name for name in loaded if name.startswith(f"{core}.") and name not in allowed]
    assert engine_only == []


def test_registers_exactly_what_it_declares(enabled_extension: ModuleType) -> None:
    assert _our_registered_classes(enabled_extension.__name__) == _declared_classes(enabled_extension)


def test_disabling_leaves_nothing_behind(installed_extension: InstalledExtension) -> None:
    module = installed_extension.module
    for _ in range(2):  # a second round checks that enabling again after a disable works too
        root = installed_extension.enable()
        assert _our_registered_classes(module) == _declared_classes(root)

        installed_extension.disable()
        assert bpy.context.preferences.addons.get(module) is None
        assert not any(cls.is_registered for cls in _declared_classes(root))
        assert _our_registered_classes(module) == set()
        assert _our_handlers(module) == []
        assert _our_properties() == []
        assert _our_keymap_items() == []
