"""The .lca container: exact round trips, and malformed files rejected before any harm."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile

import numpy as np
import pytest

from lca_blender.errors import AvatarError, AvatarFileError, AvatarWriteError
from lca_blender.formats import lca


def assert_same_avatar(a, b):
    for field in dataclasses.fields(a):
        if field.name == "rig":
            continue
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, np.ndarray):
            assert left.dtype == right.dtype and np.array_equal(left, right), field.name
        else:
            assert left == right, field.name
    for field in dataclasses.fields(a.rig):
        left, right = getattr(a.rig, field.name), getattr(b.rig, field.name)
        if isinstance(left, np.ndarray):
            assert left.dtype == right.dtype and np.array_equal(left, right), field.name
        else:
            assert left == right, field.name


def test_round_trip_is_exact(tube_avatar, tmp_path):
    tube_avatar.provenance = {"photos": ["ab12"], "score": 0.5, "settings": {"preset": "standard"}}
    path = tmp_path / "avatar.lca"
    lca.write_avatar(path, tube_avatar)
    assert_same_avatar(tube_avatar, lca.read_avatar(path))


def test_round_trip_without_uvs_and_rig_only(tube_avatar, tmp_path):
    rig = dataclasses.replace(tube_avatar.rig, uvs=None, triangle_uvs=None)
    avatar = dataclasses.replace(tube_avatar, rig=rig)
    lca.write_avatar(tmp_path / "a.lca", avatar)
    back = lca.read_avatar(tmp_path / "a.lca")
    assert back.rig.uvs is None and back.rig.triangle_uvs is None
    lca.write_rig(tmp_path / "rig.lca", tube_avatar.rig)
    assert np.array_equal(lca.read_rig(tmp_path / "rig.lca").vertices, tube_avatar.rig.vertices)
    with pytest.raises(AvatarFileError, match="body rig only"):
        lca.read_avatar(tmp_path / "rig.lca")


def _with_outer_layer(avatar):
    """`avatar` with its rig's last quarter of vertices marked as the outer layer."""
    layers = np.zeros(avatar.rig.vertex_count, np.int32)
    layers[avatar.rig.vertex_count * 3 // 4 :] = 1
    return dataclasses.replace(avatar, rig=dataclasses.replace(avatar.rig, vertex_layers=layers))


def test_outer_layer_round_trips_and_schema_1_files_still_read(tube_avatar, tmp_path):
    layered = _with_outer_layer(tube_avatar)
    lca.write_avatar(tmp_path / "layered.lca", layered)
    back = lca.read_avatar(tmp_path / "layered.lca")
    assert_same_avatar(layered, back)
    assert back.rig.skin_vertex_count == tube_avatar.rig.vertex_count * 3 // 4
    # A file from before the outer layer: schema 1, no vertex_layers; every vertex is skin.
    lca.write_avatar(tmp_path / "old.lca", tube_avatar)
    members = _members(tmp_path / "old.lca")
    manifest = json.loads(members["manifest.json"])
    assert "rig/vertex_layers" not in manifest["arrays"]
    manifest["schema_version"] = 1
    members["manifest.json"] = json.dumps(manifest).encode()
    _write_members(tmp_path / "old.lca", members)
    old = lca.read_avatar(tmp_path / "old.lca")
    assert old.rig.vertex_layers is None and old.rig.skin_vertex_count == old.rig.vertex_count


def test_antialiased_round_trips_and_older_files_read_as_classic(tube_avatar, tmp_path):
    antialiased = dataclasses.replace(tube_avatar, antialiased=True)
    lca.write_avatar(tmp_path / "new.lca", antialiased)
    back = lca.read_avatar(tmp_path / "new.lca")
    assert_same_avatar(antialiased, back)
    assert back.antialiased is True
    assert lca.read_avatar(tmp_path / "new.lca").subset(np.arange(3)).antialiased is True
    # Schema 2 files, from before antialiased splats, have no such key: their splats are classic.
    members = _members(tmp_path / "new.lca")
    manifest = json.loads(members["manifest.json"])
    assert manifest["schema_version"] == 3 and manifest["antialiased"] is True
    del manifest["antialiased"]
    manifest["schema_version"] = 2
    members["manifest.json"] = json.dumps(manifest).encode()
    _write_members(tmp_path / "old.lca", members)
    assert lca.read_avatar(tmp_path / "old.lca").antialiased is False
    # Posed, the splats carry it to every renderer.
    from lca_blender.maths.deform import pose_avatar

    assert pose_avatar(back).antialiased and not pose_avatar(tube_avatar).antialiased


@pytest.mark.parametrize(
    "layers, message",
    [
        (lambda n: np.full(n, 2, np.int32), "must hold"),
        (lambda n: np.r_[np.ones(1, np.int32), np.zeros(n - 1, np.int32)], "must come before"),
        (lambda n: np.zeros(n - 1, np.int32), "shape"),
    ],
)
def test_invalid_vertex_layers_are_refused(tube_avatar, layers, message):
    with pytest.raises(AvatarError, match=message):
        dataclasses.replace(tube_avatar.rig, vertex_layers=layers(tube_avatar.rig.vertex_count))


def test_written_file_has_normal_permissions(tube_avatar, tmp_path):
    path = tmp_path / "avatar.lca"
    lca.write_avatar(path, tube_avatar)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# --- Malformed files -------------------------------------------------------------------------------


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_members(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _edit_manifest(edit):
    def apply(members):
        manifest = json.loads(members["manifest.json"])
        edit(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()

    return apply


def _replace_array(name, array):
    def apply(members):
        members[f"arrays/{name}.npy"] = _npy(array)
        manifest = json.loads(members["manifest.json"])
        manifest["arrays"][name] = {"shape": list(array.shape), "dtype": array.dtype.str}
        members["manifest.json"] = json.dumps(manifest).encode()

    return apply


def _set(members, name, data):
    members[name] = data


def _npy_with_header(header: str, payload: bytes = b"") -> bytes:
    text = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload


N = 300  # Gaussians in the fixture avatar
MALFORMED = {
    "no manifest": lambda m: m.pop("manifest.json"),
    "manifest not json": lambda m: _set(m, "manifest.json", b"{not json"),
    "manifest not utf8": lambda m: _set(m, "manifest.json", b"\xff\xfe\x00garbage"),
    "manifest is a list": lambda m: _set(m, "manifest.json", b"[1, 2, 3]"),
    "wrong format name": _edit_manifest(lambda d: d.update(format="gltf")),
    "schema version missing": _edit_manifest(lambda d: d.pop("schema_version")),
    "schema version from the future": _edit_manifest(lambda d: d.update(schema_version=99)),
    "schema version is text": _edit_manifest(lambda d: d.update(schema_version="1")),
    "antialiased is text": _edit_manifest(lambda d: d.update(antialiased="yes")),
    "arrays section missing": _edit_manifest(lambda d: d.pop("arrays")),
    "joint names not strings": _edit_manifest(lambda d: d["rig"].update(joint_names=[1, 2, 3, 4])),
    "joint count disagrees": _edit_manifest(lambda d: d["rig"].update(joint_names=["a", "b"])),
    "duplicate joint names": _edit_manifest(lambda d: d["rig"].update(joint_names=["a", "a", "b", "c"])),
    "array entry missing": lambda m: m.pop("arrays/gaussians/opacities.npy"),
    "array undeclared": _edit_manifest(lambda d: d["arrays"].pop("gaussians/sh")),
    "wrong dtype declared": _edit_manifest(lambda d: d["arrays"]["gaussians/opacities"].update(dtype="<f8")),
    "object dtype array": lambda m: _set(
        m,
        "arrays/gaussians/opacities.npy",
        _npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (300,), }", b"\x00" * 64),
    ),
    "float64 array": _replace_array("gaussians/opacities", np.full(N, 0.5)),
    "big-endian array": lambda m: _set(m, "arrays/gaussians/opacities.npy", _npy(np.full(N, 0.5, ">f4"))),
    "fortran order": lambda m: _set(
        m, "arrays/gaussians/albedo.npy", _npy(np.asfortranarray(np.full((N, 3), 0.5, np.float32)))
    ),
    "truncated array data": lambda m: _set(
        m, "arrays/gaussians/albedo.npy", m["arrays/gaussians/albedo.npy"][:-7]
    ),
    "extra bytes after array": lambda m: _set(
        m, "arrays/gaussians/albedo.npy", m["arrays/gaussians/albedo.npy"] + b"\x00" * 12
    ),
    "header shape disagrees with manifest": lambda m: _set(
        m, "arrays/gaussians/opacities.npy", _npy(np.full(N - 1, 0.5, np.float32))
    ),
    "gaussian counts disagree": _replace_array("gaussians/opacities", np.full(N + 5, 0.5, np.float32)),
    "NaN in normal offsets": _replace_array(
        "gaussians/normal_offsets", np.array([np.nan] + [0.0] * (N - 1), np.float32)
    ),
    "infinite vertex": _replace_array(
        "rig/vertices", np.where(np.arange(120 * 3).reshape(120, 3) == 5, np.inf, 0.0).astype(np.float32)
    ),
    "opacity above one": _replace_array("gaussians/opacities", np.full(N, 1.5, np.float32)),
    "triangle id out of range": _replace_array("gaussians/triangle_ids", np.full(N, 10**6, np.int32)),
    "negative vertex index": _replace_array("rig/triangles", -np.ones((220, 3), np.int32)),
    "parent after child": _replace_array("rig/joint_parents", np.array([-1, 2, 0, 1], np.int32)),
    "huge declared count": _edit_manifest(
        lambda d: d["arrays"]["gaussians/triangle_ids"].update(shape=[10**12])
    ),
    "negative declared size": _edit_manifest(
        lambda d: d["arrays"]["gaussians/triangle_ids"].update(shape=[-1])
    ),
    "shape is text": _edit_manifest(lambda d: d["arrays"]["gaussians/triangle_ids"].update(shape="300")),
    "wrong rank": _edit_manifest(lambda d: d["arrays"]["gaussians/albedo"].update(shape=[N])),
    "bad sh size": _replace_array("gaussians/sh", np.zeros((N, 5, 3), np.float32)),
    "npy magic wrong": lambda m: _set(m, "arrays/gaussians/opacities.npy", b"NOTNPY" + b"\x00" * 2000),
    "npy header not a dict": lambda m: _set(
        m, "arrays/gaussians/opacities.npy", _npy_with_header("__import__('os').system('true')")
    ),
    "npy header huge": lambda m: _set(
        m, "arrays/gaussians/opacities.npy", b"\x93NUMPY\x02\x00" + (10**8).to_bytes(4, "little") + b"{}"
    ),
    "npy unknown version": lambda m: _set(
        m, "arrays/gaussians/opacities.npy", b"\x93NUMPY\x09\x00" + m["arrays/gaussians/opacities.npy"][8:]
    ),
    "provenance not an object": _edit_manifest(lambda d: d.update(provenance=[1, 2])),
    "too many entries": lambda m: m.update({f"junk/{i}": b"" for i in range(300)}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_rejected(case, tube_avatar, tmp_path):
    good = tmp_path / "good.lca"
    lca.write_avatar(good, tube_avatar)
    members = _members(good)
    MALFORMED[case](members)
    bad = tmp_path / "bad.lca"
    _write_members(bad, members)
    with pytest.raises(AvatarFileError) as caught:
        lca.read_avatar(bad)
    assert "bad.lca" in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04 truncated", b"plain text, not a zip", b"\x00" * 4096],
    ids=["empty", "truncated zip", "text", "zeros"],
)
def test_non_zip_files_are_rejected(content, tmp_path):
    path = tmp_path / "bad.lca"
    path.write_bytes(content)
    with pytest.raises(AvatarFileError, match="not an LCA avatar"):
        lca.read_avatar(path)


def test_truncated_zip_is_rejected(tube_avatar, tmp_path):
    path = tmp_path / "avatar.lca"
    lca.write_avatar(path, tube_avatar)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(AvatarFileError):
            lca.read_avatar(path)


def test_declared_uncompressed_size_is_checked_before_reading(tube_avatar, tmp_path):
    """A zip bomb: the entry claims (and would inflate to) more than the cap allows."""
    path = tmp_path / "bomb.lca"
    good = tmp_path / "good.lca"
    lca.write_avatar(good, tube_avatar)
    members = _members(good)
    members["arrays/gaussians/opacities.npy"] = b"\x00" * (8 * 1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert path.stat().st_size < 200_000
    with pytest.raises(AvatarFileError, match="too large|truncated"):
        lca.read_avatar(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AvatarFileError, match="does not exist"):
        lca.read_avatar(tmp_path / "nope.lca")
    with pytest.raises(AvatarFileError):
        lca.read_avatar(tmp_path)


def test_failed_write_leaves_nothing_behind(tube_avatar, tmp_path, monkeypatch):
    path = tmp_path / "avatar.lca"

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", explode)
    with pytest.raises(AvatarWriteError, match="No space left"):
        lca.write_avatar(path, tube_avatar)
    assert list(tmp_path.iterdir()) == []


# Python 3.13's zipfile: the entry's writer, stopped inside its __init__, complains when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_while_an_entry_opens_is_the_stop_and_leaves_nothing(tube_avatar, tmp_path, monkeypatch):
    """Ctrl-C (or the add-on's Cancel) that lands while zipfile opens an entry: zipfile's close()
    then refuses ("an open writing handle"), and that error must not take the stop's place."""
    made = []
    real = zipfile._get_compressor

    def compressor(*args, **kwargs):
        made.append(1)
        if len(made) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(zipfile, "_get_compressor", compressor)
    path = tmp_path / "a.lca"
    with pytest.raises(KeyboardInterrupt):
        lca.write_avatar(path, tube_avatar)
    assert len(made) == 4 and list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tube_avatar, tmp_path, monkeypatch):
    path = tmp_path / "avatar.lca"
    lca.write_avatar(path, tube_avatar)
    before = path.read_bytes()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupt)
    with pytest.raises(KeyboardInterrupt):
        lca.write_avatar(path, tube_avatar)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["avatar.lca"]


def test_write_into_missing_folder_is_a_clear_error(tube_avatar, tmp_path):
    with pytest.raises(AvatarWriteError, match="does not exist"):
        lca.write_avatar(tmp_path / "missing" / "avatar.lca", tube_avatar)


def test_unserialisable_provenance_is_refused_before_writing(tube_avatar, tmp_path):
    tube_avatar.provenance = {"score": float("nan")}
    with pytest.raises(AvatarError):
        lca.write_avatar(tmp_path / "a.lca", tube_avatar)
    assert list(tmp_path.iterdir()) == []
