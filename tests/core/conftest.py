"""Fixtures for the core tests: a small synthetic rig and avatar, and the real Anny rig (cached)."""

from __future__ import annotations

import pytest
from rig_builders import make_tube_rig, random_avatar

from lca_blender.avatar import GaussianAvatar, Rig


@pytest.fixture
def tube_rig() -> Rig:
    return make_tube_rig()


@pytest.fixture
def tube_avatar(tube_rig: Rig) -> GaussianAvatar:
    return random_avatar(tube_rig, 300)


@pytest.fixture(scope="session")
def anny_model():
    """Anny's own torch model (the reference); building it the first time takes about a minute."""
    pytest.importorskip("anny")
    from lca_blender.bodies.anny_body import load_anny_model

    return load_anny_model()


@pytest.fixture(scope="session")
def anny_rig(anny_model) -> Rig:
    from lca_blender.bodies.anny_body import extract_anny_rig

    return extract_anny_rig(model=anny_model)
