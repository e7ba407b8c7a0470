"""The Khronos glTF-Validator (npm package `gltf-validator`) for the tests: install once, run on a file.

A module of its own (not conftest.py), as rig_builders.py: tests import it by name. The package is
installed with npm into .cache/gltf-validator (git-ignored) the first time it is needed; tests
that use it skip only where `node` itself is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATOR_VERSION = "2.0.0-dev.3.10"
VALIDATOR_DIR = REPO_ROOT / ".cache" / "gltf-validator"
VALIDATOR_MODULE = VALIDATOR_DIR / "node_modules" / "gltf-validator"

# Prints the report of validateBytes as JSON; every issue is reported (maxIssues 0 = no limit).
_SCRIPT = """
const fs = require("fs");
const validator = require(process.argv[1]);
const data = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(data, {uri: process.argv[2], maxIssues: 0}).then(
  (report) => { process.stdout.write(JSON.stringify(report)); },
  (error) => { process.stderr.write(String(error)); process.exit(2); });
"""


def validator_available() -> None:
    """Skip the calling test without node; install the validator with npm when it is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs npm): glTF-Validator runs on node")
    if VALIDATOR_MODULE.is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, "node is installed without npm; install npm to fetch gltf-validator"
    VALIDATOR_DIR.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--prefix", str(VALIDATOR_DIR), f"gltf-validator@{VALIDATOR_VERSION}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm could not install gltf-validator:\n{result.stderr}"


def validate(path: Path) -> dict:
    """glTF-Validator's report on `path` (a dict with "issues": {"numErrors", "messages", ...})."""
    validator_available()
    result = subprocess.run(
        ["node", "-e", _SCRIPT, str(VALIDATOR_MODULE), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"glTF-Validator failed to run:\n{result.stderr}"
    return json.loads(result.stdout)


SPLAT_ATTRIBUTE_PREFIX = "KHR_gaussian_splatting:"


def unexpected_issues(report: dict) -> list[dict]:
    """The report's errors and warnings other than the two this validator gives every splat file:
    it predates KHR_gaussian_splatting, so it calls the extension unsupported (a warning) and its
    namespaced attributes invalid (MESH_PRIMITIVE_INVALID_ATTRIBUTE, an error)."""
    unexpected = []
    for message in report["issues"]["messages"]:
        if message["severity"] > 1:  # 2 information, 3 hint
            continue
        if message["code"] == "UNSUPPORTED_EXTENSION" and "KHR_gaussian_splatting" in message["message"]:
            continue
        if message["code"] == "MESH_PRIMITIVE_INVALID_ATTRIBUTE" and message["pointer"].split("/")[
            -1
        ].startswith(SPLAT_ATTRIBUTE_PREFIX):
            continue
        unexpected.append(message)
    return unexpected
