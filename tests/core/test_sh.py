"""The two real SH bases against values worked out by hand, Legendre's closed form, and their torch twins.

Orthonormality alone cannot see a swapped pair or a flipped sign, so every basis function is checked
at the axes and a diagonal against numbers written from the textbook formulas (the normalisations
computed here from pi, not taken from the module).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lca_blender.maths import sh

# Normalisations of the real SH, from sqrt((2l + 1) / 4 pi (l - |m|)! / (l + |m|)!) and the sqrt(2)
# of the real forms.
Y00 = 1 / (2 * math.sqrt(math.pi))  # 0.2821
L1 = math.sqrt(3 / (4 * math.pi))  # 0.4886: x, y, z
L2_XY = 0.5 * math.sqrt(15 / math.pi)  # 1.0925: xy, yz, xz
L2_ZZ = 0.25 * math.sqrt(5 / math.pi)  # 0.3154: 3z^2 - 1
L2_XXYY = 0.25 * math.sqrt(15 / math.pi)  # 0.5463: x^2 - y^2
L3_33 = 0.25 * math.sqrt(35 / (2 * math.pi))  # 0.5900: y (3x^2 - y^2), x (x^2 - 3y^2)
L3_XYZ = 0.5 * math.sqrt(105 / math.pi)  # 2.8906: xyz
L3_31 = 0.25 * math.sqrt(21 / (2 * math.pi))  # 0.4570: y (5z^2 - 1), x (5z^2 - 1)
L3_Z = 0.25 * math.sqrt(7 / math.pi)  # 0.3732: z (5z^2 - 3)
L3_ZXXYY = 0.25 * math.sqrt(105 / math.pi)  # 1.4453: z (x^2 - y^2)

S = 1 / math.sqrt(3)  # each coordinate of the diagonal direction

# The 3DGS colour basis, m = -l..l within each degree, with the Condon-Shortley phase (-1)^m:
#   l = 1: Y_1-1 = -L1 y, Y_10 = L1 z, Y_11 = -L1 x
#   l = 2: L2_XY xy, -L2_XY yz, L2_ZZ (3z^2 - 1), -L2_XY xz, L2_XXYY (x^2 - y^2)
#   l = 3: -L3_33 y (3x^2 - y^2), L3_XYZ xyz, -L3_31 y (5z^2 - 1), L3_Z z (5z^2 - 3),
#          -L3_31 x (5z^2 - 1), L3_ZXXYY z (x^2 - y^2), -L3_33 x (x^2 - 3y^2)
# evaluated by hand at each direction (on the diagonal x = y = z = S, S^2 = 1/3):
COLOUR_BASIS = {
    "+x": [
        Y00,
        0.0, 0.0, -L1,
        0.0, 0.0, -L2_ZZ, 0.0, L2_XXYY,
        0.0, 0.0, 0.0, 0.0, L3_31, 0.0, -L3_33,
    ],
    "+y": [
        Y00,
        -L1, 0.0, 0.0,
        0.0, 0.0, -L2_ZZ, 0.0, -L2_XXYY,
        L3_33, 0.0, L3_31, 0.0, 0.0, 0.0, 0.0,
    ],
    "+z": [
        Y00,
        0.0, L1, 0.0,
        0.0, 0.0, 2 * L2_ZZ, 0.0, 0.0,
        0.0, 0.0, 0.0, 2 * L3_Z, 0.0, 0.0, 0.0,
    ],
    "-z": [
        Y00,
        0.0, -L1, 0.0,
        0.0, 0.0, 2 * L2_ZZ, 0.0, 0.0,
        0.0, 0.0, 0.0, -2 * L3_Z, 0.0, 0.0, 0.0,
    ],
    "diagonal": [
        Y00,
        -L1 * S, L1 * S, -L1 * S,
        L2_XY / 3, -L2_XY / 3, 0.0, -L2_XY / 3, 0.0,
        -L3_33 * 2 * S / 3, L3_XYZ * S / 3, -L3_31 * 2 * S / 3, -L3_Z * 4 * S / 3,
        -L3_31 * 2 * S / 3, 0.0, L3_33 * 2 * S / 3,
    ],
}  # fmt: skip

# The irradiance basis: the same functions up to l = 2 without the phase (Ramamoorthi and Hanrahan).
IRRADIANCE_BASIS = {
    "+x": [Y00, 0.0, 0.0, L1, 0.0, 0.0, -L2_ZZ, 0.0, L2_XXYY],
    "+y": [Y00, L1, 0.0, 0.0, 0.0, 0.0, -L2_ZZ, 0.0, -L2_XXYY],
    "+z": [Y00, 0.0, L1, 0.0, 0.0, 0.0, 2 * L2_ZZ, 0.0, 0.0],
    "-z": [Y00, 0.0, -L1, 0.0, 0.0, 0.0, 2 * L2_ZZ, 0.0, 0.0],
    "diagonal": [Y00, L1 * S, L1 * S, L1 * S, L2_XY / 3, L2_XY / 3, 0.0, L2_XY / 3, 0.0],
}

DIRECTIONS = {
    "+x": [1.0, 0.0, 0.0],
    "+y": [0.0, 1.0, 0.0],
    "+z": [0.0, 0.0, 1.0],
    "-z": [0.0, 0.0, -1.0],
    "diagonal": [S, S, S],
}

# Float64 sums of a few products of values below 3: a few ulps. 1e-14 leaves a margin of ~10.
EXACT = 1e-14


@pytest.mark.parametrize("name", DIRECTIONS)
def test_colour_basis_at_the_axes_and_a_diagonal(name: str) -> None:
    direction = np.array(DIRECTIONS[name])
    for degree in range(4):
        expected = COLOUR_BASIS[name][: sh.coefficient_count(degree)]
        np.testing.assert_allclose(sh.sh_basis(direction, degree), expected, rtol=0, atol=EXACT)


@pytest.mark.parametrize("name", DIRECTIONS)
def test_irradiance_basis_at_the_axes_and_a_diagonal(name: str) -> None:
    found = sh.irradiance_basis(np.array(DIRECTIONS[name]))
    np.testing.assert_allclose(found, IRRADIANCE_BASIS[name], rtol=0, atol=EXACT)


def test_the_constants_are_the_normalisations() -> None:
    assert sh.SH_C0 == pytest.approx(Y00, rel=1e-15)
    assert sh.SH_C1 == pytest.approx(L1, rel=1e-15)
    np.testing.assert_allclose(sh.SH_C2, [L2_XY, -L2_XY, L2_ZZ, -L2_XY, L2_XXYY], rtol=1e-15)
    np.testing.assert_allclose(sh.SH_C3, [-L3_33, L3_XYZ, -L3_31, L3_Z, -L3_31, L3_ZXXYY, -L3_33], rtol=1e-15)


def test_the_bases_differ_by_the_condon_shortley_phase() -> None:
    directions = _random_directions(200, seed=3)
    phase = np.array([(-1.0) ** abs(m) for degree in range(3) for m in range(-degree, degree + 1)])
    np.testing.assert_allclose(
        sh.irradiance_basis(directions), sh.sh_basis(directions, 2) * phase, rtol=0, atol=EXACT
    )


def closed_form_real_sh(degree: int, order: int, directions: np.ndarray) -> np.ndarray:
    """Real SH Y_lm with the Condon-Shortley phase from associated Legendre polynomials."""
    x, y, z = directions.T
    theta, phi = np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x)
    m = abs(order)
    legendre = np.polynomial.legendre.Legendre.basis(degree).deriv(m)(np.cos(theta))
    associated = (-1) ** m * np.sin(theta) ** m * legendre
    norm = math.sqrt(
        (2 * degree + 1) / (4 * math.pi) * math.factorial(degree - m) / math.factorial(degree + m)
    )
    if order == 0:
        return norm * associated
    angular = np.cos(m * phi) if order > 0 else np.sin(m * phi)
    return math.sqrt(2) * norm * associated * angular


def _random_directions(count: int, seed: int) -> np.ndarray:
    directions = np.random.default_rng(seed).standard_normal((count, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def test_colour_basis_is_the_legendre_closed_form_everywhere() -> None:
    directions = _random_directions(500, seed=0)
    expected = np.stack(
        [
            closed_form_real_sh(degree, m, directions)
            for degree in range(4)
            for m in range(-degree, degree + 1)
        ],
        axis=1,
    )
    # The closed form goes through arccos, arctan2 and sin^m: ~1e-15 on values below 3.
    np.testing.assert_allclose(sh.sh_basis(directions, 3), expected, rtol=0, atol=1e-12)


def grid_sphere(rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint quadrature of the unit sphere: directions [M, 3] and solid angles [M]."""
    theta = (np.arange(rows) + 0.5) * math.pi / rows
    phi = (np.arange(2 * rows) + 0.5) * math.pi / rows
    t, p = np.meshgrid(theta, phi, indexing="ij")
    directions = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    return directions, (np.sin(t) * (math.pi / rows) ** 2).reshape(-1)


@pytest.mark.parametrize("basis", ["irradiance", "colour"])
def test_bases_are_orthonormal(basis: str) -> None:
    directions, solid_angles = grid_sphere()
    values = sh.irradiance_basis(directions) if basis == "irradiance" else sh.sh_basis(directions, 3)
    gram = values.T @ (values * solid_angles[:, None])
    # The midpoint rule's error in theta is O(h^2) with h = pi / 400: ~1e-5 for these polynomials.
    np.testing.assert_allclose(gram, np.eye(values.shape[1]), atol=1e-4)


def test_degree_helpers() -> None:
    assert [sh.coefficient_count(degree) for degree in range(4)] == [1, 4, 9, 16]
    assert [sh.degree_of(count) for count in (1, 4, 9, 16)] == [0, 1, 2, 3]
    for count in (0, 2, 25):
        with pytest.raises(ValueError, match="coefficient count"):
            sh.degree_of(count)
    for degree in (-1, 4):
        with pytest.raises(ValueError, match="0..3"):
            sh.sh_basis(np.array([0.0, 0.0, 1.0]), degree)


def test_torch_twins_match_numpy_in_float64_and_float32() -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths import sh_torch

    directions = np.concatenate([_random_directions(1000, seed=1), np.array(list(DIRECTIONS.values()))])
    for degree in range(4):
        expected = sh.sh_basis(directions, degree)
        found = sh_torch.sh_basis(torch.as_tensor(directions), degree)
        np.testing.assert_allclose(found.numpy(), expected, rtol=0, atol=EXACT)
        # float32: a few float32 ulps (6e-8 relative) of values below 3.
        single = sh_torch.sh_basis(torch.as_tensor(directions, dtype=torch.float32), degree)
        assert single.dtype == torch.float32
        np.testing.assert_allclose(single.numpy(), expected, rtol=0, atol=2e-6)
    found = sh_torch.irradiance_basis(torch.as_tensor(directions))
    np.testing.assert_allclose(found.numpy(), sh.irradiance_basis(directions), rtol=0, atol=EXACT)
    single = sh_torch.irradiance_basis(torch.as_tensor(directions, dtype=torch.float32))
    np.testing.assert_allclose(single.numpy(), sh.irradiance_basis(directions), rtol=0, atol=2e-6)


def test_torch_colour_is_the_basis_sum_plus_one_half_clamped_at_zero() -> None:
    torch = pytest.importorskip("torch")
    from lca_blender.maths.sh_torch import sh_to_color

    rng = np.random.default_rng(2)
    directions = _random_directions(300, seed=4)
    coefficients = rng.normal(0, 2.0, (300, 16, 3))  # wide enough to go below zero
    for degree in range(4):
        count = sh.coefficient_count(degree)
        expected = np.maximum(
            np.einsum("nb,nbd->nd", sh.sh_basis(directions, degree), coefficients[:, :count]) + 0.5, 0
        )
        # Only the first (degree + 1)^2 coefficients count, even when more are given.
        found = sh_to_color(torch.as_tensor(coefficients), torch.as_tensor(directions), degree)
        np.testing.assert_allclose(found.numpy(), expected, rtol=0, atol=1e-13)
        assert (found == 0).any() and (found > 0).any()  # the clamp is exercised
    with pytest.raises(ValueError, match="needs 9"):
        sh_to_color(torch.as_tensor(coefficients[:, :4]), torch.as_tensor(directions), 2)
