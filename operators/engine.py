"""The engine seen from Blender: where it is, how its jobs run under a modal operator, installing it.

Every long job (build, batch, install) is an `EngineController`: `step()` never waits, `cancel()`
leaves nothing behind. `ModalControllerMixin` makes an operator step one from a window-manager
timer; tests, and background Blender (no event loop), step it directly or run it to the end.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..lca_blender import __version__
from ..lca_blender.addon.engine_process import (
    EngineJob,
    JobStatus,
    engine_command,
    engine_environment,
    venv_python,
)
from ..lca_blender.errors import AvatarError

# The extension's root package (`bl_ext.<repository>.lca_avatars`): preferences and user data hang on it.
ADDON_PACKAGE = __package__.rpartition(".")[0]
ADDON_ROOT = Path(__file__).resolve().parents[1]
# The engine pins torch: an unpinned torch would pull several GB of CUDA wheels on CPU machines.
TORCH_REQUIREMENT = "torch==2.13.0"
# The last MediaPipe that bundles its Holistic models; it declares numpy<2 but runs with numpy 2,
# so it goes in alone, as scripts/setup_engine_env.sh does (its real needs are in [engine]).
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
POLL_INTERVAL_S = 0.1  # how often a running job is read while Blender waits for it


def preferences(context: bpy.types.Context | None = None) -> bpy.types.AddonPreferences | None:
    addon = (context or bpy.context).preferences.addons.get(ADDON_PACKAGE)
    return None if addon is None else addon.preferences


def user_folder(name: str) -> Path:
    """A folder in the extension's user data (kept across updates of the extension)."""
    return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path=name, create=True))


def installed_engine_venv() -> Path:
    """Where "Install engine" puts the engine's virtual environment."""
    return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path="engine", create=False))


def engine_start_command(context: bpy.types.Context | None = None) -> list[str]:
    """`<engine python> -m lca_blender.cli`, from the preferences or found (raises EngineNotFoundError)."""
    settings = preferences(context)
    configured = bpy.path.abspath(settings.engine_python) if settings and settings.engine_python else ""
    return engine_command(ADDON_ROOT, configured, extra_venvs=[installed_engine_venv()])


def engine_env() -> dict[str, str]:
    return engine_environment(ADDON_ROOT)


def build_options(context: bpy.types.Context | None = None) -> list[str]:
    """The engine flags that carry the preferences: device and quality preset."""
    settings = preferences(context)
    device = settings.device if settings else "AUTO"
    quality = settings.quality if settings else "STANDARD"
    return ["--device", device.lower(), "--quality", quality.lower()]


def online_access_allowed() -> bool:
    # Blender 4.2+ asks the user once whether extensions may go online; older Blenders have no such switch.
    return bool(getattr(bpy.app, "online_access", True))


# The one engine job (build, batch or install) running now: the sidebar shows it, lca.cancel_build stops it.
_running: EngineController | None = None


def running_controller() -> EngineController | None:
    return _running


def _set_running(controller: EngineController | None) -> None:
    global _running
    _running = controller


def show_progress(scene_name: str, fraction: float, stage: str, message: str, running: bool) -> None:
    """Write the running job's state where the sidebar reads it, and have the sidebars redrawn."""
    scene = bpy.data.scenes.get(scene_name)
    state = getattr(scene, "lca", None)  # gone while the add-on is being disabled
    if state is None:
        return
    state.build_progress = min(max(fraction, 0.0), 1.0)
    state.build_stage = stage
    state.build_message = message
    state.build_running = running
    redraw_sidebars()


def redraw_sidebars() -> None:
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


class EngineController:
    """What the operators' modal shell drives: `step()` until finished, `cancel()`; one runs at a time."""

    def __init__(self, scene: bpy.types.Scene) -> None:
        self.scene_name = scene.name
        self.status = JobStatus.NOT_STARTED
        self.message = ""  # the outcome, in words, once finished

    def step(self) -> JobStatus:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def run_to_end(self, timeout_s: float | None = None) -> JobStatus:
        """Step until done (background Blender has no timers to do it); cancels past `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.step().finished:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                break
            time.sleep(POLL_INTERVAL_S / 4)
        return self.status

    def _claim(self, title: str) -> None:
        if _running is not None:
            raise AvatarError("An engine job is already running; cancel it or wait for it to finish.")
        _set_running(self)
        self.status = JobStatus.RUNNING
        show_progress(self.scene_name, 0.0, "Starting the engine", title, running=True)

    def _release(self, stage: str, message: str) -> None:
        self.message = message
        fraction = 1.0 if self.status is JobStatus.SUCCEEDED else 0.0
        show_progress(self.scene_name, fraction, stage, message, running=False)
        if _running is self:
            _set_running(None)


class ModalControllerMixin:
    """The modal shell of Build, Batch and Install: a timer steps the controller, Esc cancels it."""

    _timer = None
    _controller = None

    def start_controller(
        self, context: bpy.types.Context, make_controller: Callable[[], EngineController]
    ) -> set[str]:
        """Make and start a controller, then run it; an AvatarError on the way is reported."""
        try:
            self._controller = make_controller().start()
        except AvatarError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return self.run_controller(context)

    def run_controller(self, context: bpy.types.Context) -> set[str]:
        if bpy.app.background:  # no event loop to deliver timer events: run to the end here
            self._controller.run_to_end()
            return self.finish_controller(context)
        self._timer = context.window_manager.event_timer_add(POLL_INTERVAL_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            self._controller.cancel()
        elif event.type != "TIMER":  # any timer tick will do: stepping more often costs nothing
            return {"PASS_THROUGH"}
        try:
            finished = self._controller.step().finished
        except BaseException:
            context.window_manager.event_timer_remove(self._timer)  # a bug ends the operator
            raise
        if not finished:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self.finish_controller(context)

    def cancel(self, context: bpy.types.Context) -> None:
        # Blender calls this when the operator is stopped from outside (closing the file, quitting).
        self._controller.cancel()
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)

    def finish_controller(self, context: bpy.types.Context) -> set[str]:
        status, message = self._controller.status, self._controller.message
        if status is JobStatus.SUCCEEDED:
            self.report({"INFO"}, message)
            return {"FINISHED"}
        self.report({"WARNING"} if status is JobStatus.CANCELLED else {"ERROR"}, message)
        return {"CANCELLED"}


@dataclass(frozen=True)
class InstallStep:
    label: str
    argv: list[str]


def install_steps(venv: Path, device: str = "AUTO", source: Path = ADDON_ROOT) -> list[InstallStep]:
    """The commands that create the engine's environment: a venv, pinned torch, this package's engine extras.

    From a checkout (a `pyproject.toml` beside the add-on) the engine is installed from it, so both
    sides run the same code; an installed extension installs the same version from the package index.
    """
    python = str(venv_python(venv))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    torch_source = ["--index-url", TORCH_CPU_INDEX] if device == "CPU" else []
    package = (
        f"{source}[engine]"
        if (source / "pyproject.toml").is_file()
        else f"lca-avatars[engine]=={__version__}"
    )
    return [
        InstallStep("Creating the environment", [sys.executable, "-m", "venv", str(venv)]),
        InstallStep("Installing torch", [*pip, *torch_source, TORCH_REQUIREMENT]),
        InstallStep("Installing the engine", [*pip, package]),
        InstallStep("Installing MediaPipe", [*pip, "--no-deps", MEDIAPIPE_REQUIREMENT]),
    ]


class InstallController(EngineController):
    """Runs the install steps one after the other; removes the half-made environment if one fails."""

    def __init__(self, scene: bpy.types.Scene, venv: Path, steps: Sequence[InstallStep]) -> None:
        super().__init__(scene)
        self.venv = venv
        self.steps = list(steps)
        self.index = 0
        self.job: EngineJob | None = None

    def start(self) -> InstallController:
        self._claim("Installing the engine")
        self._start_step()
        return self

    def step(self) -> JobStatus:
        if self.status.finished:
            return self.status
        self.job.poll()
        if self.job.status is JobStatus.SUCCEEDED:
            self.index += 1
            if self.index == len(self.steps):
                self.status = JobStatus.SUCCEEDED
                self._release("Done", f"Engine installed in {self.venv}")
            else:
                self._start_step()
        elif self.job.status.finished:
            self.status = JobStatus.FAILED
            self._remove_venv()
            self._release("Failed", f"{self.steps[self.index].label} failed: {self.job.error_message}")
        return self.status

    def cancel(self) -> None:
        if self.status.finished:
            return
        self.job.cancel()
        self.status = JobStatus.CANCELLED
        self._remove_venv()
        self._release("Cancelled", "Engine installation cancelled")

    def _start_step(self) -> None:
        step = self.steps[self.index]
        show_progress(
            self.scene_name, self.index / len(self.steps), step.label, "Installing the engine", True
        )
        self.job = EngineJob(step.argv, [], progress_flag=False)
        try:
            self.job.start()
        except AvatarError:
            self.status = JobStatus.FAILED
            self._remove_venv()
            self._release("Failed", f"{step.label} failed: {step.argv[0]} could not be started")
            raise

    def _remove_venv(self) -> None:
        # A half-installed environment would be found and used as the engine: none is better.
        shutil.rmtree(self.venv, ignore_errors=True)


class LCA_OT_install_engine(ModalControllerMixin, bpy.types.Operator):
    """Create the engine's Python environment (torch and the body model: downloads about 1 GB)"""

    bl_idname = "lca.install_engine"
    bl_label = "Install Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _running is None

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not online_access_allowed():
            self.report(
                {"ERROR"},
                "Installing the engine downloads packages, and Blender's online access is off: enable "
                "'Allow Online Access' in Preferences > System > Network, then try again.",
            )
            return {"CANCELLED"}
        settings = preferences(context)
        venv = installed_engine_venv()
        steps = install_steps(venv, settings.device if settings else "AUTO")
        return self.start_controller(context, lambda: InstallController(context.scene, venv, steps))


classes: tuple[type, ...] = (LCA_OT_install_engine,)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()


def unregister() -> None:
    # Disabling the add-on mid-job stops the engine and removes what it had written.
    if _running is not None:
        _running.cancel()
    _unregister_classes()
