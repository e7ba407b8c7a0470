"""The boundaries of DESIGN.md, checked on the source: no bpy in the core, no pickle, a light Blender side."""

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lca_blender

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE = REPO_ROOT / "lca_blender"
BLENDER_SIDE = (
    REPO_ROOT / "__init__.py",
    REPO_ROOT / "operators",
    REPO_ROOT / "panels",
    REPO_ROOT / "viewport",
)
NOT_SOURCE = {".git", ".cache", "__pycache__", "build", "out", ".pytest_cache", ".ruff_cache"}

# Modules that exist only inside Blender's Python (or the bpy module).
BLENDER_MODULES = {
    "bpy", "bpy_extras", "bpy_types", "bl_math", "bl_ui", "bl_operators", "bl_pkg", "bl_ext", "addon_utils",
    "mathutils", "gpu", "gpu_extras", "bmesh", "aud", "freestyle", "idprop", "imbuf", "rna_keymap_ui",
}  # fmt: skip
# Besides the standard library, the Python that Blender 4.2-5.x bundles ships these packages.
BUNDLED_WITH_BLENDER = {"numpy", "requests", "certifi", "charset_normalizer", "idna", "urllib3", "zstandard"}
# Engine packages: heavy, and absent from Blender's Python (which the allow-list above already keeps out).
ENGINE_PACKAGES = {
    "torch", "gsplat", "anny", "warp", "smplx", "roma", "mediapipe", "pycolmap", "onnx", "onnxruntime",
    "onnxscript", "cv2", "trimesh", "PIL", "scipy",
}  # fmt: skip
UNPICKLING_CALLS = {
    f"{module}.{function}"
    for module in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib")
    for function in ("load", "loads", "Unpickler")
} | {"pandas.read_pickle"}


def blender_loaded_core_modules() -> list[str]:
    """The core modules Blender may load, from the folder layout (see lca_blender/__init__.py)."""
    modules = ["lca_blender"]
    for path in sorted(CORE.glob("*.py")):
        if path.stem not in {"__init__", *lca_blender.ENGINE_ONLY_MODULES}:
            modules.append(f"lca_blender.{path.stem}")
    for package in lca_blender.BLENDER_LOADED_PACKAGES:
        for path in sorted((CORE / package).glob("*.py")):
            if not path.stem.endswith(lca_blender.TORCH_TWIN_SUFFIX):
                name = "" if path.stem == "__init__" else f".{path.stem}"
                modules.append(f"lca_blender.{package}{name}")
    return modules


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute_core_import(path: Path, module: str, level: int) -> str | None:
    """The core module an import in core file `path` names, or None when it names no core module."""
    if level == 0:
        return module if _top_level(module) == "lca_blender" else None
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _core_import_graph() -> dict[str, set[str]]:
    """Core module -> the core modules it imports (anywhere in it, function-local imports too)."""
    known = {_module_name(path) for path in _python_files(CORE)}
    graph: dict[str, set[str]] = {}
    for path in _python_files(CORE):
        edges = set()
        for node, module, level in _imports(_parse(path)):
            target = _absolute_core_import(path, module, level)
            if target is None:
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else []
            submodules = {f"{target}.{name}" for name in names} & known
            edges |= submodules or ({target} & known)
        graph[_module_name(path)] = edges - {_module_name(path)}
    return graph


def _python_files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for folder, subfolders, files in os.walk(root):
            # Pruned in place so that virtual environments and caches are never walked.
            subfolders[:] = sorted(name for name in subfolders if not _is_skipped(name))
            yield from (Path(folder) / name for name in sorted(files) if name.endswith(".py"))


def _is_skipped(folder_name: str) -> bool:
    return folder_name in NOT_SOURCE or folder_name.startswith(".venv") or folder_name.endswith(".egg-info")


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{node.lineno}"


def _imports(tree: ast.Module) -> Iterator[tuple[ast.AST, str, int]]:
    """Every import in a module, anywhere in it: (node, absolute or relative module name, level)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node, node.module or "", node.level
        elif (
            isinstance(node, ast.Call)
            and _dotted_name(node.func) in {"importlib.import_module", "import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node, node.args[0].value, 0


def _dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted_name(node.value)}.{node.attr}"
    return ""


def _top_level(module: str) -> str:
    return module.partition(".")[0]


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it was imported as (`np` -> `numpy`, `load` -> `pickle.load`)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _called_name(call: ast.Call, aliases: dict[str, str]) -> str:
    head, _, rest = _dotted_name(call.func).partition(".")
    head = aliases.get(head, head)
    return f"{head}.{rest}" if rest else head


def test_core_never_imports_blender() -> None:
    offences = [
        f"{_where(path, node)} imports {module}"
        for path in _python_files(CORE)
        for node, module, level in _imports(_parse(path))
        if level == 0 and _top_level(module) in BLENDER_MODULES
    ]
    assert not offences, "lca_blender must run without Blender:\n" + "\n".join(offences)


def test_core_imports_itself_relatively() -> None:
    # Inside Blender the core is bl_ext.<repo>.lca_avatars.lca_blender: `import lca_blender` would fail
    # there, and a relative import that climbs out of the package would reach the add-on.
    offences = []
    for path in _python_files(CORE):
        depth = len(path.relative_to(CORE).parts)  # lca_blender/x.py: 1, lca_blender/formats/x.py: 2
        for node, module, level in _imports(_parse(path)):
            if level == 0 and _top_level(module) == "lca_blender":
                offences.append(f"{_where(path, node)} imports {module} absolutely")
            elif level > depth:
                offences.append(f"{_where(path, node)} climbs out of lca_blender ({'.' * level}{module})")
    assert not offences, "\n".join(offences)


def test_blender_side_imports_only_what_blender_ships() -> None:
    allowed = set(sys.stdlib_module_names) | BLENDER_MODULES | BUNDLED_WITH_BLENDER
    offences = [
        f"{_where(path, node)} imports {module}"
        for path in _python_files(*BLENDER_SIDE)
        for node, module, level in _imports(_parse(path))
        if level == 0 and _top_level(module) not in allowed
    ]
    assert not offences, (
        "operators/, panels/ and viewport/ run in Blender's Python: the standard library, numpy, bpy and "
        "the package itself (relatively); engine work goes through the CLI:\n" + "\n".join(offences)
    )


def test_nothing_unpickles() -> None:
    offences = []
    for path in _python_files(REPO_ROOT):
        tree = _parse(path)
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = _called_name(node, aliases)
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            if called in UNPICKLING_CALLS:
                offences.append(f"{_where(path, node)} calls {called}")
            elif called == "torch.load" and not _is_constant(keywords.get("weights_only"), True):
                offences.append(f"{_where(path, node)} calls torch.load without weights_only=True")
            if "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
                offences.append(f"{_where(path, node)} passes allow_pickle other than False")
    assert not offences, "no pickle anywhere (loading a pickle can run code):\n" + "\n".join(offences)


def _is_constant(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_the_layout_names_real_folders() -> None:
    for package in lca_blender.BLENDER_LOADED_PACKAGES:
        assert (CORE / package / "__init__.py").is_file(), package
    assert len(blender_loaded_core_modules()) > len(lca_blender.BLENDER_LOADED_PACKAGES) + 3


def test_blender_side_imports_only_the_core_blender_loads() -> None:
    allowed = set(blender_loaded_core_modules())
    offences = []
    for path in _python_files(*BLENDER_SIDE):
        package = _module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        for node, module, level in _imports(_parse(path)):
            if level == 0:
                continue
            absolute = ".".join(
                ["x", *package][: len(package) + 1 - (level - 1)] + ([module] if module else [])
            )
            core = absolute.partition(".")[2]
            if _top_level(core) != "lca_blender":
                continue
            names = [alias.name for alias in node.names]
            named = {f"{core}.{name}" for name in names} & allowed or {core}
            offences += [f"{_where(path, node)} imports {name}" for name in sorted(named - allowed)]
    assert not offences, (
        "the add-on may load only the core's top-level modules (not cli) and "
        f"{', '.join(lca_blender.BLENDER_LOADED_PACKAGES)} (not their *_torch twins):\n" + "\n".join(offences)
    )


def test_blender_loaded_core_imports_only_numpy_and_itself() -> None:
    # Static, so it also sees imports inside functions, which the import probe below never runs.
    allowed_packages = set(sys.stdlib_module_names) | {"numpy"}
    allowed_core = set(blender_loaded_core_modules())
    offences = []
    for module in allowed_core:
        path = REPO_ROOT.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node, imported, level in _imports(_parse(path)):
            core = _absolute_core_import(path, imported, level)
            if core is None and _top_level(imported) not in allowed_packages:
                offences.append(f"{_where(path, node)} imports {imported}")
            elif core is not None and core not in allowed_core:
                names = {f"{core}.{alias.name}" for alias in getattr(node, "names", [])}
                if not names & allowed_core:
                    offences.append(f"{_where(path, node)} imports the engine's {core}")
    assert not offences, "Blender loads these modules: numpy and the standard library only:\n" + "\n".join(
        offences
    )


def test_the_core_has_no_import_circle() -> None:
    graph = _core_import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, (
        "import circles (a function-local import hides one, it does not break it):\n" + "\n".join(circles)
    )


@pytest.mark.parametrize("module", blender_loaded_core_modules())
def test_blender_loaded_core_modules_need_no_engine_packages(module: str) -> None:
    # A fresh interpreter, so nothing another test imported hides what this module pulls in.
    probe = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in sys.argv[2:])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, module, *sorted(ENGINE_PACKAGES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pulled_in = json.loads(result.stdout.strip().splitlines()[-1])
    assert pulled_in == [], f"importing {module} pulls in {pulled_in}"


def test_test_modules_one_run_collects_have_distinct_names() -> None:
    """The main run collects tests/core, tests/engine and tests/gpu together, as modules named by
    their file (the folders are not packages): two files of one name stop it at collection."""
    seen: dict[str, Path] = {}
    clashes = []
    for folder in ("core", "engine", "gpu"):
        for path in sorted((REPO_ROOT / "tests" / folder).glob("test_*.py")):
            if path.name in seen:
                clashes.append(f"{seen[path.name].relative_to(REPO_ROOT)} and {path.relative_to(REPO_ROOT)}")
            seen.setdefault(path.name, path)
    assert not clashes, f"Test modules of one name: {'; '.join(clashes)}"
