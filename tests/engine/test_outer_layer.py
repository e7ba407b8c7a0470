"""The outer layer: the hull of the photos' outlines beyond the skin, skinned so it poses with the body.

References: analytic volumes and orientation of a voxel box's surface; skinning undone and redone;
and a harness subject in a flared skirt photographed as mesh outlines (no Cycles): in a stride, the
avatar's rendered alpha covers its true skirt (the skin alone does not), and a subject in skin-tight
clothes gets next to no outer layer.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("anny")

from lca_blender.avatar import OUTER_LAYER, GaussianAvatar, Pose  # noqa: E402
from lca_blender.evaluate.garments import pose_garment  # noqa: E402
from lca_blender.evaluate.synthetic import SubjectSettings, draw_subject  # noqa: E402
from lca_blender.maths.cameras import Camera, look_at  # noqa: E402
from lca_blender.maths.deform import forward_kinematics, pose_avatar, pose_vertices  # noqa: E402
from lca_blender.reconstruct import outer_layer  # noqa: E402
from lca_blender.reconstruct.sample import sample_surface  # noqa: E402
from lca_blender.reconstruct.views import BodyFit, View  # noqa: E402
from lca_blender.render import render  # noqa: E402


def _signed_volume(vertices: np.ndarray, triangles: np.ndarray) -> float:
    corners = vertices[triangles]
    return float(np.einsum("ni,ni->n", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6)


def test_hull_surface_of_a_box_is_closed_and_faces_outwards():
    occupied = np.zeros((6, 5, 4), bool)
    occupied[1:4, 1:3, 1:4] = True  # 3 x 2 x 3 voxels
    occupied[4, 1, 1] = True  # and one more, sharing a face
    hull = outer_layer.Hull(occupied, np.array([0.5, -1.0, 2.0]), 0.1)
    surface = outer_layer.hull_surface(hull)
    assert _signed_volume(surface.vertices, surface.triangles) == pytest.approx(19 * 0.001, rel=1e-9)
    edges = np.sort(np.concatenate([surface.triangles[:, [0, 1]], surface.triangles[:, [1, 2]],
                                    surface.triangles[:, [2, 0]]]), axis=1)  # fmt: skip
    _, uses = np.unique(edges, axis=0, return_counts=True)
    assert (uses == 2).all()  # closed: every edge between exactly two triangles
    # Euler characteristic of a sphere-like surface.
    assert len(surface.vertices) - len(uses) + len(surface.triangles) == 2
    assert surface.vertices.min(axis=0) == pytest.approx([0.6, -0.9, 2.1])
    # Smoothing keeps it closed and about its size (Taubin does not shrink like plain Laplacian).
    smoothed = outer_layer.smooth(surface, 10)
    assert _signed_volume(smoothed.vertices, smoothed.triangles) == pytest.approx(0.019, rel=0.35)


def test_unskin_undoes_linear_blend_skinning():
    rng = np.random.default_rng(3)
    transforms = np.tile(np.eye(4), (3, 1, 1))
    for joint in range(3):
        angle = rng.uniform(-1, 1)
        transforms[joint, :3, :3] = cv2.Rodrigues(np.array([0.0, angle, 0.3 * angle]))[0]
        transforms[joint, :3, 3] = rng.normal(size=3) * 0.1
    weights = rng.dirichlet(np.ones(3), size=50)
    points = rng.normal(size=(50, 3))
    rest = outer_layer.unskin(points, weights, transforms)
    blended = np.einsum("nj,jab->nab", weights, transforms)
    again = np.einsum("nab,nb->na", blended[:, :3, :3], rest) + blended[:, :3, 3]
    np.testing.assert_allclose(again, points, atol=1e-10)


def test_components_label_separate_pieces():
    triangles = np.array([[0, 1, 2], [2, 1, 3], [4, 5, 6], [7, 8, 9], [9, 8, 4]])
    labels = outer_layer.connected_components(triangles, 11)
    assert labels[0] == labels[1] == labels[2] == labels[3]
    assert len({labels[i] for i in (4, 5, 6, 7, 8, 9)}) == 1 and labels[4] != labels[0]
    assert labels[10] not in labels[:10]  # a lone vertex is its own piece


# -- a harness subject photographed as outlines ---------------------------------------------------


def _outline(camera, meshes) -> np.ndarray:
    image = np.zeros((camera.height, camera.width), np.uint8)
    for vertices, triangles in meshes:
        in_camera = vertices @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
        pixels = in_camera[:, :2] / in_camera[:, 2:] @ camera.intrinsics[:2, :2].T + camera.intrinsics[:2, 2]
        for corners in np.round(pixels[triangles] * 16).astype(np.int32):
            cv2.fillConvexPoly(image, corners, 1, shift=4)
    return image.astype(np.float32)


def _subject(garments: tuple[str, ...]):
    settings = SubjectSettings(
        seed=23, photos=16, width=320, height=320, garments=garments, extra_poses=("stride",)
    )
    return draw_subject(settings, log=lambda _: None)


def _meshes(subject, pose, garments=True):
    meshes = [(pose_vertices(subject.rig, pose).astype(np.float64), subject.rig.triangles)]
    if garments:
        meshes += [
            (pose_garment(g, forward_kinematics(subject.rig, pose).skinning), g.triangles)
            for g in subject.garments
        ]
    return meshes


def _body_fit(subject) -> BodyFit:
    """The true body and the photos' outlines, as a perfect body fit would hand them over."""
    meshes = _meshes(subject, subject.capture)
    views = [
        View(
            camera.name,
            np.zeros((camera.height, camera.width, 3), np.float32),
            _outline(camera, meshes),
            camera,
        )
        for split, camera in subject.cameras
        if split == "input"
    ]
    expressions = np.zeros(len(subject.rig.expression_names), np.float32)
    return BodyFit(subject.rig, subject.capture, expressions, views, {})


def _rendered_alpha(rig, pose, camera) -> np.ndarray:
    """The alpha of opaque Gaussians covering `rig`'s whole mesh, posed, through `camera`."""
    count = 60_000
    triangle_ids, barycentrics = sample_surface(rig, count, np.random.default_rng(0))
    ones = np.ones(count, np.float32)
    avatar = GaussianAvatar(
        rig=rig,
        triangle_ids=triangle_ids,
        barycentrics=barycentrics,
        normal_offsets=np.zeros(count, np.float32),
        rotations=np.tile(np.array([1, 0, 0, 0], np.float32), (count, 1)),
        log_scales=np.full((count, 3), np.log(0.6), np.float32),
        opacities=ones * 0.99,
        albedo=np.full((count, 3), 0.5, np.float32),
        roughness=ones * 0.5,
        specular=ones * 0.5,
        sh=np.zeros((count, 1, 3), np.float32),
    )
    splats = pose_avatar(avatar, pose)
    result = render(
        *(torch.as_tensor(a) for a in (splats.means, splats.rotations, splats.scales, splats.opacities)),
        torch.ones(count, 1),
        torch.as_tensor(camera.viewmat, dtype=torch.float32)[None],
        torch.as_tensor(camera.intrinsics, dtype=torch.float32)[None],
        camera.width,
        camera.height,
    )
    return result.alpha[0, ..., 0].numpy()


@pytest.mark.slow
def test_a_skirt_stays_one_surface_in_a_stride():
    subject = _subject(("skirt",))
    body = _body_fit(subject)
    layered = outer_layer.fit_outer_layer(body)
    rig = layered.rig
    assert rig.vertex_layers is not None and (rig.vertex_layers == OUTER_LAYER).sum() > 1000
    assert rig.skin_vertex_count == subject.rig.vertex_count
    np.testing.assert_array_equal(rig.vertices[: subject.rig.vertex_count], subject.rig.vertices)
    (skirt,) = subject.garments
    stride = subject.extra_poses["stride"]
    for camera in [camera for split, camera in subject.cameras if split == "stride"]:
        truth = (
            _outline(
                camera,
                [(pose_garment(skirt, forward_kinematics(subject.rig, stride).skinning), skirt.triangles)],
            )
            > 0
        )
        covered = float((_rendered_alpha(rig, stride, camera) > 0.5)[truth].mean())
        skin_only = float((_rendered_alpha(subject.rig, stride, camera) > 0.5)[truth].mean())
        assert covered >= 0.98, camera.name
        assert skin_only < 0.9, camera.name  # the reference: the skin alone is the shorts it was


@pytest.mark.slow
def test_skin_tight_clothes_get_next_to_no_outer_layer():
    subject = _subject(())
    layered = outer_layer.fit_outer_layer(_body_fit(subject))
    area = layered.report["outer_layer"]["area_m2"]
    assert area < 0.02, f"{area} m² of outer layer on a body without clothes"


def _uv_sphere(radius: float, rows: int = 24, columns: int = 48) -> outer_layer.Surface:
    """A latitude-longitude sphere round the origin, its triangles counter-clockwise from outside."""
    polar = np.linspace(0, np.pi, rows + 1)[1:-1]
    azimuth = np.linspace(0, 2 * np.pi, columns, endpoint=False)
    ring = np.stack(np.meshgrid(polar, azimuth, indexing="ij"), axis=-1).reshape(-1, 2)
    sine = np.sin(ring[:, 0])
    points = np.stack([sine * np.cos(ring[:, 1]), sine * np.sin(ring[:, 1]), np.cos(ring[:, 0])], 1)
    vertices = radius * np.concatenate([[[0, 0, 1]], points, [[0, 0, -1]]])
    index = 1 + np.arange((rows - 1) * columns).reshape(rows - 1, columns)
    right = np.roll(index, -1, axis=1)
    triangles = [np.stack([np.zeros(columns, int), index[0], right[0]], 1)]
    for row in range(rows - 2):
        a, b, c, d = index[row], index[row + 1], right[row + 1], right[row]
        triangles += [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
    triangles.append(np.stack([np.full(columns, len(vertices) - 1), right[-1], index[-1]], 1))
    return outer_layer.Surface(vertices, np.concatenate(triangles))


def test_snapping_moves_the_hull_onto_the_outlines_of_a_sphere():
    """A sphere of radius r photographed all round, its hull 1 cm too large: the snap brings the
    rim vertices to where they project `snap_margin` pixels outside the analytic outline (a
    sphere's outline from distance D has radius f r / sqrt(D^2 - r^2) pixels; r is chosen to put
    it on a pixel boundary, where the mask's outline is exact), never further than the carve's
    surplus, and leaves a sphere inside every outline alone."""
    settings = outer_layer.OUTER_LAYER_SETTINGS
    distance, focal, size, outline_pixels = 3.0, 500.0, 256, 33.0
    radius = outline_pixels * distance / np.hypot(focal, outline_pixels)
    intrinsics = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    pixel = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
    rays = np.concatenate([(pixel - size / 2) / focal, np.ones((len(pixel), 1))], 1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    # The ray from the camera at distance D passes the centre (on its axis) at D sin(angle to the axis).
    mask = (distance * np.sqrt(1 - rays[:, 2] ** 2) < radius).reshape(size, size).astype(np.float32)
    views = []
    for k in range(16):
        angle = 2 * np.pi * k / 16
        position = distance * np.array([np.cos(angle), np.sin(angle), 0.0])
        camera = Camera(f"c{k}", position, look_at(position, np.zeros(3)), intrinsics, size, size)
        views.append(View(camera.name, np.zeros((size, size, 3), np.float32), mask, camera))
    large = _uv_sphere(radius + 0.01)
    assert _signed_volume(large.vertices, large.triangles) > 0
    snapped = outer_layer.snap_to_outlines(large, views, settings)
    moved = np.linalg.norm(large.vertices - snapped.vertices, axis=1)
    metres_per_pixel = distance / focal
    surplus = settings.voxel / 2 + (settings.mask_slack + 0.5 - settings.snap_margin) * metres_per_pixel
    assert moved.max() <= surplus + 1e-9
    outline = distance * (outline_pixels + settings.snap_margin) / focal
    # Equator vertices facing a camera's side exactly (every 22.5 degrees) are on its rim.
    equator = np.flatnonzero(np.abs(large.vertices[:, 2]) < 1e-9)
    azimuth = np.degrees(np.arctan2(large.vertices[equator, 1], large.vertices[equator, 0]))
    step = np.mod(azimuth, 22.5)
    on_rim = equator[np.isclose(step, 0, atol=1e-6) | np.isclose(step, 22.5)]
    assert len(on_rim) == 16
    np.testing.assert_allclose(np.linalg.norm(snapped.vertices[on_rim], axis=1), outline, atol=0.0005)
    assert np.linalg.norm(snapped.vertices[on_rim], axis=1).max() < radius + 0.01 - 0.004  # they did move
    small = _uv_sphere(radius - 0.01)
    unmoved = outer_layer.snap_to_outlines(small, views, settings)
    np.testing.assert_array_equal(unmoved.vertices, small.vertices)


@pytest.fixture(scope="module")
def small_rig():
    from lca_blender.bodies.anny_body import anny_rig

    return anny_rig({})


def test_too_few_photos_leave_the_body_alone(small_rig):
    expressions = np.zeros(len(small_rig.expression_names), np.float32)
    body = BodyFit(small_rig, Pose.rest(small_rig.joint_count), expressions, [], {})
    assert outer_layer.fit_outer_layer(body).rig is small_rig


def test_outer_layer_weights_are_kept_as_the_strongest_and_normalised(small_rig):
    rig = small_rig
    weights = np.zeros((3, rig.joint_count))
    weights[:, 0] = 0.7
    weights[:, -1] = 0.3
    appended = outer_layer.append_layer(rig, np.zeros((3, 3)), np.array([[0, 1, 2]]), weights, 4)
    assert appended.vertex_count == rig.vertex_count + 3
    assert appended.skin_vertex_count == rig.vertex_count
    np.testing.assert_allclose(appended.skin_weights[-3:].sum(axis=1), 1.0, atol=1e-6)
    assert appended.triangles[-1].tolist() == [rig.vertex_count, rig.vertex_count + 1, rig.vertex_count + 2]
    assert (appended.expression_deltas[:, -3:] == 0).all()


def test_a_photo_that_alone_carves_what_all_others_keep_is_left_out():
    rng = np.random.default_rng(4)
    person = rng.random(400) < 0.5
    shown = np.tile(person, (6, 1)) | (rng.random((6, 400)) < 0.02)  # masks a little generous
    shown[4] = person & (np.arange(400) < 120)  # a camera far off: most of the person carved away
    kept = outer_layer.consistent_views(shown, max_dissent=0.1, min_views=3)
    assert kept.tolist() == [True, True, True, True, False, True]
    # Photos that agree are all kept, and the carve never leaves fewer than min_views.
    assert outer_layer.consistent_views(np.tile(person, (6, 1)), 0.1, 3).all()
    assert outer_layer.consistent_views(rng.random((4, 400)) < 0.5, 0.1, 3).sum() == 3


@pytest.mark.slow
def test_a_misplaced_camera_does_not_carve_the_skirt_away():
    """The body fit can place a photo's camera wrongly (a real build put one 20 degrees off): it is
    left out of the hull and of the Gaussians' fit, and the skirt is carved as without it."""
    subject = _subject(("skirt",))
    body = _body_fit(subject)
    truth = outer_layer.fit_outer_layer(body)
    wrong = body.views[5]
    turn = np.eye(4)
    angle = np.radians(20)
    turn[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    camera = dataclasses.replace(wrong.camera, viewmat=turn @ wrong.camera.viewmat)
    views = [*body.views[:5], dataclasses.replace(wrong, camera=camera), *body.views[6:]]
    layered = outer_layer.fit_outer_layer(dataclasses.replace(body, views=views))
    assert layered.report["outer_layer"]["photos_left_out"] == [wrong.source]
    assert [view.source for view in layered.views] == [v.source for v in body.views if v is not wrong]
    assert truth.report["outer_layer"]["photos_left_out"] == []
    area, true_area = layered.report["outer_layer"]["area_m2"], truth.report["outer_layer"]["area_m2"]
    assert abs(area - true_area) < 0.05 * true_area
