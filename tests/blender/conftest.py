"""Headless Blender (the `bpy` module) for tests: a sandboxed home, the installed extension, a clean exit.

These tests run in Blender's own environments (`scripts/setup_blender_env.sh` makes `.venv-blender`,
Blender 4.5 LTS; `scripts/setup_blender53_env.sh` makes `.venv-blender53`, Blender 5.3);
anywhere `bpy` cannot be imported the whole folder is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION_ID = "lca_avatars"
# The extensions repository the tests install into; the add-on's module becomes bl_ext.<this>.<id>.
TEST_REPO_MODULE = "lca_tests"
ADDON_MODULE = f"bl_ext.{TEST_REPO_MODULE}.{EXTENSION_ID}"

ENGINE_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
GAUSSIAN_COUNT = 20_000  # of the sample avatar

BPY_AVAILABLE = importlib.util.find_spec("bpy") is not None
_SANDBOX = REPO_ROOT / ".cache" / "blender-home"

if BPY_AVAILABLE:
    # Blender reads these when bpy is first imported and would otherwise write preferences, extension
    # repositories and temporary files into the user's home and /tmp. Set only when bpy is here, so
    # that a run of the whole suite in the engine's environment keeps its real home and caches.
    for _variable, _folder in (
        ("HOME", _SANDBOX),
        ("XDG_CONFIG_HOME", _SANDBOX / "config"),
        ("XDG_CACHE_HOME", _SANDBOX / "cache"),
        ("TMPDIR", _SANDBOX / "tmp"),
    ):
        _folder.mkdir(parents=True, exist_ok=True)
        os.environ[_variable] = str(_folder)
    # tempfile caches the temporary folder on first use, which pytest may already have made.
    tempfile.tempdir = None

    import bpy

    # isort: split
    import addon_utils  # bpy has to be imported first: it puts Blender's modules on sys.path

else:

    class _NeedsBpy(pytest.File):
        """Stands in for a test module here, reporting it as skipped instead of failing to import bpy."""

        def collect(self) -> Iterator[pytest.Item]:
            pytest.skip(
                "bpy is not installed in this environment; run `bash scripts/setup_blender_env.sh`, "
                "then `.venv-blender/bin/python -m pytest tests/blender`"
            )

    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector:
        # A module-level skip in this file would crash pytest when the folder is named on the
        # command line (an initial conftest may not skip); a skipping collector works either way.
        return _NeedsBpy.from_parent(parent, path=module_path)


# bpy 4.5 hangs at interpreter exit if anything is still registered (4.2 segfaults there), so a
# session that imported bpy leaves with os._exit once pytest has reported, with pytest's own status.
_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status is None or "bpy" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@dataclass(frozen=True)
class InstalledExtension:
    """The extension as installed into the test repository; enable() and disable() raise on errors."""

    module: str  # bl_ext.lca_tests.lca_avatars
    directory: Path

    def enable(self) -> ModuleType:
        root = addon_utils.enable(self.module, default_set=True, handle_error=_raise)
        assert root is not None, f"{self.module} did not enable"
        return root

    def disable(self) -> None:
        addon_utils.disable(self.module, default_set=True, handle_error=_raise)

    @property
    def is_enabled(self) -> bool:
        return bool(addon_utils.check(self.module)[1])


def process_is_gone(pid: int) -> bool:
    """Whether the process `pid` has exited and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _raise(error: BaseException) -> None:
    # addon_utils prints and swallows errors by default; a test must see them.
    raise error


@pytest.fixture(scope="session")
def blender_ext() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Blender's own extension tool (what `blender --command extension` runs), shipped inside bpy."""
    scripts = Path(bpy.utils.system_resource("SCRIPTS"))
    tool = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    if not tool.is_file():
        pytest.skip(f"this bpy ({bpy.app.version_string}) ships no extension tool at {tool}")

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(tool), *arguments], capture_output=True, text=True, timeout=120, check=False
        )

    return run


@pytest.fixture(scope="session")
def valid_tags_file() -> Path:
    """The tag list Blender validates manifests against (the one extensions.blender.org uses)."""
    return Path(bpy.utils.system_resource("SCRIPTS")) / "modules" / "_bpy_internal" / "extensions" / "tags.py"


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension package as the README's `bash scripts/package.sh` makes it: scripts/package.py
    run with this bpy (its own extension tool validates the checkout, builds, validates the zip),
    into a folder of the session instead of dist/."""
    output_dir = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "package.py"), f"--output-dir={output_dir}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"scripts/package.py failed:\n{result.stdout}\n{result.stderr}"
    with (REPO_ROOT / "blender_manifest.toml").open("rb") as file:
        version = tomllib.load(file)["version"]
    output = Path(result.stdout.strip().splitlines()[-1])
    assert output == output_dir / f"{EXTENSION_ID}-{version}.zip"
    assert "Install from Disk" in result.stderr
    with zipfile.ZipFile(output) as archive:
        assert archive.testzip() is None
    return output


@pytest.fixture(scope="session")
def installed_extension(
    extension_zip: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InstalledExtension]:
    """The package installed into a throw-away extensions repository, as "Install from Disk" does.

    Not enabled; removed again at the end of the session.
    """
    extensions = bpy.context.preferences.extensions
    repo_directory = tmp_path_factory.mktemp("extensions-repo")
    repo = extensions.repos.new(
        name="LCA tests", module=TEST_REPO_MODULE, custom_directory=str(repo_directory), source="USER"
    )
    installed = InstalledExtension(module=ADDON_MODULE, directory=repo_directory / EXTENSION_ID)
    try:
        result = bpy.ops.extensions.package_install_files(
            filepath=str(extension_zip), repo=TEST_REPO_MODULE, enable_on_install=False
        )
        assert result == {"FINISHED"}, result
        yield installed
    finally:
        if installed.is_enabled:
            installed.disable()
        extensions.repos.remove(repo)


@pytest.fixture(scope="session")
def sample_lca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample avatar (GAUSSIAN_COUNT Gaussians on the Anny body) written by the engine, in its own
    environment (with torch)."""
    if not ENGINE_PYTHON.exists():
        pytest.skip("the engine environment (.venv) is not set up; scripts/test.sh makes it")
    path = tmp_path_factory.mktemp("avatars") / "sample.lca"
    result = subprocess.run(
        [
            str(ENGINE_PYTHON),
            "-m",
            "lca_blender.cli",
            "new",
            "-o",
            str(path),
            "--gaussians",
            str(GAUSSIAN_COUNT),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"the engine could not make a sample:\n{result.stdout}\n{result.stderr}"
    return path


@pytest.fixture
def enabled_extension(installed_extension: InstalledExtension) -> Iterator[ModuleType]:
    """The extension enabled for one test and disabled after it; yields its root module."""
    root = installed_extension.enable()
    try:
        yield root
    finally:
        installed_extension.disable()


@pytest.fixture
def core(enabled_extension: ModuleType) -> Iterator[ModuleType]:
    """The add-on's own copy of the core (`bl_ext.<repo>.lca_avatars.lca_blender`); every object,
    mesh, armature and action is removed after the test."""
    yield importlib.import_module(f"{enabled_extension.__name__}.lca_blender")
    remove_all_data()


def core_module(core: ModuleType, name: str) -> ModuleType:
    """A module of the add-on's core, `name` relative to it (e.g. "maths.deform")."""
    return importlib.import_module(f"{core.__name__}.{name}")


def remove_all_data() -> None:
    for collection in (
        bpy.data.objects,
        bpy.data.meshes,
        bpy.data.armatures,
        bpy.data.actions,
        bpy.data.node_groups,
    ):
        for block in list(collection):
            collection.remove(block)
    for collection in list(bpy.data.collections):
        bpy.data.collections.remove(collection)


def blender_pose(core: ModuleType, rig_object: bpy.types.Object, rig) -> object:
    """The core Pose equal to the armature's current pose-bone rotations."""
    rotations = np.array(
        [rig_object.pose.bones[name].rotation_quaternion[:] for name in rig.joint_names], np.float32
    )
    # Blender interpolates keyed quaternions component-wise and normalises them when posing.
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    return core_module(core, "avatar").Pose(rotations=rotations, translation=np.zeros(3, np.float32))


class PanelLabels:
    """A stand-in layout for a panel's draw(): keeps its labels (text, icon), ignores the rest."""

    def __init__(self) -> None:
        self.labels: list[tuple[str, str]] = []
        self.alert = self.active = False

    def label(self, text: str = "", icon: str = "NONE", **settings) -> None:
        self.labels.append((text, icon))

    def column(self, **settings) -> PanelLabels:
        return self

    row = box = column

    def operator(self, *arguments, **settings) -> SimpleNamespace:
        return SimpleNamespace()

    def prop(self, *arguments, **settings) -> None:
        pass


def sidebar_labels(enabled_extension: ModuleType, active: bpy.types.Object) -> list[tuple[str, str]]:
    """The labels (text, icon) the LCA sidebar panel shows with `active` as the active object."""
    sidebar = importlib.import_module(f"{enabled_extension.__name__}.panels.sidebar")
    layout = PanelLabels()
    context = SimpleNamespace(scene=bpy.context.scene, active_object=active)
    sidebar.LCA_PT_avatar.draw(SimpleNamespace(layout=layout), context)
    return layout.labels


# Runs in the engine's environment (torch): the engine's renderer on the Gaussians and camera of a
# test, in each look asked for: "captured" (the SH seen from the camera, sRGB, made linear as
# Blender shows them) or "relit" (the given linear colours `relit`).
_ENGINE_REFERENCE_SCRIPT = """
import sys
import numpy as np
import torch
from lca_blender.maths.colour import srgb_to_linear
from lca_blender.maths.sh_torch import sh_to_color
from lca_blender.render import render

scene = np.load(sys.argv[1])
looks = sys.argv[3].split(",")
t = {key: torch.from_numpy(np.asarray(scene[key], np.float64)) for key in scene.files}
viewmat, K = t["viewmat"][None], t["K"][None]
width, height = int(scene["size"][0]), int(scene["size"][1])
degree = int(round(t["sh"].shape[1] ** 0.5)) - 1
images = {}
for look in looks:
    antialiased = look.endswith("_antialiased")
    look = look.removesuffix("_antialiased")
    if look == "relit":
        colors = t["relit"]
    else:
        centre = -viewmat[0, :3, :3].T @ viewmat[0, :3, 3]
        directions = t["means"] - centre
        directions = directions / directions.norm(dim=1, keepdim=True)
        colors = torch.from_numpy(srgb_to_linear(sh_to_color(t["sh"], directions, degree).numpy()))
    result = render(t["means"], t["quats"], t["scales"], t["opacities"], colors, viewmat, K, width, height,
                    backend="torch", antialiased=antialiased)
    name = look + ("_antialiased" if antialiased else "")
    images[name] = torch.cat([result.color, result.alpha], -1)[0].numpy()
np.savez(sys.argv[2], **images)
"""


def engine_reference(
    folder: Path, arrays: dict[str, np.ndarray], looks: tuple[str, ...] = ("captured",)
) -> dict[str, np.ndarray]:
    """[H, W, 4] linear premultiplied RGBA images of the engine's renderer, one per look, of the
    Gaussians `arrays` (means, quats, scales, opacities, sh, and relit for the relit look) seen by
    the OpenCV camera viewmat, K at size (width, height); skips when the engine is not set up. A
    look named with "_antialiased" after it renders the splats antialiased."""
    if not ENGINE_PYTHON.exists():
        pytest.skip("the engine's environment (.venv, with torch) is not set up")
    scene_file, output = folder / "scene.npz", folder / "reference.npz"
    np.savez(scene_file, **arrays)
    result = subprocess.run(
        [str(ENGINE_PYTHON), "-c", textwrap.dedent(_ENGINE_REFERENCE_SCRIPT), str(scene_file), str(output),
         ",".join(looks)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")},
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(output) as reference:
        return {key: reference[key] for key in reference.files}
