"""Build the installable extension, dist/lca_avatars-<version>.zip, with Blender's own extension tool.

Run with the Python of a bpy environment (`bash scripts/package.sh` sets one up and runs this).
What `blender --command extension validate` and `extension build` do, from the tool that ships
inside bpy: the checkout is validated against Blender's tag list (the one extensions.blender.org
uses), built with the manifest's exclusions, and the built zip is validated again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _blender_scripts() -> Path:
    import bpy

    return Path(bpy.utils.system_resource("SCRIPTS"))


def _run_tool(tool: Path, *arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, str(tool), *arguments], capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"extension {arguments[0]} failed:\n{result.stdout}{result.stderr}")


def build_package(output_dir: Path) -> Path:
    """Validate the checkout, build its zip into `output_dir`, validate the zip; returns its path."""
    with (REPO_ROOT / "blender_manifest.toml").open("rb") as file:
        manifest = tomllib.load(file)
    scripts = _blender_scripts()
    tool = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    valid_tags = f"--valid-tags={scripts / 'modules' / '_bpy_internal' / 'extensions' / 'tags.py'}"
    output = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    output_dir.mkdir(parents=True, exist_ok=True)
    _run_tool(tool, "validate", str(REPO_ROOT), valid_tags)
    _run_tool(tool, "build", f"--source-dir={REPO_ROOT}", f"--output-filepath={output}", valid_tags)
    _run_tool(tool, "validate", str(output), valid_tags)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "dist")
    output = build_package(parser.parse_args().output_dir.resolve())
    print(output)
    print(
        "Install it in Blender 4.2 or newer: Edit > Preferences > Get Extensions > Install from Disk, "
        "or drag the zip into Blender's window.",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # bpy 4.5 can hang at interpreter exit (see TESTING.md); nothing is left to do.
    os._exit(0)


if __name__ == "__main__":
    main()
