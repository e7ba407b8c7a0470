"""Rotation helpers in numpy: quaternions (w, x, y, z), matrices, axis-angles and Blender bone frames."""

from __future__ import annotations

import numpy as np


def quaternion_to_matrix(quaternions: np.ndarray) -> np.ndarray:
    """[..., 4] quaternions (w, x, y, z), not necessarily unit -> [..., 3, 3] rotation matrices."""
    q = quaternions / np.linalg.norm(quaternions, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    matrix = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return matrix.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrices: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions (w, x, y, z) with w >= 0."""
    m = np.asarray(matrices)
    entries = [m[..., row, column] for row in range(3) for column in range(3)]
    return np.stack(quaternion_from_matrix_entries(*entries), axis=-1)


def quaternion_from_matrix_entries(
    m00: np.ndarray,
    m01: np.ndarray,
    m02: np.ndarray,
    m10: np.ndarray,
    m11: np.ndarray,
    m12: np.ndarray,
    m20: np.ndarray,
    m21: np.ndarray,
    m22: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quaternion components (w, x, y, z), w >= 0, of rotation matrices given entry by entry.

    Shepperd's method: each of four formulas gives 4 * q_i * q; the one with the largest
    diagonal term q_i is accurate, so it is chosen per matrix. Working on separate entry arrays
    keeps every operation on long contiguous rows (the viewport's per-frame path uses this).
    """
    trace = m00 + m11 + m22
    # The largest of 4w^2 = 1 + trace and 4x^2 = 1 + 2 m00 - trace (and likewise for y, z).
    use_w = (trace >= m00) & (trace >= m11) & (trace >= m22)
    use_x = ~use_w & (m00 >= m11) & (m00 >= m22)
    use_y = ~use_w & ~use_x & (m11 >= m22)
    choices = [use_w, use_x, use_y, ~(use_w | use_x | use_y)]
    odd_x, odd_y, odd_z = m21 - m12, m02 - m20, m10 - m01
    even_x, even_y, even_z = m01 + m10, m02 + m20, m12 + m21
    w = np.select(choices, [1 + trace, odd_x, odd_y, odd_z])
    x = np.select(choices, [odd_x, 1 + m00 - m11 - m22, even_x, even_y])
    y = np.select(choices, [odd_y, even_x, 1 - m00 + m11 - m22, even_z])
    z = np.select(choices, [odd_z, even_y, even_z, 1 - m00 - m11 + m22])
    scale = np.where(w < 0, -1.0, 1.0).astype(w.dtype) / np.sqrt(w * w + x * x + y * y + z * z)
    return w * scale, x * scale, y * scale, z * scale


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of [..., 4] quaternions (w, x, y, z): rotate by b, then by a."""
    a, b = np.asarray(a), np.asarray(b)
    product = np.empty(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b))
    hamilton_rows(np.moveaxis(a, -1, 0), np.moveaxis(b, -1, 0), out=np.moveaxis(product, -1, 0))
    return product


def hamilton_rows(a, b, out: np.ndarray) -> None:
    """Hamilton products a * b of quaternions given as 4 rows (w, x, y, z) each, into `out`'s rows
    (the form of `quaternion_multiply` for data already laid out as rows)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    out[0] = aw * bw - ax * bx - ay * by - az * bz
    out[1] = aw * bx + ax * bw + ay * bz - az * by
    out[2] = aw * by - ax * bz + ay * bw + az * bx
    out[3] = aw * bz + ax * by - ay * bx + az * bw


def axis_angle_to_quaternion(rotation_vectors: np.ndarray) -> np.ndarray:
    """[..., 3] axis * angle (radians) -> [..., 4] unit quaternions (w, x, y, z)."""
    v = np.asarray(rotation_vectors, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    # sin(angle/2)/angle, with its limit 1/2 near zero.
    half_sinc = np.where(angle > 1e-8, np.sin(angle / 2) / np.maximum(angle, 1e-8), 0.5)
    return np.concatenate([np.cos(angle / 2), v * half_sinc], axis=-1)


def bone_matrix(heads: np.ndarray, tails: np.ndarray, rolls: np.ndarray) -> np.ndarray:
    """[..., 4, 4] Blender bone frames from heads, tails [..., 3] and rolls [...] (radians).

    Blender's own construction (vec_roll_to_mat3): the smallest rotation taking +Y onto the bone's
    direction, then the roll about the bone. Bones pointing almost exactly along -Y take Blender's
    fallback, a half turn about Z, so an armature built in Blender from the same heads, tails and
    rolls has exactly these rest matrices.
    """
    heads = np.asarray(heads, np.float64)
    direction = np.asarray(tails, np.float64) - heads
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    x, y, z = np.moveaxis(direction, -1, 0)
    theta = 1.0 + y
    theta_alt = x * x + z * z
    regular = (theta > 6.1e-3) | (theta_alt > 2.5e-4**2)
    # Near -Y Blender swaps in a series expansion of theta that stays accurate.
    theta = np.where(theta > 6.1e-3, theta, theta_alt * 0.5 + theta_alt * theta_alt * 0.125)
    theta = np.where(regular, theta, 1.0)
    # Column-major in Blender's source; written here as rows of the matrix whose columns are axes.
    basis = np.stack(
        [
            np.stack([1 - x * x / theta, x, -x * z / theta], -1),
            np.stack([-x, y, -z], -1),
            np.stack([-x * z / theta, z, 1 - z * z / theta], -1),
        ],
        axis=-2,
    )
    fallback = np.diag([-1.0, -1.0, 1.0])
    basis = np.where(regular[..., None, None], basis, fallback)
    roll = np.asarray(rolls, np.float64)
    cos_r, sin_r = np.cos(roll), np.sin(roll)
    zeros, ones = np.zeros_like(roll), np.ones_like(roll)
    roll_about_y = np.stack(
        [
            np.stack([cos_r, zeros, sin_r], -1),
            np.stack([zeros, ones, zeros], -1),
            np.stack([-sin_r, zeros, cos_r], -1),
        ],
        axis=-2,
    )
    matrix = np.zeros(heads.shape[:-1] + (4, 4))
    matrix[..., :3, :3] = basis @ roll_about_y
    matrix[..., :3, 3] = heads
    matrix[..., 3, 3] = 1.0
    return matrix


def bone_roll_towards(heads: np.ndarray, tails: np.ndarray, x_axes: np.ndarray) -> np.ndarray:
    """[...] the Blender roll (radians) that turns each bone's X axis closest to `x_axes` [..., 3]."""
    unrolled = bone_matrix(heads, tails, np.zeros(np.shape(heads)[:-1]))[..., :3, :3]
    # Express the wished X axis in the unrolled frame; the roll about Y is its angle in the X-Z plane.
    local = np.einsum("...ji,...j->...i", unrolled, np.asarray(x_axes, np.float64))
    return np.arctan2(-local[..., 2], local[..., 0])
