"""Tests for the 3DGS .ply reader and writer: round trips, byte layout, and malformed files."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from lca_blender.avatar import Splats
from lca_blender.errors import AvatarFileError, AvatarWriteError
from lca_blender.formats import ply
from lca_blender.formats.ply import MAX_SPLAT_COUNT, read_ply, write_ply

REQUIRED = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip


def random_splats(count: int, coefficients: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    quaternions = rng.normal(size=(count, 4))
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    return Splats(
        means=rng.normal(size=(count, 3)).astype(np.float32),
        rotations=quaternions.astype(np.float32),
        scales=rng.uniform(1e-3, 1.0, size=(count, 3)).astype(np.float32),
        opacities=rng.uniform(0.001, 0.999, size=count).astype(np.float32),
        sh=rng.normal(size=(count, coefficients, 3)).astype(np.float32),
    )


def split_header(data: bytes) -> tuple[list[str], bytes]:
    """The header lines (without end_header) and the bytes after it."""
    header, _, body = data.partition(b"end_header\n")
    return header.decode("ascii").splitlines(), body


def to_big_endian(data: bytes) -> bytes:
    """Rewrite a little-endian float-only .ply written by write_ply as big-endian."""
    lines, body = split_header(data)
    lines = ["format binary_big_endian 1.0" if line.startswith("format ") else line for line in lines]
    swapped = np.frombuffer(body, dtype="<f4").astype(">f4").tobytes()
    return ("\n".join(lines) + "\nend_header\n").encode("ascii") + swapped


def assert_splats_close(actual: Splats, expected: Splats) -> None:
    """Equal, but for scales and opacities, which the file holds as float32 logs and logits.

    Rounding a log L to float32 (2^-24 ~ 6e-8 relative) moves exp(L) by |L| x 6e-8 relative, and a
    logit l moves sigmoid(l) by at most |l| x 6e-8 relative; with scales in [1e-3, 1] and
    opacities in [0.001, 0.999] (|L|, |l| <= 6.91) and the final float32 rounding that is at most
    4.7e-7, inside rtol=1e-6.
    """
    np.testing.assert_array_equal(actual.means, expected.means)
    np.testing.assert_array_equal(actual.rotations, expected.rotations)
    np.testing.assert_array_equal(actual.sh, expected.sh)
    np.testing.assert_allclose(actual.scales, expected.scales, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(actual.opacities, expected.opacities, rtol=1e-6, atol=1e-7)
    for name in ("means", "rotations", "scales", "opacities", "sh"):
        assert getattr(actual, name).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Round trips and layout


@pytest.mark.parametrize("coefficients", [1, 4, 9, 16])
def test_round_trip_every_sh_degree(tmp_path: Path, coefficients: int) -> None:
    splats = random_splats(257, coefficients)
    path = tmp_path / "splats.ply"
    write_ply(path, splats)
    assert_splats_close(read_ply(path), splats)


@pytest.mark.parametrize("coefficients", [1, 16])
def test_big_endian_reads_the_same_as_little_endian(tmp_path: Path, coefficients: int) -> None:
    little = tmp_path / "little.ply"
    big = tmp_path / "big.ply"
    write_ply(little, random_splats(100, coefficients, seed=3))
    big.write_bytes(to_big_endian(little.read_bytes()))
    assert big.read_bytes() != little.read_bytes()
    from_little, from_big = read_ply(little), read_ply(big)
    for name in ("means", "rotations", "scales", "opacities", "sh"):
        np.testing.assert_array_equal(getattr(from_big, name), getattr(from_little, name))


def test_header_and_byte_layout(tmp_path: Path) -> None:
    # Distinct SH values: sh[0, k, c] = 10 * k + c, so every f_rest slot says where it came from.
    sh = (10 * np.arange(16)[:, None] + np.arange(3)[None, :]).astype(np.float32)[None]
    splats = Splats(
        means=np.array([[1.0, 2.0, 3.0]], np.float32),
        rotations=np.array([[0.5, 0.5, -0.5, 0.5]], np.float32),
        scales=np.array([[0.5, 2.0, 0.125]], np.float32),
        opacities=np.array([0.25], np.float32),
        sh=sh,
    )
    path = tmp_path / "golden.ply"
    write_ply(path, splats)
    lines, body = split_header(path.read_bytes())

    rest = [f"f_rest_{index}" for index in range(45)]
    names = [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest,
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ]  # fmt: skip
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert [line for line in lines if line.startswith("element")] == ["element vertex 1"]
    assert [line for line in lines if line.startswith("property")] == [
        f"property float {name}" for name in names
    ]
    assert all(line.startswith(("comment", "element", "property")) for line in lines[2:])

    assert len(body) == 4 * len(names)
    values = dict(zip(names, np.frombuffer(body, dtype="<f4").tolist(), strict=True))
    assert [values[n] for n in ("x", "y", "z")] == [1.0, 2.0, 3.0]
    assert [values[n] for n in ("nx", "ny", "nz")] == [0.0, 0.0, 0.0]
    assert [values[f"f_dc_{c}"] for c in range(3)] == [0.0, 1.0, 2.0]
    # INRIA layout, channel-major: f_rest index = channel * 15 + (coefficient - 1).
    for channel in range(3):
        for coefficient in range(1, 16):
            stored = values[f"f_rest_{channel * 15 + coefficient - 1}"]
            assert stored == 10 * coefficient + channel
    assert values["opacity"] == pytest.approx(np.log(0.25 / 0.75), rel=1e-6)
    assert [values[f"scale_{i}"] for i in range(3)] == pytest.approx(np.log([0.5, 2.0, 0.125]))
    assert [values[f"rot_{i}"] for i in range(4)] == [0.5, 0.5, -0.5, 0.5]  # w, x, y, z


def test_opacities_at_zero_and_one_are_clipped(tmp_path: Path) -> None:
    splats = random_splats(2, 1)
    splats.opacities[:] = [0.0, 1.0]
    path = tmp_path / "edges.ply"
    write_ply(path, splats)
    # The logits are +-13.8; rounded to float32 they move the opacities by under 1e-6 relative.
    np.testing.assert_allclose(read_ply(path).opacities, [1e-6, 1 - 1e-6], rtol=1e-5)


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("mixed_types", [True, False], ids=["mixed types", "floats only"])
def test_reads_other_writers_layouts(tmp_path: Path, endian: str, mixed_types: bool) -> None:
    """Shuffled property order, doubles, extra properties and an empty face element are fine."""
    count = 5
    fields = [
        ("red", "u1"), ("rot_3", "f8"), ("rot_2", "f4"), ("rot_1", "f4"), ("rot_0", "f4"),
        ("x", "f8"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4"),
        ("scale_2", "f4"), ("scale_1", "f4"), ("scale_0", "f4"), ("opacity", "f8"),
        ("f_dc_0", "f4"), ("f_dc_1", "f4"), ("f_dc_2", "f4"), ("confidence", "i2"),
        *((f"f_rest_{index}", "f4") for index in range(9)),
    ]  # fmt: skip
    fields = [(name, endian + (code if mixed_types else "f4")) for name, code in fields]
    rows = np.zeros(count, dtype=fields)
    rng = np.random.default_rng(7)
    for name, _ in fields:
        rows[name] = rng.normal(size=count)
    rows["red"] = 200
    rows["confidence"] = -3
    types = {"u1": "uchar", "f4": "float", "f8": "double", "i2": "short"}
    header = [
        "ply",
        f"format binary_{'little' if endian == '<' else 'big'}_endian 1.0",
        "comment written by some other tool",
        "obj_info nothing",
        f"element vertex {count}",
        *(f"property {types[code[1:]]} {name}" for name, code in fields),
        "element face 0",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    path = tmp_path / "other.ply"
    path.write_bytes(("\n".join(header) + "\n").encode() + rows.tobytes())

    splats = read_ply(path)
    # Converted in float64 from the stored values, as here, then rounded once to float32 (6e-8).
    np.testing.assert_array_equal(
        splats.means, np.stack([rows["x"], rows["y"], rows["z"]], axis=1).astype(np.float32)
    )
    quaternions = np.stack([rows[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    np.testing.assert_allclose(splats.rotations, quaternions, rtol=1e-6, atol=1e-7)
    log_scales = np.stack([rows[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float64)
    np.testing.assert_allclose(splats.scales, np.exp(log_scales), rtol=1e-6)
    np.testing.assert_allclose(splats.opacities, 1 / (1 + np.exp(-rows["opacity"])), rtol=1e-6)
    assert splats.sh.shape == (count, 4, 3)
    np.testing.assert_array_equal(splats.sh[:, 0, 1], rows["f_dc_1"])
    np.testing.assert_array_equal(splats.sh[:, 2, 1], rows["f_rest_4"])  # green, coefficient 2


@pytest.mark.parametrize(
    "comment, antialiased",
    [
        (None, False),
        ("comment SplatRenderMode: mip", True),  # Brush, SplatTransform
        ("comment splatrendermode:MIP", True),
        ("comment postshot.anti_aliasing=1", True),  # Postshot
        ("comment postshot.anti_aliasing=0", False),
        ("comment SplatRenderMode: classic", False),
    ],
)
def test_antialiased_splats_are_marked_and_recognised(tmp_path: Path, comment, antialiased) -> None:
    splats = random_splats(4, 1)
    splats.antialiased = True
    write_ply(tmp_path / "ours.ply", splats)
    lines, body = split_header((tmp_path / "ours.ply").read_bytes())
    assert "comment SplatRenderMode: mip" in lines and read_ply(tmp_path / "ours.ply").antialiased
    # Another trainer's file: its comment, or none, decides.
    others = [line for line in lines if not line.startswith("comment")]
    others[2:2] = [comment] if comment else []
    (tmp_path / "other.ply").write_bytes(("\n".join([*others, "end_header"]) + "\n").encode() + body)
    assert read_ply(tmp_path / "other.ply").antialiased is antialiased


def test_crlf_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "crlf.ply"
    write_ply(path, random_splats(3, 4))
    lines, body = split_header(path.read_bytes())
    path.write_bytes(("\r\n".join([*lines, "end_header"]) + "\r\n").encode() + body)
    assert read_ply(path).count == 3


def test_non_finite_rows_are_dropped_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    splats = random_splats(6, 4)
    path = tmp_path / "holes.ply"
    write_ply(path, splats)
    lines, body = split_header(path.read_bytes())
    table = np.frombuffer(body, dtype="<f4").reshape(6, -1).copy()
    names = [line.split()[2] for line in lines if line.startswith("property")]
    table[1, names.index("x")] = np.nan
    table[2, names.index("f_rest_5")] = np.inf
    table[3, names.index("scale_1")] = 1000.0  # exp overflows float32
    table[4, [names.index(f"rot_{i}") for i in range(4)]] = 0.0
    table[5, names.index("nx")] = np.nan  # ignored property: the row stays
    path.write_bytes(("\n".join([*lines, "end_header"]) + "\n").encode() + table.tobytes())

    with caplog.at_level(logging.WARNING, logger="lca_blender.formats.ply"):
        result = read_ply(path)
    assert "Dropped 4 of 6 splats" in caplog.text
    kept = [0, 5]
    np.testing.assert_array_equal(result.means, splats.means[kept])
    np.testing.assert_array_equal(result.sh, splats.sh[kept])
    np.testing.assert_allclose(result.scales, splats.scales[kept], rtol=1e-6)  # as assert_splats_close


def test_unnormalised_quaternions_are_normalised(tmp_path: Path) -> None:
    splats = random_splats(4, 1)
    path = tmp_path / "raw.ply"
    write_ply(path, splats)
    lines, body = split_header(path.read_bytes())
    table = np.frombuffer(body, dtype="<f4").reshape(4, -1).copy()
    table[:, -4:] *= np.array([[2.0], [0.1], [7.0], [1.0]], np.float32)  # INRIA stores raw params
    path.write_bytes(("\n".join([*lines, "end_header"]) + "\n").encode() + table.tobytes())
    rotations = read_ply(path).rotations
    # Scaling in float32 and normalising in float64 each round by about 6e-8 relative.
    np.testing.assert_allclose(np.linalg.norm(rotations, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(rotations, splats.rotations, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Malformed files


def valid_header(count: int = 2, properties: list[str] | None = None) -> list[str]:
    properties = properties if properties is not None else [f"float {n}" for n in REQUIRED]
    return [
        "ply",
        "format binary_little_endian 1.0",
        f"element vertex {count}",
        *(f"property {p}" for p in properties),
        "end_header",
    ]


def valid_rows(count: int = 2, extra_floats: int = 0) -> np.ndarray:
    """[count, 14 + extra] float32 rows of REQUIRED values: small, unit rotation, opacity 0.5."""
    rows = np.zeros((count, len(REQUIRED) + extra_floats), dtype="<f4")
    rows[:, REQUIRED.index("scale_0") : REQUIRED.index("scale_2") + 1] = -3.0
    rows[:, REQUIRED.index("rot_0")] = 1.0
    return rows


def ply_bytes(header: list[str], body: bytes | None = None) -> bytes:
    return ("\n".join(header) + "\n").encode() + (valid_rows().tobytes() if body is None else body)


def header_without(name: str) -> list[str]:
    return valid_header(properties=[f"float {n}" for n in REQUIRED if n != name])


def header_with(*extra: str, count: int = 2) -> list[str]:
    return valid_header(count, [*(f"float {n}" for n in REQUIRED), *extra])


def header_replacing(old: str, new: str) -> list[str]:
    return [new if line == old else line for line in valid_header()]


def rows_filled(value: float, column: str) -> bytes:
    rows = valid_rows()
    rows[:, REQUIRED.index(column)] = value
    return rows.tobytes()


MALFORMED: dict[str, bytes] = {  # case -> file content
    "empty file": b"",
    "not a ply": b"solid cube\nfacet normal 0 0 1\n",
    "ply only as a prefix": b"plyx\nformat binary_little_endian 1.0\nend_header\n",
    "no end_header within the cap": b"ply\nformat binary_little_endian 1.0\n"
    + b"comment "
    + b"a" * (ply.HEADER_LIMIT_BYTES + 10)
    + b"\nend_header\n",
    "file ends inside the header": b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n",
    "ascii format": ply_bytes(header_replacing("format binary_little_endian 1.0", "format ascii 1.0")),
    "unknown format": ply_bytes(
        header_replacing("format binary_little_endian 1.0", "format binary_middle_endian 1.0")
    ),
    "unknown format version": ply_bytes(
        header_replacing("format binary_little_endian 1.0", "format binary_little_endian 2.0")
    ),
    "missing format line": ply_bytes([line for line in valid_header() if not line.startswith("format")]),
    "format line twice": ply_bytes(["ply", "format binary_little_endian 1.0", *valid_header()[1:]]),
    "no vertex element": ply_bytes(
        ["ply", "format binary_little_endian 1.0", "element face 0", "end_header"], b""
    ),
    "missing x": ply_bytes(header_without("x"), valid_rows(2)[:, 1:].tobytes()),
    "missing opacity": ply_bytes(header_without("opacity"), valid_rows(2)[:, 1:].tobytes()),
    "missing scale_2": ply_bytes(header_without("scale_2"), valid_rows(2)[:, 1:].tobytes()),
    "missing rot_3": ply_bytes(header_without("rot_3"), valid_rows(2)[:, 1:].tobytes()),
    "missing f_dc_1": ply_bytes(header_without("f_dc_1"), valid_rows(2)[:, 1:].tobytes()),
    "ordinary point cloud": ply_bytes(
        valid_header(2, ["float x", "float y", "float z", "uchar red", "uchar green", "uchar blue"]),
        bytes(2 * 15),
    ),
    "list property in vertex": ply_bytes(header_with("list uchar int indices")),
    "unknown property type": ply_bytes(header_with("half nx")),
    "integer type for a splat value": ply_bytes(
        header_replacing("property float opacity", "property uchar opacity")
    ),
    "property line without a name": ply_bytes(header_with("float")),
    "non-numeric count": ply_bytes(header_replacing("element vertex 2", "element vertex two")),
    "fractional count": ply_bytes(header_replacing("element vertex 2", "element vertex 1.5")),
    "negative count": ply_bytes(header_replacing("element vertex 2", "element vertex -2")),
    "count with no number": ply_bytes(header_replacing("element vertex 2", "element vertex")),
    "huge declared count": ply_bytes(header_replacing("element vertex 2", f"element vertex {10**12}")),
    "count just over the cap": ply_bytes(
        header_replacing("element vertex 2", f"element vertex {MAX_SPLAT_COUNT + 1}")
    ),
    "thousand-digit count": ply_bytes(header_replacing("element vertex 2", "element vertex " + "9" * 1000)),
    "zero count": ply_bytes(header_replacing("element vertex 2", "element vertex 0"), b""),
    "count larger than the data": ply_bytes(header_replacing("element vertex 2", "element vertex 10")),
    "truncated mid-row": ply_bytes(valid_header(), valid_rows().tobytes()[:-5]),
    "trailing data": ply_bytes(valid_header(), valid_rows().tobytes() + b"\0" * 7),
    "five f_rest properties": ply_bytes(
        header_with(*(f"float f_rest_{i}" for i in range(5))), valid_rows(2, 5).tobytes()
    ),
    "f_rest with a gap": ply_bytes(
        header_with(*(f"float f_rest_{i}" for i in range(10) if i != 3)),
        valid_rows(2, 9).tobytes(),
    ),
    "all rows NaN": ply_bytes(valid_header(), rows_filled(np.nan, "y")),
    "all rotations zero": ply_bytes(valid_header(), rows_filled(0.0, "rot_0")),
    "all scales overflow": ply_bytes(valid_header(), rows_filled(500.0, "scale_1")),
    "duplicate property names": ply_bytes(header_with("float x"), valid_rows(2, 1).tobytes()),
    "binary junk in the header": b"ply\nformat binary_little_endian 1.0\n\xff\xfe\x00\x81\nend_header\n",
    "unknown header keyword": ply_bytes(header_with(count=2)[:-1] + ["vertices 2", "end_header"]),
    "property before any element": ply_bytes(
        ["ply", "format binary_little_endian 1.0", "property float x", *valid_header()[2:]]
    ),
    "properties after a different element": ply_bytes(
        ["ply", "format binary_little_endian 1.0", "element vertex 2", "element face 0"] + valid_header()[3:]
    ),
    "vertex element twice": ply_bytes(
        valid_header()[:-1] + ["element vertex 2", "property float x", "end_header"]
    ),
    "other element with data": ply_bytes(
        valid_header()[:-1] + ["element face 1", "property list uchar int vertex_indices", "end_header"]
    ),
    "compressed SuperSplat layout": ply_bytes(
        ["ply", "format binary_little_endian 1.0", "element chunk 1", "property float min_x"]
        + valid_header()[2:]
    ),
}


EXPECTED_PROBLEM = {  # case -> part of the message that names what is wrong
    "empty file": "empty",
    "not a ply": "not a PLY",
    "ply only as a prefix": "not a PLY",
    "no end_header within the cap": "within its first 64 KiB",
    "file ends inside the header": "ends inside the header",
    "ascii format": "ASCII",
    "unknown format": "binary_middle_endian",
    "unknown format version": "binary_little_endian 2.0",
    "missing format line": "'format' line is missing",
    "format line twice": "'format' line is repeated",
    "no vertex element": "no 'vertex' element",
    "missing x": "lack x;",
    "missing opacity": "lack opacity;",
    "missing scale_2": "lack scale_2;",
    "missing rot_3": "lack rot_3;",
    "missing f_dc_1": "lack f_dc_1;",
    "ordinary point cloud": "point cloud or mesh",
    "list property in vertex": "'list' property",
    "unknown property type": "unknown type 'half'",
    "integer type for a splat value": "'opacity' is an integer",
    "property line without a name": "not 'property TYPE NAME'",
    "non-numeric count": "'two' is not a whole number",
    "fractional count": "'1.5' is not a whole number",
    "negative count": "negative count",
    "count with no number": "not 'element NAME COUNT'",
    "huge declared count": "1,000,000,000,000 splats",
    "count just over the cap": "50,000,001 splats",
    "thousand-digit count": "1000-digit",
    "zero count": "declares 0 splats",
    "count larger than the data": "truncated",
    "truncated mid-row": "truncated",
    "trailing data": "7 bytes follow",
    "five f_rest properties": "its 5 f_rest_*",
    "f_rest with a gap": "its 9 f_rest_*",
    "all rows NaN": "none of its 2 splats",
    "all rotations zero": "none of its 2 splats",
    "all scales overflow": "none of its 2 splats",
    "duplicate property names": "'x' is declared twice",
    "binary junk in the header": "not text",
    "unknown header keyword": "unknown word 'vertices'",
    "property before any element": "property before any element",
    "properties after a different element": "lack x, y, z",
    "vertex element twice": "'vertex' is declared twice",
    "other element with data": "non-empty 'face'",
    "compressed SuperSplat layout": "compressed",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_are_refused(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.ply"
    path.write_bytes(MALFORMED[case])
    with pytest.raises(AvatarFileError) as caught:
        read_ply(path)
    message = str(caught.value)
    assert str(path) in message
    assert EXPECTED_PROBLEM[case] in message, message
    assert re.search(r": .+\. .+", message), message  # a problem, then what to do


def test_ascii_message_says_to_resave_as_binary(tmp_path: Path) -> None:
    path = tmp_path / "text.ply"
    path.write_bytes(MALFORMED["ascii format"])
    with pytest.raises(AvatarFileError, match="binary"):
        read_ply(path)


def test_huge_count_is_refused_before_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read although the count is over the cap")

    monkeypatch.setattr(np, "fromfile", no_reading)
    path = tmp_path / "huge.ply"
    path.write_bytes(MALFORMED["huge declared count"])
    with pytest.raises(AvatarFileError, match="more than the 50,000,000"):
        read_ply(path)
    path.write_bytes(MALFORMED["count larger than the data"])
    with pytest.raises(AvatarFileError, match="truncated"):
        read_ply(path)


def test_out_of_memory_is_a_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError

    path = tmp_path / "big.ply"
    write_ply(path, random_splats(3, 1))
    monkeypatch.setattr(np, "fromfile", out_of_memory)
    with pytest.raises(AvatarFileError, match="not enough memory"):
        read_ply(path)


@pytest.mark.parametrize("make", [lambda tmp: tmp / "absent.ply", lambda tmp: tmp])
def test_missing_file_or_folder_is_a_file_error(tmp_path: Path, make) -> None:
    with pytest.raises(AvatarFileError):
        read_ply(make(tmp_path))


# ---------------------------------------------------------------------------------------------
# Writing safely


class FailingSecondWrite:
    """A file that accepts the header, then fails on the data with `error`."""

    error: BaseException = OSError(28, "No space left on device")

    def __init__(self, path: Path, mode: str) -> None:
        self.handle = open(path, mode)
        self.writes = 0

    def __enter__(self) -> FailingSecondWrite:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes == 2:
            raise self.error
        return self.handle.write(data)


class BugOnSecondWrite(FailingSecondWrite):
    error = RuntimeError("a bug while writing")


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ply, "open", FailingSecondWrite, raising=False)
    with pytest.raises(AvatarWriteError, match="No space left"):
        write_ply(tmp_path / "out.ply", random_splats(10, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("opener", "raised"),
    [(FailingSecondWrite, AvatarWriteError), (BugOnSecondWrite, RuntimeError)],
    ids=["disk full", "bug"],
)
def test_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener: type, raised: type
) -> None:
    path = tmp_path / "out.ply"
    write_ply(path, random_splats(10, 1))
    before = path.read_bytes()
    monkeypatch.setattr(ply, "open", opener, raising=False)
    with pytest.raises(raised):
        write_ply(path, random_splats(20, 16))
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_writing_no_splats_is_refused(tmp_path: Path) -> None:
    empty = random_splats(0, 1)
    with pytest.raises(AvatarWriteError):
        write_ply(tmp_path / "empty.ply", empty)
    assert list(tmp_path.iterdir()) == []


def test_writing_into_a_missing_folder_is_a_write_error(tmp_path: Path) -> None:
    with pytest.raises(AvatarWriteError):
        write_ply(tmp_path / "missing" / "out.ply", random_splats(1, 1))
